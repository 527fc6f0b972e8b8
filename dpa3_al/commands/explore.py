"""Expand the task groups of one stage of the `explore:` section of CONFIG into MD tasks and run them
with the committee of MODELS. Each task gets DIR/task-NNNNNN/ with task.json, traj.extxyz, model_devi.csv,
md.log and status.json; DIR/explore.json summarizes. Finished tasks are skipped, so re-running the same
command resumes."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from dpa3_al.commands import add_device_option, add_head_option, add_verb

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = add_verb(subparsers, "explore", run, description=__doc__,
                      help="run the MD tasks of one exploration stage with a model committee")
    parser.add_argument("config", type=Path, help="YAML file: a run config with an `explore:` section, "
                        "or the section itself")
    parser.add_argument("--models", nargs="+", type=Path, required=True, metavar="MODEL",
                        help="committee checkpoints (ours or deepmd-kit *.pt); at least 2 for deviations")
    parser.add_argument("--out", type=Path, required=True, help="exploration folder (created)")
    parser.add_argument("--stage", type=int, default=0, help="stage index (default 0)")
    parser.add_argument("--iteration", type=int, default=0,
                        help="iteration number: seeds configuration sampling and MD (default 0)")
    add_head_option(parser, "head of multi-task checkpoints")
    add_device_option(parser)
    parser.add_argument("--drive", default=None, help="override explore.drive: a model index or 'mean'")


def load_section(path: Path, section: str, cls: type) -> Any:
    """Read ``cls`` from YAML ``path``: its ``section`` key when present, else the whole file."""
    from dpa3_al.common.yamlio import read_section

    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    return read_section(path, section, cls)


def _drive(value: str | None, default: int | str) -> int | str:
    from dpa3_al.common.typed_config import ConfigError

    if value is None:
        return default
    if value == "mean":
        return "mean"
    if value.isdigit():
        return int(value)
    raise ConfigError("--drive", f"{value!r} must be a model index (0, 1, ...) or 'mean'")


def run(args: argparse.Namespace) -> int:
    from dpa3_al.explore.config import ExploreConfig
    from dpa3_al.explore.run import explore
    from dpa3_al.model import CommitteeCalculator
    from dpa3_al.common.typed_config import ConfigError

    cfg = load_section(args.config, "explore", ExploreConfig)
    drive = _drive(args.drive, cfg.drive)
    if isinstance(drive, int) and drive >= len(args.models):
        raise ConfigError("explore.drive", f"model index {drive} but only {len(args.models)} models were given "
                          "(--models); use an index below that or 'mean'")
    if len(args.models) < 2:
        log.warning("one model: the committee deviation is zero everywhere; give at least 2 --models")
    comm = CommitteeCalculator([str(p) for p in args.models], head=args.head, device=args.device, drive=drive)
    report = explore(cfg, comm, args.out, stage=args.stage, iteration=args.iteration,
                     base_dir=args.config.resolve().parent)
    summary = report.to_dict()
    print(f"explored stage {args.stage}, iteration {args.iteration}: {summary['n_tasks']} tasks, "
          f"{summary['n_frames']} frames recorded, {summary['steps_per_s']} MD steps/s (drive={drive})")
    for outcome, count in sorted(summary["counts"].items()):
        print(f"  {outcome:<28} {count}")
    print(f"results: {args.out}/task-*/ (traj.extxyz, model_devi.csv, md.log, status.json), "
          f"summary: {args.out}/explore.json")
    return 0
