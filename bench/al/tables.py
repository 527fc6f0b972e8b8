"""Markdown tables from bench_al.py CSVs (for docs/al-benchmark.md).

    python bench/al/tables.py bench/results/al-baseline.csv [bench/results/al-lever-train1.csv ...]

For each CSV: per arm and iteration, the committee mean's metrics (mean ± std over seeds) and
the members' force RMSE (mean, and worst/best member ratio), then arm a against arms b and c at
the last iteration (relative difference of the seed means, and the paired per-seed differences).
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

KEYS = (("f_rmse", "F RMSE (eV/Å)", 1.0), ("e_rmse", "E RMSE (meV/atom)", 1000.0), ("f_p99", "F p99 (eV/Å)", 1.0),
        ("f_p999", "F p99.9 (eV/Å)", 1.0), ("f_max", "F max (eV/Å)", 1.0))


def load(path: Path) -> list[dict]:
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("seed", "iteration", "labels"):
            r[k] = int(r[k])
        for k, _, _ in KEYS:
            r[k] = float(r[k])
    return rows


def table(rows: list[dict]) -> str:
    head = "| arm | iteration | labels | seeds | " + " | ".join(t for _, t, _ in KEYS) + " | members' F RMSE | worst/best member |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["arm"], r["iteration"])].append(r)
    for (arm, it), sel in sorted(groups.items()):
        mean = [r for r in sel if r["member"] == "mean"]
        mem = [r for r in sel if r["member"] != "mean"]
        labels = sorted({r["labels"] for r in mean})
        lab = str(labels[0]) if len(labels) == 1 else f"{labels[0]}-{labels[-1]}"
        cells = []
        for k, _, s in KEYS:
            v = np.array([r[k] for r in mean]) * s
            cells.append(f"{v.mean():.3g} ± {v.std():.2g}")
        ratios = []
        for seed in {r["seed"] for r in mem}:
            f = [r["f_rmse"] for r in mem if r["seed"] == seed]
            ratios.append(max(f) / min(f))
        lines.append(f"| {arm} | {it} | {lab} | {len(mean)} | " + " | ".join(cells)
                     + f" | {np.mean([r['f_rmse'] for r in mem]):.3g} | {np.mean(ratios):.2f} |")
    return "\n".join(lines)


PAIRS = (("a", "b"), ("a", "c"), ("o", "b"), ("o", "a"), ("v", "b"), ("v", "a"),   # (arm, against); o, v: bench/al/oracle.py
         ("w", "b"), ("w", "a"), ("w", "d"), ("d", "b"), ("d", "a"),                # w, d, s: bench/al/combine.py
         ("s", "b"), ("s", "a"))


def versus(rows: list[dict]) -> str:
    """Arm a (and the arms o, v, w, d) against the others at the last iteration (:data:`PAIRS`):
    (x - y) / y of the seed means, and per seed."""
    last = max(r["iteration"] for r in rows)
    mean = {(r["arm"], r["seed"]): r for r in rows if r["member"] == "mean" and r["iteration"] == last}
    out = [f"arm a (and o, v, w, d) against the others at the last iteration ({last}); negative = the first better:", ""]
    for arm, other in PAIRS:
        seeds = sorted(s for (x, s) in mean if x == arm and (other, s) in mean)
        if not seeds:
            continue
        parts = []
        for k, t, _ in KEYS:
            a = np.array([mean[(arm, s)][k] for s in seeds])
            o = np.array([mean[(other, s)][k] for s in seeds])
            rel = (a - o) / o
            parts.append(f"{t.split(' (')[0]} {100 * (a.mean() / o.mean() - 1):+.0f} % "
                         f"(per seed {', '.join(f'{100 * x:+.0f}' for x in rel)})")
        out.append(f"- {arm} vs {other} ({len(seeds)} seeds): " + "; ".join(parts))
    return "\n".join(out)


def main() -> int:
    for p in sys.argv[1:]:
        rows = load(Path(p))
        print(f"### {Path(p).stem}\n")
        print(table(rows))
        print()
        print(versus(rows))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
