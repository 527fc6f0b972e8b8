"""Read every DIR/task-*/ (model_devi.csv, traj.extxyz), classify the recorded frames by the trust
levels into accurate / candidate / failed, filter the candidates and cap them. Writes OUT/selection.json
(counts, levels, filters, what was selected and why) and OUT/candidates.extxyz (the frames to label,
with task/step provenance)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dpa3_al.commands import add_device_option, add_head_option, add_verb


def register(subparsers: Any) -> None:
    parser = add_verb(subparsers, "select", run, description=__doc__,
                      help="pick the frames to label from explored MD tasks")
    parser.add_argument("dir", type=Path, help="exploration folder holding task-*/ folders")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file: a run config with a `select:` section, or the section itself "
                        "(default: built-in defaults)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default DIR/select)")
    parser.add_argument("--models", nargs="+", type=Path, default=None, metavar="MODEL",
                        help="checkpoints; model 0 gives the descriptors of strategy 'diversity'")
    add_head_option(parser, "head of a multi-task checkpoint")
    add_device_option(parser)


def _descriptor_fn(args: argparse.Namespace) -> Any:
    if not args.models:
        return None
    from dpa3_al.model import DPA3Calculator

    calc = DPA3Calculator(str(args.models[0]), head=args.head, device=args.device)
    return calc.get_descriptor


def run(args: argparse.Namespace) -> int:
    from dpa3_al.commands.explore import load_section
    from dpa3_al.explore.tasks import task_dirs
    from dpa3_al.common.errors import InputError
    from dpa3_al.select import SelectConfig, select

    cfg = load_section(args.config, "select", SelectConfig) if args.config else SelectConfig()
    dirs = task_dirs(args.dir)
    if not dirs:
        raise InputError(f"{args.dir} holds no task-*/ folders with task.json; run `dpa3-al explore` first")
    out = args.out or args.dir / "select"
    report = select(dirs, cfg, out, descriptor_fn=_descriptor_fn(args)).to_dict()
    lv = report["levels"]
    print(f"{report['n_frames']} frames from {len(dirs)} tasks; levels f_lo {lv['f_lo']:.4g} f_hi {lv['f_hi']:.4g} "
          f"eV/Å{' (adaptive)' if lv['adaptive'] else ''}")
    print(f"  {'group':<20} {'accurate':>9} {'candidate':>10} {'failed':>8}")
    for group, c in report["per_group"].items():
        print(f"  {group:<20} {c['accurate']:>9} {c['candidate']:>10} {c['failed']:>8}")
    counts, ratios = report["counts"], report["ratios"]
    print(f"  {'total':<20} {counts['accurate']:>9} {counts['candidate']:>10} {counts['failed']:>8}"
          f"   (accurate ratio {ratios['accurate']:.3f}; {counts['failed_nan']} NaN)")
    removed = ", ".join(f"{k} {v['count']}" for k, v in report["filters"].items() if v["count"])
    print(f"filters removed: {removed or 'nothing'}")
    how = report["strategy"] + (f" by {report['draw_by']}" if report["strategy"] != "random" else "")
    if report["strategy"] == "weighted":
        how += f"^{report.get('draw_power', 2.0):g}"
    print(f"selected {report['n_selected']} frames ({how}, max_select {report['max_select']}) "
          f"-> {out}/candidates.extxyz; details in {out}/selection.json")
    return 0
