"""``dpa3-al export``: write a model as a deepmd-kit 3.2 PyTorch checkpoint (for dp, LAMMPS, i-PI, dpgen2)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export", help="write a model as a deepmd-kit 3.2 checkpoint (then `dp --pt freeze` for LAMMPS)",
        description="Write MODEL (ours, or a deepmd-kit checkpoint) as a deepmd-kit 3.2 PyTorch checkpoint that "
        "deepmd-kit's DeepPot, `dp --pt test` and `dp --pt freeze` read; the frozen model runs in LAMMPS with "
        "`pair_style deepmd`. A deepmd-kit multi-task MODEL is exported whole unless --head picks one head. "
        "See docs/interop.md.")
    p.add_argument("model", type=Path, help="model file (ours or deepmd-kit *.pt)")
    p.add_argument("--head", help="head of a multi-task model (default: every head)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.pt", help="checkpoint to write")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from dpa3_al.model.interop.deepmd_export import export_checkpoint

    s = export_checkpoint(args.model, args.output, head=args.head)
    heads = "single-task" if s["heads"] == ["Default"] else f"multi-task, heads {', '.join(s['heads'])}"
    print(f"wrote {s['out']}: deepmd-kit 3.2 checkpoint ({heads}; type_map {' '.join(s['type_map'])}; "
          f"{s['precision']}; {s['parameters']:,} parameters per head)")
    print(f"next: dp --pt freeze -c {s['out']} -o frozen_model.pth"
          + (" --head HEAD" if s["heads"] != ["Default"] else "") + "   (then pair_style deepmd frozen_model.pth)")
    return 0
