"""Test every finished iteration's committee of one benchmark loop run, finished or not, as
bench_al.py does (rows of its CSV). For a run stopped early (e.g. in its final training, which
the benchmark does not evaluate) or to read a run before its arm has finished.

    python bench/al/evaluate_run.py OUT.csv RUN_DIR [RUN_DIR ...]
    python bench/al/evaluate_run.py /tmp/s1.csv bench/out/al/runs/lever-steps6400-i3/a-s1

RUN_DIR: bench/out/al/runs/TAG/ARM-sSEED. An iteration counts when its train folder holds every
member's model.pt (the committee size of the run's config). Labels at iteration k: the initial
frames + the frames of iter-(k-1)/dataset. Arm c (random reference-MD frames, bench_al.py's
``run_random_md``): its iteration 0 is arm a's committee (not in its folder, not evaluated here),
its config is arm a's, and its labels at iteration k are the initial frames + iter-k/data.
Test set: bench/out/al/data/test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from al import system  # noqa: E402
from al.evaluate import METRICS, evaluate_committee  # noqa: E402
from bench_al import count_frames, write_csv  # noqa: E402


def evaluate_run(run: Path, test) -> list[dict]:
    arm, seed = run.name.split("-s")
    cfg = yaml.safe_load((run.parent / f"{'a' if arm == 'c' else arm}-s{seed}.yaml").read_text())
    n = cfg["train"]["training"]["numb_models"]
    init = count_frames(Path(cfg["init_data"][0]))
    rows = []
    for k in range(1 if arm == "c" else 0, 1000):
        models = sorted((run / f"iter-{k:06d}" / "train").glob("member-*/model.pt"))
        if len(models) < n:
            break
        if arm == "c":
            labels = init + count_frames(run / f"iter-{k:06d}" / "data")
        else:
            labels = init + (count_frames(run / f"iter-{k - 1:06d}" / "dataset") if k > 0 else 0)
        for member, m in evaluate_committee(models, test).items():
            rows.append({"arm": arm, "seed": int(seed), "iteration": k, "labels": labels, "member": member,
                         **{key: m[key] for key in METRICS}})
        print(f"{run.name} iteration {k}: {labels} labels, committee F RMSE "
              f"{[r for r in rows if r['member'] == 'mean'][-1]['f_rmse']:.4f} eV/Å", flush=True)
    return rows


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.exit(__doc__)
    test = system.read_npy(Path("bench/out/al/data/test"))
    rows = [r for run in argv[1:] for r in evaluate_run(Path(run), test)]
    write_csv(rows, Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
