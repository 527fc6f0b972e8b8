"""The ``dpa3-al`` command line.

Every verb lives in a module of :mod:`dpa3_al.commands` that defines
``register(subparsers)``; this file only discovers them, sets up logging and turns the
project's own errors into one clear line and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from dpa3_al import __version__

log = logging.getLogger("dpa3_al")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dpa3-al",
        description="Active learning (concurrent learning) for DPA3 interatomic potentials: "
        "train a committee, explore with MD, select uncertain frames, label them, repeat.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'dpa3-al VERB --help' for the options of one verb.",
    )
    parser.add_argument("--version", action="version", version=f"dpa3-al {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    import dpa3_al.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"dpa3_al.commands.{info.name}")
        module.register(subparsers)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    # OpenMP reads its wait policy once, when torch starts its runtime: set it before any verb
    # imports torch. Spinning worker threads (the default) steal the cores of a loaded machine:
    # 13-17 s instead of 167-271 s per E+F+V call at load 8-12 (bench/results/waitpolicy.txt).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet)
    try:
        result = args.func(args)
    except BrokenPipeError:        # output piped into `head` and the reader left: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("dpa3-al: interrupted; everything written so far is kept (resume where supported)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - user-facing boundary: one line, no traceback
        if not _is_user_error(err) or args.verbose > 1:
            raise
        print(f"dpa3-al {args.verb}: error: {err}", file=sys.stderr)
        return 1
    return int(result or 0)


def _is_user_error(err: Exception) -> bool:
    """Errors whose message is complete for a user (bad input, bad config, missing file)."""
    from dpa3_al.common.errors import UserError

    return isinstance(err, (UserError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
