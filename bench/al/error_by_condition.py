"""Where on the test set do a committee's force errors sit? Per start cell and temperature.

For each arm and seed of a finished benchmark tag, the committee mean of iteration IT on the
test set, split by the conditions the test trajectories ran at (bench_al.py writes them per cell
in the order 300, 800, 1300 K, TEST_TRAJ trajectories of 10 frames each): force RMSE and p99 of
the per-atom force error (eV/Å) per (cell, temperature), and how the test set's top 1 % of
per-atom errors (above the overall p99) split over the temperatures.

    python bench/al/error_by_condition.py TAG IT [ARMS] [SEEDS] [WORK]
    python bench/al/error_by_condition.py lever-steps1600 3 a,b,o 1,2,3
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from al import system  # noqa: E402
from al.evaluate import predict_batched  # noqa: E402

TEMPS = (300, 800, 1300)


def conditions(frames) -> tuple[list[str], list[int]]:
    """(cell formula, temperature) of each test frame, from the order bench_al.py writes them in."""
    per_cell: dict[str, int] = {}
    cells, temps = [], []
    for fr in frames:
        f = fr.atoms.get_chemical_formula()
        per_cell[f] = per_cell.get(f, 0) + 1
        cells.append(f)
    n_per_temp = {f: n // len(TEMPS) for f, n in per_cell.items()}
    seen: dict[str, int] = {}
    for f in cells:
        temps.append(TEMPS[seen.get(f, 0) // n_per_temp[f]])
        seen[f] = seen.get(f, 0) + 1
    return cells, temps


def main(argv: list[str]) -> int:
    import torch

    torch.set_num_threads(1)
    if len(argv) < 2:
        sys.exit(__doc__)
    tag, it = argv[0], int(argv[1])
    arms = argv[2].split(",") if len(argv) > 2 else ["a", "b"]
    seeds = [int(s) for s in argv[3].split(",")] if len(argv) > 3 else [1, 2, 3]
    work = Path(argv[4]) if len(argv) > 4 else Path("bench/out/al")
    test_dir = work / "data" / "test"
    frames = system.read_npy(test_dir)
    cells, temps = conditions(frames)
    atom_t = np.concatenate([[t] * len(fr.atoms) for t, fr in zip(temps, frames)])
    print(f"tag {tag}, iteration {it}: committee-mean force RMSE / p99 (eV/Å) per cell@K; "
          f"top 1 % of per-atom errors by temperature")
    for seed in seeds:
        for arm in arms:
            models = sorted((work / "runs" / tag / f"{arm}-s{seed}" / f"iter-{it:06d}" / "train").glob("member-*/model.pt"))
            if not models:
                continue
            preds = [predict_batched(p, test_dir, frames) for p in models]
            err = [np.mean([f[k] for _, f in preds], axis=0) - frames[k].forces for k in range(len(frames))]
            cols = []
            for t in TEMPS:
                for c in sorted(set(cells)):
                    df = np.concatenate([e for e, cc, tt in zip(err, cells, temps) if cc == c and tt == t])
                    cols.append(f"{c}@{t}: {np.sqrt(np.mean(df ** 2)):.3f}/"
                                f"{np.percentile(np.linalg.norm(df, axis=1), 99):.2f}")
            df = np.concatenate(err)
            per_atom = np.linalg.norm(df, axis=1)
            p99 = np.percentile(per_atom, 99)
            top = {t: int(((per_atom > p99) & (atom_t == t)).sum()) for t in TEMPS}
            print(f"{arm}-s{seed}: all {np.sqrt(np.mean(df ** 2)):.3f}/{p99:.2f}; top 1 % by K {top}; "
                  + "; ".join(cols), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
