"""Write MODEL (ours, or a deepmd-kit checkpoint) as a deepmd-kit 3.2 PyTorch checkpoint that
deepmd-kit's DeepPot, `dp --pt test` and `dp --pt freeze` read; the frozen model runs in LAMMPS with
`pair_style deepmd`. A deepmd-kit multi-task MODEL is exported whole unless --head picks one head.
See docs/interop.md."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dpa3_al.commands import add_model_argument, add_verb


def register(subparsers: Any) -> None:
    p = add_verb(subparsers, "export", run_export, description=__doc__,
                 help="write a model as a deepmd-kit 3.2 checkpoint (then `dp --pt freeze` for LAMMPS)")
    add_model_argument(p, head="head of a multi-task model (default: every head)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.pt", help="checkpoint to write")


def run_export(args: argparse.Namespace) -> int:
    from dpa3_al.model.interop.deepmd_export import export_checkpoint

    s = export_checkpoint(args.model, args.output, head=args.head)
    heads = "single-task" if s["heads"] == ["Default"] else f"multi-task, heads {', '.join(s['heads'])}"
    print(f"wrote {s['out']}: deepmd-kit 3.2 checkpoint ({heads}; type_map {' '.join(s['type_map'])}; "
          f"{s['precision']}; {s['parameters']:,} parameters per head)")
    print(f"next: dp --pt freeze -c {s['out']} -o frozen_model.pth"
          + (" --head HEAD" if s["heads"] != ["Default"] else "") + "   (then pair_style deepmd frozen_model.pth)")
    return 0
