"""Convert a deepmd-kit training input (model, learning_rate, loss, training) into a training
config for 'dpa3-al train', or a dpgen2 input (inputs, train, explore, fp) into a run config for
'dpa3-al submit'. deepmd-kit's defaults are written out where ours differ (docs/interop-defaults.md);
keys that have no counterpart are printed with the reason. The output is validated."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from dpa3_al.commands import add_verb


def register(subparsers: Any) -> None:
    p = add_verb(subparsers, "convert", run_convert, description=__doc__,
                 help="convert a deepmd-kit input.json (training) or a dpgen2 input.json (run) to our YAML")
    p.add_argument("kind", choices=("deepmd", "dpgen2"), help="what INPUT is")
    p.add_argument("input", type=Path, help="the JSON input")
    p.add_argument("-o", "--output", type=Path, required=True, help="YAML file to write")


def run_convert(args: argparse.Namespace) -> int:
    import yaml

    from dpa3_al.common.errors import UserError
    from dpa3_al.common.fileio import atomic_write_text

    try:
        data = json.loads(Path(args.input).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{args.input}: not a readable JSON file ({err})") from None
    base, out_dir = Path(args.input).resolve().parent, Path(args.output).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.kind == "deepmd":
        from dpa3_al.interop.deepmd_input import convert_deepmd_input

        converted, unmapped = convert_deepmd_input(data, base, out_dir)
    else:
        from dpa3_al.interop.dpgen2_input import convert_dpgen2_input

        name = re.sub(r"[^a-z0-9-]+", "-", Path(args.output).stem.lower()).strip("-") or "run"
        converted, unmapped = convert_dpgen2_input(data, base, out_dir, name=name)
    header = f"# converted by 'dpa3-al convert {args.kind} {args.input}'\n"
    dumper = type("NoAliases", (yaml.SafeDumper,), {"ignore_aliases": lambda self, data: True})
    atomic_write_text(Path(args.output), header + yaml.dump(converted, Dumper=dumper, sort_keys=False))
    print(f"wrote {args.output}")
    if unmapped:
        print(f"{len(unmapped)} key(s) not mapped:")
        print("\n".join(str(u) for u in unmapped))
    return _validate(args.kind, Path(args.output))


def _validate(kind: str, path: Path) -> int:
    """Load the written file as 'dpa3-al train' (training config) or 'dpa3-al validate' (run config) does."""
    from dpa3_al.common.errors import UserError
    from dpa3_al.common.typed_config import ConfigError

    try:
        if kind == "deepmd":
            from dpa3_al.model.train.config import load_train_config

            load_train_config(path)
        else:
            from dpa3_al.config import load_run_config

            load_run_config(path)
    except (ConfigError, UserError) as err:
        print(f"{path}: written, but it does not validate: {err}")
        return 1
    print(f"{path}: valid {'training' if kind == 'deepmd' else 'run'} config")
    return 0
