"""CLI verbs. Each module here defines ``register(subparsers)`` adding one or more verbs.

Modules are discovered automatically by ``dpa3_al.cli``; heavy imports (torch, dflow, ase)
belong inside the verb functions so that ``dpa3-al --help`` stays fast. A module with one verb
uses its docstring as that verb's ``--help`` description (argparse reflows it).

The helpers below are what the verbs share: :func:`add_verb` wires a verb's parser to the
function it runs; the arguments several verbs take have one wording here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

Verb = Callable[[argparse.Namespace], int]


def add_verb(subparsers: Any, name: str, func: Verb, help: str, description: str | None = None,
             **kwargs: Any) -> argparse.ArgumentParser:
    """The parser of verb ``name`` (its one-line ``help`` in ``dpa3-al --help``, its
    ``description`` in ``dpa3-al NAME --help``), which runs ``func(args)``."""
    parser = subparsers.add_parser(name, help=help, description=description, **kwargs)
    parser.set_defaults(func=func)
    return parser


def add_model_argument(parser: argparse.ArgumentParser, head: str = "head of a multi-task model") -> None:
    """The positional MODEL (a checkpoint file) and ``--head`` (``head``: its help)."""
    parser.add_argument("model", type=Path, help="model file (ours or deepmd-kit *.pt)")
    add_head_option(parser, head)


def add_head_option(parser: argparse.ArgumentParser, help: str = "head of a multi-task model") -> None:
    parser.add_argument("--head", default=None, help=help)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
