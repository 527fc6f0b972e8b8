"""Judge a finished benchmark run's iterations again with today's calibration rule, on the pairs
and explored deviations the run recorded (no training, no labels): what would the decide step
say with another estimator or confidence? The frames a run labeled do not depend on the verdict
while the select step's levels leave every explored frame a candidate (accurate ratio 0 at
selection, as in the runs below), so the re-judged verdict is the one a run would give. A run
with fixed levels (no target.json) is judged as if it had had the target: its labels were chosen
in the fixed band, not in the one the target would have set.

    python bench/al/rejudge.py RUN_ROOT F_RMSE CSV [CONFIDENCE ...]
    python bench/al/rejudge.py bench/out/al/runs/target-recal 0.1 bench/results/al-target-recal.csv 0.5 0.9

RUN_ROOT holds the arm-a runs (a-s1, a-s2, ...); CSV is bench_al.py's output with the test errors.
Prints per seed and iteration: the committee mean's test force RMSE, the estimate from the
iteration's own labels (pairs weighted by their selection odds) and the verdict. Units: eV/Å.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from dpa3_al.calibration import CalibrationRecord, TargetConfig, TargetLevels, derive_levels, recalibrate
    from dpa3_al.explore.frames import read_frames_table
    from dpa3_al.explore.tasks import task_dirs
    from dpa3_al.select import SelectionReport

    root, f_rmse, table = Path(argv[0]), float(argv[1]), Path(argv[2])
    confidences = [float(c) for c in argv[3:]] or [0.9]
    tests = {(int(r["seed"]), int(r["iteration"])): float(r["f_rmse"])
             for r in csv.DictReader(table.open()) if r["member"] == "mean" and r["arm"] == "a"}
    print(f"target {f_rmse:g} eV/Å, share 0.9; seed, iteration, confidence: test F RMSE, estimate, accurate ratio")
    for run in sorted(p for p in root.glob("a-s*") if p.is_dir()):
        seed = int(run.name.split("-s")[1])
        for it in range(100):
            folder = run / f"iter-{it:06d}"
            if not (folder / "decide").is_dir():
                break
            report, selected = SelectionReport.read(folder / "select"), TargetLevels.read(folder / "select")
            records = {r.get("frame"): r for r in report.selected}      # each label's selection record
            if selected is None:        # a run with fixed levels: the explored deviations from its frames
                selected = derive_levels(TargetConfig(f_rmse=f_rmse), [], report.levels.f_lo, report.levels.f_hi,
                                         read_frames_table(task_dirs(folder / "explore")).column("max_devi_f"))
            pairs = [dataclasses.replace(p, weight=report.selection_odds(records.get(p.frame, {})))
                     for p in CalibrationRecord.read(folder / "decide").iteration(it)]
            for conf in confidences:
                fresh = recalibrate(TargetConfig(f_rmse=f_rmse, confidence=conf), selected, pairs, it)
                if fresh is None:
                    print(f"  seed {seed} it {it} conf {conf:g}: nothing to recalibrate")
                    continue
                ratio = fresh.accurate_ratio(fresh.f_lo)
                print(f"  seed {seed} it {it} conf {conf:g}: test {tests.get((seed, it), float('nan')):.4f}, "
                      f"estimate {fresh.estimated_f_rmse:.4f}, accurate {ratio:.3f}, "
                      f"{'converged' if ratio >= 0.9 else 'not converged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
