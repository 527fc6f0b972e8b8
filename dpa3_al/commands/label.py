"""Label the frames of an extxyz (or any ASE-readable) file. Each frame gets a task directory
DIR/task-NNNNNN/ with inputs, outputs and status.json; a rerun skips finished frames. Labeled frames are
collected in DIR/labeled.extxyz."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from dpa3_al.commands import add_verb


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(subparsers, "label", _run, description=__doc__, help="label frames with a reference method "
                      "(tblite, pyscf, espresso, cp2k, vasp, abacus, ase, model)")
    parser.add_argument("frames", type=Path, help="frames to label (extxyz, or any format ASE reads)")
    parser.add_argument("--config", type=Path, required=True,
                        help="YAML with a label: section (a run config works) or the section itself")
    parser.add_argument("--out", type=Path, required=True, help="work directory for the task directories")
    parser.add_argument("--dataset", type=Path, default=None, help="also add the results to this dataset")
    parser.add_argument("--iteration", type=int, default=None, help="iteration recorded in the dataset")
    parser.add_argument("--redo-failed", action="store_true", help="label frames that failed before again")


def load_label_config(path: Path):
    """The LabelConfig of a YAML file (its ``label:`` section, or the whole file)."""
    from dpa3_al.common.yamlio import read_section
    from dpa3_al.label import LabelConfig

    return read_section(path, "label", LabelConfig)


def _run(args: argparse.Namespace) -> int:
    import ase.io

    from dpa3_al.label import LabeledFrame, make_labeler
    from dpa3_al.label.files import atomic_write_with

    config = load_label_config(args.config)
    frames = ase.io.read(args.frames, index=":")
    labeler = make_labeler(config)
    results = labeler.label(frames, args.out, redo_failed=args.redo_failed)
    labeled = [r for r in results if isinstance(r, LabeledFrame)]
    failed = Counter(r.reason for r in results if not isinstance(r, LabeledFrame))
    out_file = args.out / "labeled.extxyz"
    if labeled:
        plain = []
        for frame in labeled:
            atoms = frame.atoms.copy()
            atoms.calc = frame.atoms.calc
            atoms.info = {k: v for k, v in atoms.info.items() if isinstance(v, (str, int, float, bool))}
            plain.append(atoms)
        atomic_write_with(out_file, lambda tmp: ase.io.write(tmp, plain, format="extxyz"))
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(failed.items()))
    print(f"{config.kind}: {len(labeled)}/{len(results)} frames labeled"
          + (f"; failed: {reasons} (see {args.out}/task-*/status.json)" if failed else "")
          + (f"; labeled frames in {out_file}" if labeled else ""))
    if args.dataset is not None:
        from dpa3_al.dataset import LabeledDataset, Provenance

        report = LabeledDataset(args.dataset).add(results, Provenance(iteration=args.iteration, source=str(args.out)))
        print(f"{args.dataset}: {report.added} frames added, {report.duplicates} duplicates, "
              f"{report.failures} failures recorded")
    return 0 if labeled or not results else 1
