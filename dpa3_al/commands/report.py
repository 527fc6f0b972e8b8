"""Read a run directory (runs/<name>/) and write RUN/report/ (or --out): report.md, a self-contained
report.html and the PNG plots: deviation histograms with the trust levels, accurate/candidate/failed
counts and ratios, selected and labeled counts, failures by reason, dataset growth, learning curves and
the stage decisions. Works on a running, finished or failed run; what does not exist yet is reported as
missing. Safe to run again at any time."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dpa3_al.commands import add_verb


def register(subparsers: Any) -> None:
    parser = add_verb(subparsers, "report", run, description=__doc__,
                      help="write the run report (report.md, self-contained report.html, PNG plots)")
    parser.add_argument("run", type=Path, help="run directory (holding state.json and iter-NNNNNN/)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default RUN/report)")


def summary_lines(data: Any) -> list[str]:
    """A few lines for the terminal: iterations, status, last accurate ratio, dataset size, decision."""
    state = data.state or {}
    done = [it for it in data.iterations if it.decision is not None]
    where = f", at {state.get('stage')} of iteration {state.get('iteration')}" if data.status == "running" else ""
    lines = [f"run {data.name}: {data.status}; {len(data.iterations)} iterations ({len(done)} complete){where}"]
    failures = state.get("failures") or []
    if failures:
        lines.append("failed steps: " + "; ".join(f"{f.get('key')}: {f.get('reason') or f.get('phase')}"
                                                  for f in failures[:3]) + (" ..." if len(failures) > 3 else ""))
    last = next((it for it in reversed(data.iterations) if it.selection is not None), None)
    if last is not None:
        sel = last.selection
        lines.append(f"iteration {last.index}: accurate ratio {last.ratio('accurate'):.3f} "
                     f"({last.count('accurate')} of {sel.n_frames} frames), "
                     f"{sel.n_selected} frames selected")
    grown = next((it for it in reversed(data.iterations) if it.dataset is not None), None)
    if grown is not None:
        lines.append(f"dataset: {grown.dataset.frames} frames in {len(grown.dataset.systems)} system(s) "
                     f"(after iteration {grown.index})")
    if done:
        decision = done[-1].decision
        lines.append(f"decision after iteration {done[-1].index}: {decision.action} "
                     f"({decision.reason})")
    return lines


def run(args: argparse.Namespace) -> int:
    from dpa3_al.report import load_run, write_report

    data = load_run(args.run)
    out = write_report(data, args.out if args.out is not None else args.run / "report")
    print(f"report: {out / 'report.html'} (self-contained) and {out / 'report.md'}")
    for line in summary_lines(data):
        print(f"  {line}")
    return 0
