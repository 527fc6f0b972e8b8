"""How well does the calibrated estimate k x RMS(max_devi_f) track the test error? For every loop
iteration >= 1 of finished benchmark runs: the estimate from that iteration's own labels (what
the decide step judges on), with and without weighting each label by the inverse of its
selection odds, at several confidences, divided by the committee mean's test force RMSE.

    python bench/al/calibration_check.py TAG:CSV [TAG:CSV ...]
    python bench/al/calibration_check.py lever-steps1600:bench/results/al-steps1600.csv \\
        target-recal:bench/results/al-target-recal.csv

TAG: a run folder under bench/out/al/runs (arms a-s*, b-s*); CSV: bench_al.py's output for it.
Prints one line per arm, weighting and confidence: median, min and max of estimate / test.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    from dpa3_al.calibration import CalibrationRecord, fit
    from dpa3_al.explore.frames import read_frames_table
    from dpa3_al.explore.tasks import task_dirs
    from dpa3_al.select import SelectionReport

    ratios: dict[tuple[str, str, float], list[float]] = {}
    for spec in argv:
        tag, table = spec.split(":", 1)
        tests = {(r["arm"], int(r["seed"]), int(r["iteration"])): float(r["f_rmse"])
                 for r in csv.DictReader(open(table)) if r["member"] == "mean"}
        for (arm, seed, it), test in sorted(tests.items()):
            folder = Path("bench/out/al/runs") / tag / f"{arm}-s{seed}" / f"iter-{it:06d}"
            if it == 0 or arm not in ("a", "b") or not (folder / "decide" / "calibration.json").is_file():
                continue
            report = SelectionReport.read(folder / "select")
            records = {r.get("frame"): r for r in report.selected}      # each label's selection record
            pairs = CalibrationRecord.read(folder / "decide").iteration(it)
            weighted = [dataclasses.replace(p, weight=report.selection_odds(records.get(p.frame, {}))) for p in pairs]
            plain = [dataclasses.replace(p, weight=1.0) for p in pairs]
            rms = float(np.sqrt(np.nanmean(read_frames_table(task_dirs(folder / "explore")).column("max_devi_f") ** 2)))
            for name, ps in (("weighted", weighted), ("plain", plain)):
                for conf in (0.5, 0.9):
                    ratios.setdefault((arm, name, conf), []).append(fit(ps, conf).k * rms / test)
    print("arm  pairs     confidence  n   estimate/test: median  min   max")
    for (arm, name, conf), values in sorted(ratios.items()):
        v = np.array(values)
        print(f"{arm:4} {name:9} {conf:6.1f} {len(v):6d}   {np.median(v):12.2f} {v.min():6.2f} {v.max():5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
