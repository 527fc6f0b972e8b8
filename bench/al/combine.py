"""One comparison from arms that ran under different tags: rows of bench_al.py CSVs (or of its
cached ``*.result.json`` runs), arms renamed, written as one CSV and one learning-curve PNG.

    python bench/al/combine.py OUT SOURCE:ARM=NEW[@SEEDS] [SOURCE:ARM=NEW[@SEEDS] ...]
    python bench/al/combine.py bench/results/al-lever-diversity \\
        bench/results/al-steps1600.csv:a=a bench/results/al-steps1600.csv:b=b \\
        bench/out/al/runs/lever-divw1600:a=w bench/out/al/runs/lever-div1600:a=d

SOURCE: a CSV written by bench_al.py, or a run folder ``bench/out/al/runs/TAG`` (its finished
``ARM-sSEED.result.json``); ``@1,3`` keeps those seeds only. Arms that share iteration 0 (same
seeds and steps) compare at equal labels. Writes OUT.csv and OUT.png (bench_al.py's plot);
``bench/al/tables.py OUT.csv`` then prints the tables and the paired per-seed differences.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_al  # noqa: E402
from al import tables  # noqa: E402

NAMES = {"w": "w: loop, deviation-weighted farthest-point sampling", "d": "d: loop, farthest-point sampling",
         "s": "s: loop, members trained in stacks of 2 (train.training.stack)",
         "A": "A: loop, twice the labels per iteration", "B": "B: random among explored, twice the labels per iteration",
         "f": "f: loop, flatter draw: odds ~ max_devi_f (select.draw_power 1)",
         "R": "R: the loop rerun on another day (same config and seed)",
         "S": "S: random among explored, rerun on another day",
         "p": "p: loop before 8d568b8 (its draws repeated across iterations)",
         "r": "r: random among explored before 8d568b8 (same positions every iteration)"}


def rows_of(source: Path, arm: str) -> list[dict]:
    if source.suffix == ".csv":
        return [r for r in tables.load(source) if r["arm"] == arm]
    return [r for f in sorted(source.glob(f"{arm}-s*.result.json")) for r in json.loads(f.read_text())["rows"]]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    out, specs = Path(argv[0]), argv[1:]
    rows = []
    for spec in specs:
        source, _, arms = spec.rpartition(":")
        arms, _, seeds = arms.partition("@")
        old, _, new = arms.partition("=")
        got = rows_of(Path(source), old)
        if seeds:
            got = [r for r in got if str(r["seed"]) in seeds.split(",")]
        if not got:
            raise SystemExit(f"{spec}: no rows of arm {old!r}{' seeds ' + seeds if seeds else ''} in {source}")
        rows += [{**r, "arm": new or old} for r in got]
    bench_al.ARM_NAMES.update(NAMES)
    out.parent.mkdir(parents=True, exist_ok=True)
    bench_al.write_csv(rows, out.with_suffix(".csv"))
    bench_al.plot(rows, out.with_suffix(".png"), f"{out.name}: arms {', '.join(sorted({r['arm'] for r in rows}))}")
    print(f"{len(rows)} rows -> {out.with_suffix('.csv')}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
