"""Verbs about configs: ``schema`` (every key, default, unit) and ``template`` (ready configs)."""

from __future__ import annotations

import shutil
from pathlib import Path

from dpa3_al.commands import add_verb


def register(subparsers) -> None:
    p = add_verb(subparsers, "schema", cmd_schema, "every config key with its type, default, unit and meaning")
    p.add_argument("section", nargs="?", help="one section: train, explore, select, label, workflow, bootstrap")

    p = add_verb(subparsers, "template", cmd_template, "list the ready configs, or copy one to start from")
    p.add_argument("name", nargs="?", help="template name (see the list), e.g. quickstart")
    p.add_argument("-o", "--output", type=Path, help="where to copy it (default: ./NAME.yaml); never overwrites")


def templates_dir() -> Path:
    """The shipped templates (package data; the repository's templates/ in a source checkout)."""
    import dpa3_al.templates as t

    return Path(t.__file__).resolve().parent


def cmd_schema(args) -> int:
    from dpa3_al.config import RunConfig
    from dpa3_al.common.typed_config import schema

    if args.section:
        import dataclasses
        import typing

        hints = typing.get_type_hints(RunConfig)
        if args.section not in hints:
            raise SystemExit(f"dpa3-al schema: no section {args.section!r}; sections: {', '.join(hints)}")
        tp = hints[args.section]
        tp = next((a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)), None)
        if tp is None:
            raise SystemExit(f"dpa3-al schema: {args.section!r} is a plain value, not a section")
        print(f"{args.section}:\n{schema(tp, 1)}")
    else:
        print(schema(RunConfig))
    return 0


def cmd_template(args) -> int:
    from dpa3_al.common.yamlio import read_yaml_file

    root = templates_dir()
    names = sorted(p.stem for p in root.glob("*.yaml"))
    if not args.name:
        for name in names:
            first = (read_yaml_file(root / f"{name}.yaml") or {}).get("description", "")
            print(f"{name:20s} {first}")
        print("\ncopy one: dpa3-al template NAME [-o FILE]; details: templates/README.md")
        return 0
    if args.name not in names:
        raise SystemExit(f"dpa3-al template: no template {args.name!r}; choose one of {', '.join(names)}")
    out = args.output or Path(f"{args.name}.yaml")
    if out.exists():
        raise SystemExit(f"dpa3-al template: {out} exists; not overwriting (choose another -o)")
    shutil.copyfile(root / f"{args.name}.yaml", out)
    print(f"wrote {out}; its relative paths point into {root} (copy the data next to it or edit them)")
    return 0
