"""Markdown tables from bench_al.py CSVs (for docs/al-benchmark.md).

    python bench/al/tables.py bench/results/al-baseline.csv [bench/results/al-lever-train1.csv ...]
    python bench/al/tables.py --iteration 2 bench/results/al-lever-steps6400.csv    # compare at iteration 2

For each CSV: per arm and iteration, the committee mean's metrics (mean ± std over seeds) and
the members' force RMSE (mean, and worst/best member ratio), then arm a against arms b and c at
the last iteration (relative difference of the seed means, and the paired per-seed differences),
and at equal labels where the arms labeled different counts (interpolated log-log; "nan": outside
the other curve's range).
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
         ("s", "b"), ("s", "a"),
         ("a", "B"), ("b", "B"), ("a", "A"),                                            # A, B: twice the labels per iteration
         ("a", "p"), ("b", "r"), ("p", "r"),                                           # p, r: before 8d568b8
         ("f", "b"), ("f", "a"),                                                        # f: select.draw_power 1
         ("R", "a"), ("R", "S"), ("S", "b"))                                            # R, S: a, b rerun another day


def versus(rows: list[dict]) -> str:
    """Arm a (and the arms o, v, w, d) against the others at the last iteration (:data:`PAIRS`):
    (x - y) / y of the seed means, and per seed."""
    last = max(r["iteration"] for r in rows)
    mean = {(r["arm"], r["seed"]): r for r in rows if r["member"] == "mean" and r["iteration"] == last}
    out = [f"arm a (and o, v, w, d, f, R) against the others at the last iteration ({last}); negative = the first better:", ""]
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


def _curve(rows: list[dict], arm: str, seed: int, key: str) -> list[tuple[int, float]]:
    """(labels, committee-mean metric) of one arm and seed, by label count."""
    return sorted((r["labels"], r[key]) for r in rows if r["arm"] == arm and r["seed"] == seed and r["member"] == "mean")


def at_labels(curve: list[tuple[int, float]], n: float) -> float:
    """The metric at ``n`` labels, interpolated log-log between the curve's points (NaN outside them)."""
    for (n0, y0), (n1, y1) in zip(curve, curve[1:]):
        if n0 <= n <= n1 and n1 > n0:
            t = np.log(n / n0) / np.log(n1 / n0)
            return float(np.exp((1 - t) * np.log(y0) + t * np.log(y1)))
    return next((y for m, y in curve if m == n), float("nan"))


def labels_for(curve: list[tuple[int, float]], y: float) -> float:
    """The first label count at which the curve reaches ``y`` (log-log between points; NaN if never)."""
    for (n0, y0), (n1, y1) in zip(curve, curve[1:]):
        if y0 > y >= y1 and y1 < y0:
            t = np.log(y / y0) / np.log(y1 / y0)
            return float(np.exp((1 - t) * np.log(n0) + t * np.log(n1)))
    return float(curve[0][0]) if curve and curve[0][1] <= y else float("nan")


def equal_labels(rows: list[dict]) -> str:
    """Arm a against the others where they labeled different counts (a trust band that stops labeling
    frames the committee is sure of): the other arm's error interpolated at a's final label count,
    and the labels each arm needed to reach the other's final error."""
    out = ["arm a against the others at a's final label count (the other interpolated log-log between its "
           "iterations) and the labels each needs for the other's final error. The interpolated value lies "
           "between two of the other arm's trainings while a's final value had all of its own, so where a "
           "labeled fewer frames these figures favour a; the last-iteration comparison above is at equal "
           "training:", ""]
    for arm, other in PAIRS:
        seeds = sorted({r["seed"] for r in rows if r["arm"] == arm} & {r["seed"] for r in rows if r["arm"] == other})
        if not seeds:
            continue
        parts = []
        for k in ("f_rmse", "f_p99"):
            cells = []
            for seed in seeds:
                a, o = _curve(rows, arm, seed, k), _curve(rows, other, seed, k)
                n_a, n_o = a[-1][0], o[-1][0]
                cells.append(f"{a[-1][0]} labels {100 * (a[-1][1] / at_labels(o, n_a) - 1):+.0f} %, "
                             f"{arm} reaches {other}'s {n_o}-label value at {labels_for(a, o[-1][1]):.0f}, "
                             f"{other} reaches {arm}'s {n_a}-label value at {labels_for(o, a[-1][1]):.0f}")
            parts.append(f"{k}: " + "; ".join(f"seed {s}: {c}" for s, c in zip(seeds, cells)))
        out.append(f"- {arm} vs {other}: " + " | ".join(parts))
    return "\n".join(out)


def main() -> int:
    args = sys.argv[1:]
    upto = None
    if "--iteration" in args:           # compare at this iteration (runs with more iterations are cut there)
        i = args.index("--iteration")
        upto, args = int(args[i + 1]), args[:i] + args[i + 2:]
    for p in args:
        rows = [r for r in load(Path(p)) if upto is None or r["iteration"] <= upto]
        print(f"### {Path(p).stem}\n")
        print(table(rows))
        print()
        print(versus(rows))
        print()
        print(equal_labels(rows))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
