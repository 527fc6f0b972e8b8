"""Where a loop's wall time went: the driver log's step start/finish lines as intervals per step
name, and the share of the run during which at least one step of a kind was running.

``python bench/al/timeshare.py RUN_DIR...`` prints, per run, the wall time from the first step's
start to the last step's end, and for train, run-explore, run-label and the rest the time some
step of that kind ran (a union of intervals, so two members trained side by side count once).
A run continued with ``dpa3-al resume`` counts from its first step to its last, less the time it was
stopped: from the driver log's last INFO line before each "Restart workflow" to that line.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO Step (\S+) with item (\S+) (starts|finishes) "
                  r"in process (\d+)")
KINDS = ("train", "final-train", "run-explore", "run-label")


def _time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def stopped(driver_log: Path) -> list[tuple[float, float]]:
    """[(last INFO line before a restart, the restart)] seconds since the epoch: when a resumed run was not running."""
    gaps, last = [], None
    for line in driver_log.read_text(errors="replace").splitlines():
        m = STAMP.match(line)
        if not m:
            continue
        t = _time(m.group(1))
        if "Restart workflow" in line and last is not None:
            gaps.append((last, t))
        elif " INFO " in line:       # the restart's own warnings come just before it
            last = t
    return gaps


def intervals(driver_log: Path) -> dict[str, list[tuple[float, float]]]:
    """{step name: [(start, end) seconds since the epoch]} from a run's driver.log (steps killed by a stop
    never finish and are left out)."""
    open_: dict[tuple[str, str, str], float] = {}
    out: dict[str, list[tuple[float, float]]] = {}
    for line in driver_log.read_text(errors="replace").splitlines():
        m = LINE.match(line)
        if not m:
            continue
        t = _time(m.group(1))
        key = (m.group(2), m.group(3), m.group(5))
        if m.group(4) == "starts":
            open_[key] = t
        elif key in open_:
            out.setdefault(m.group(2), []).append((open_.pop(key), t))
    return out


def union_length(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, -float("inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def time_shares(run: Path) -> dict[str, float]:
    """{'wall_s', 'train_s', 'run-explore_s', 'run-label_s', 'other_s'} of one run folder, and 'stopped_s'
    (left out of wall_s) when it was resumed."""
    spans = intervals(run / "driver.log")
    every = [s for v in spans.values() for s in v]
    if not every:
        return {"wall_s": 0.0}
    gap = sum(b - a for a, b in stopped(run / "driver.log"))
    wall = max(b for _, b in every) - min(a for a, _ in every) - gap
    out = {"wall_s": wall}
    for kind in KINDS:
        out[f"{kind}_s"] = union_length(spans.get(kind, []))
    out["other_s"] = wall - union_length([s for k in KINDS for s in spans.get(k, [])])
    if gap:
        out["stopped_s"] = gap
    return out


def main(argv: list[str]) -> int:
    for run in map(Path, argv):
        s = time_shares(run)
        wall, gap = s.pop("wall_s"), s.pop("stopped_s", 0.0)
        parts = ", ".join(f"{k[:-2]} {v:.0f} s ({100 * v / wall:.0f}%)" for k, v in s.items() if v) if wall else "-"
        print(f"{run}: {wall:.0f} s: {parts}" + (f" (and {gap:.0f} s stopped, not counted)" if gap else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
