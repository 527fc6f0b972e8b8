"""What every OP shares: find the function it calls, make its working folder.

An OP names the function it calls by import path (``"package.module:function"``) in its
``func`` input parameter, whose default is the real function of the project. Tests (and
users with their own science) pass another path; the OP itself never changes.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Callable

__all__ = ["FunctionNotFound", "resolve", "call", "workdir", "present"]


class FunctionNotFound(ImportError):
    """The import path of a step function does not resolve.

    Raised inside a step process (the message lands in the step log); deliberately not a
    ``UserError`` so that a step never imports ``dpa3_al.model`` (numpy) just to fail.
    """


def resolve(spec: str) -> Callable[..., Any]:
    """``"pkg.mod:func"`` (or ``"pkg.mod.func"``) -> the callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise FunctionNotFound(f"step function {spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise FunctionNotFound(f"step function {spec!r}: cannot import {module_name} ({err})") from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FunctionNotFound(f"step function {spec!r}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FunctionNotFound(f"step function {spec!r} is not callable")
    return obj


def call(spec: str, optional: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Call the step function named by ``spec`` with keyword arguments only; those in
    ``optional`` only when the function takes them (a parameter of that name or ``**kwargs``),
    so a function written to an older, shorter contract keeps working."""
    func = resolve(spec)
    if optional:
        params = inspect.signature(func).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs.update({k: v for k, v in optional.items() if takes_all or k in params})
    return func(**kwargs)


def workdir(name: str) -> Path:
    """A (relative) folder for one call's outputs, created if missing (retries reuse it)."""
    path = Path(name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def present(paths: Any) -> list[Path]:
    """The items of a list artifact that exist. A fan-out's stacked output holds None for
    every task that failed (tolerated by ``continue_on_success_ratio``); those are dropped."""
    return [Path(p) for p in (paths or []) if p is not None]
