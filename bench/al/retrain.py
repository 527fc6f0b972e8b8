"""What are an arm's labels worth when trained fully? Train a fresh committee from scratch on the
data an arm had at one label count, much longer than one loop iteration, and test it.

In the loop the error at k labels also carries the training history (iterations continue their
previous models; the error follows the cumulative optimizer steps, docs/al-benchmark.md). Here
every dataset gets the same long training from the same initial weights, so the test error
measures the labels alone: arm a's deviation-selected frames against arm b's random frames of
the same exploration and arm c's random reference-MD frames.

    python bench/al/retrain.py TAG ARMS SEEDS ITERATION STEPS MEMBERS OUT [--c-tag TAG_C]
    python bench/al/retrain.py lever-steps3200 a,b 1,2,3 3 12800 2 bench/results/al-retrain-3200 --c-tag lever-steps1600

TAG: a bench/bench_al.py tag under bench/out/al/runs (arms a, b, o, v: loop runs; c: its
``c-sN/iter-K/data``, taken from --c-tag when TAG has no arm c: arm c's frames do not depend on
the training). ITERATION k: the data of the loop's iteration k (initial data + the labels of
iterations 0..k-1). Training: the run's own train section (model, learning rate, loss), from
scratch, STEPS steps, MEMBERS members as one stack in one process, one thread (training.seed of
the run, member i seed + i: the same initial weights for every arm). Resumable: finished
trainings are kept. Output: OUT.csv (arm, seed, iteration, labels, member, metrics of
bench/al/evaluate.py; member ``mean`` is the committee mean) and OUT.txt (command, table, a vs b
and a vs c per seed).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from al import system  # noqa: E402
from al.evaluate import METRICS, evaluate_committee  # noqa: E402
from bench_al import count_frames, write_csv  # noqa: E402

RUNS = Path("bench/out/al/runs")
CLI = Path(sys.executable).parent / "dpa3-al"


def data_of(tag: str, arm: str, seed: int, iteration: int, c_tag: str | None) -> tuple[list[Path], dict]:
    """The data folders arm ``arm`` trained on at ``iteration`` and its run config."""
    if arm == "c":
        tag_c = tag if (RUNS / tag / f"c-s{seed}").is_dir() else c_tag
        if tag_c is None:
            raise SystemExit(f"{RUNS / tag} has no arm c: give --c-tag")
        cfg = yaml.safe_load((RUNS / tag / f"a-s{seed}.yaml").read_text())
        extra = [RUNS / tag_c / f"c-s{seed}" / f"iter-{iteration:06d}" / "data"] if iteration > 0 else []
        return [Path(cfg["init_data"][0]), *extra], cfg
    cfg = yaml.safe_load((RUNS / tag / f"{arm}-s{seed}.yaml").read_text())
    extra = [RUNS / tag / f"{arm}-s{seed}" / f"iter-{iteration - 1:06d}" / "dataset"] if iteration > 0 else []
    return [Path(cfg["init_data"][0]), *extra], cfg


def count(data: list[Path]) -> int:
    return sum(count_frames(d) for d in data)


def retrain(tag: str, arm: str, seed: int, iteration: int, steps: int, members: int, c_tag: str | None,
            work: Path) -> tuple[list[Path], int]:
    data, run_cfg = data_of(tag, arm, seed, iteration, c_tag)
    wd = work / f"{arm}-s{seed}-it{iteration}"
    models = [wd / f"model-{i}.pt" for i in range(members)] if members > 1 else [wd / "model.pt"]
    if all(m.is_file() for m in models) and (wd / ("committee_summary.json" if members > 1 else
                                                   "train_summary.json")).is_file():
        return models, count(data)
    train = json.loads(json.dumps(run_cfg["train"]))
    train.pop("init_model", None)
    train["training"].update({"numb_steps": steps, "numb_models": members, "stack": members, "parallel": 1,
                              "threads": 1, "progress": False})
    train.setdefault("data", {})["systems"] = [str(d.resolve()) for d in data]
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "train.yaml").write_text(yaml.safe_dump(train, sort_keys=False))
    restart = ["--restart"] if any(wd.glob("**/checkpoint.pt")) else []
    t0 = time.time()
    with open(wd / "process.log", "a") as log:
        rc = subprocess.run([str(CLI), "-q", "train", str(wd / "train.yaml"), "-o", str(wd), *restart],
                            stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"training failed in {wd} (see {wd / 'process.log'})")
    print(f"{arm}-s{seed} iteration {iteration}: {count(data)} labels, {steps} steps in {time.time() - t0:.0f} s",
          flush=True)
    return models, count(data)


def main(argv: list[str]) -> int:
    c_tag = None
    if "--c-tag" in argv:
        i = argv.index("--c-tag")
        c_tag, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    if len(argv) != 7:
        sys.exit(__doc__)
    tag, arms, seeds = argv[0], argv[1].split(","), [int(s) for s in argv[2].split(",")]
    iteration, steps, members, out = int(argv[3]), int(argv[4]), int(argv[5]), Path(argv[6])
    work = Path("bench/out/al/retrain") / f"{tag}-steps{steps}-m{members}"
    test = system.read_npy(Path("bench/out/al/data/test"))
    rows = []
    for seed in seeds:
        for arm in arms:
            models, labels = retrain(tag, arm, seed, iteration, steps, members, c_tag, work)
            for member, m in evaluate_committee(models, test).items():
                rows.append({"arm": arm, "seed": seed, "iteration": iteration, "labels": labels, "member": member,
                             **{k: m[k] for k in METRICS}})
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out.with_suffix(".csv"))
    lines = [f"# python bench/al/retrain.py {shlex.join(sys.argv[1:])}",
             f"# {time.strftime('%Y-%m-%dT%H:%M')}, load {' '.join(open('/proc/loadavg').read().split()[:3])}",
             "# committee mean on the test set (eV/Å; E meV/atom)",
             "arm seed labels  f_rmse  f_p99  f_p999  f_max  e_rmse"]
    mean = {(r["arm"], r["seed"]): r for r in rows if r["member"] == "mean"}
    for (arm, seed), r in sorted(mean.items()):
        lines.append(f"{arm:>3} {seed:>4} {r['labels']:>6}  {r['f_rmse']:.4f}  {r['f_p99']:.3f}  {r['f_p999']:.3f}  "
                     f"{r['f_max']:.3f}  {1000 * r['e_rmse']:.2f}")
    for other in [a for a in ("b", "c") if a in arms and "a" in arms]:
        lines.append(f"# a vs {other}, per seed (%): f_rmse, f_p99, f_p999, f_max, e_rmse")
        for seed in seeds:
            a, o = mean[("a", seed)], mean[(other, seed)]
            lines.append(f"  seed {seed}: " + ", ".join(f"{100 * (a[k] / o[k] - 1):+.0f}" for k in
                                                         ("f_rmse", "f_p99", "f_p999", "f_max", "e_rmse")))
        for k in ("f_rmse", "f_p99"):
            d = [100 * (mean[("a", s)][k] / mean[(other, s)][k] - 1) for s in seeds]
            lines.append(f"  {k}: mean {np.mean(d):+.1f} %, std {np.std(d, ddof=1) if len(d) > 1 else 0:.1f} %")
    text = "\n".join(lines) + "\n"
    out.with_suffix(".txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
