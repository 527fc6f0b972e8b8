"""``dpa3-al data summary|import|export``: inspect and move labeled data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dpa3_al.commands import add_verb


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="inspect, import and export labeled datasets",
                                   description="Inspect, import and export the labeled dataset of a run.")
    verbs = parser.add_subparsers(dest="data_verb", metavar="ACTION", required=True)

    summary = add_verb(verbs, "summary", _summary, "counts per system, iteration and labeler, failures by reason")
    summary.add_argument("dir", type=Path, help="a dataset directory or a run directory holding dataset/")
    summary.add_argument("--json", action="store_true", help="print the summary as JSON")

    imp = add_verb(verbs, "import", _import, "add labeled data (deepmd npy/mixed/raw dirs, .h5, extxyz, dpdata formats)")
    imp.add_argument("sources", type=Path, nargs="+", help="files or directories (deepmd npy, npy/mixed and raw "
                     "systems searched recursively; deepmd/hdf5 .h5 files, file.h5#/group)")
    imp.add_argument("--to", type=Path, required=True, dest="dest", help="dataset directory (created if missing)")
    imp.add_argument("--fmt", default=None, help="dpdata format of other files, e.g. vasp/outcar, abacus/scf, "
                     "qe/pw/scf (deepmd systems, .h5 and .xyz/.extxyz are recognised without it)")
    imp.add_argument("--iteration", type=int, default=None, help="iteration to record (default: initial data)")

    exp = add_verb(verbs, "export", _export, "write the dataset as deepmd npy systems or one extxyz file")
    exp.add_argument("dir", type=Path, help="a dataset directory or a run directory holding dataset/")
    exp.add_argument("--to", type=Path, required=True, dest="dest", help="output directory (deepmd/npy) or file")
    exp.add_argument("--format", choices=("deepmd/npy", "extxyz"), default="deepmd/npy")


def dataset_root(path: Path) -> Path:
    """``path`` itself, or ``path/dataset`` for a run directory."""
    from dpa3_al.common.errors import UserError

    for candidate in (path / "dataset", path):
        if (candidate / "index").is_dir() and (candidate / "systems").is_dir():
            return candidate
    raise UserError(f"{path} is not a dataset (no index/ and systems/) nor a run directory holding dataset/")


def _summary(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from dpa3_al.dataset import LabeledDataset

    summary = LabeledDataset(dataset_root(args.dir)).summary()
    print(json.dumps(asdict(summary), indent=1) if args.json else summary.format())
    return 0


def _import(args: argparse.Namespace) -> int:
    from dpa3_al.dataset import LabeledDataset, Provenance

    dataset = LabeledDataset(args.dest)
    for source in args.sources:
        report = dataset.import_path(source, args.fmt, Provenance(iteration=args.iteration, source=str(source)))
        print(f"{source}: {report.added} frames added, {report.duplicates} duplicates skipped")
    print(f"{args.dest}: {len(dataset)} frames in {len(dataset.system_dirs())} systems")
    return 0


def _export(args: argparse.Namespace) -> int:
    from dpa3_al.dataset import LabeledDataset

    dataset = LabeledDataset(dataset_root(args.dir))
    dest = dataset.export(args.dest, args.format)
    print(f"wrote {len(dataset)} frames to {dest} ({args.format})")
    return 0
