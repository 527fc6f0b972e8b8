"""Typed configuration: nested frozen dataclasses read from plain dicts (YAML/JSON).

Every hyper-parameter of the project is written once, as a dataclass field with a default
and a doc string in its metadata. One loader (:func:`from_dict`) turns a user's dict into
those dataclasses, rejecting unknown keys (with the closest valid key as a hint), checking
types, ranges and choices, and naming the offending key path in every error::

    templates/water.yaml: explore.temps[2]: -10 must be > 0 (K)

The same classes serialise back (:func:`to_dict`) into checkpoints and run directories, and
describe themselves (:func:`schema`) for ``dpa3-al schema``.

This module lives in ``dpa3_al.model`` (the lowest room) so that the model core, the
active-learning code and the workflows can all use it.

Field metadata keys understood here:
  ``doc``    one-line description (shown by ``schema``)
  ``unit``   unit string appended to range errors, e.g. ``"K"``
  ``gt/ge/lt/le``  numeric bounds
  ``aliases``  other accepted spellings of the key (e.g. deepmd-kit names)

Every float must be finite (NaN or infinity in a temperature or a timestep would only fail
later, inside a step) and every integer within +-MAX_INT (``numb_steps: 1e300`` is refused here,
not by an overflow somewhere else). Keys of free-form mappings (``label.ase.kwargs``, INCAR tags,
...) may not start with ``py/``: the workflow engine's serialiser (jsonpickle) treats such keys
as its own and drops them on the way to a step.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from dpa3_al.common.errors import UserError

__all__ = ["ConfigError", "from_dict", "to_dict", "schema", "field", "replace", "MAX_INT"]

MAX_INT = 10**12
"""Largest integer (in absolute value) a config accepts: far above any count, seed or step
number that can run, far below what overflows int64 or float64's exact integers."""

RESERVED_KEY_PREFIX = "py/"
"""Key prefix jsonpickle (dflow's parameter serialiser) claims for itself."""


class ConfigError(UserError, ValueError):
    """A configuration value is wrong. ``str()`` is one line: where, what, and the fix."""

    def __init__(self, path: str, message: str, *, source: str | None = None):
        self.path = path
        self.message = message
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.source, self.path) if p)
        return f"{where}: {self.message}" if where else self.message

    def under(self, prefix: str) -> "ConfigError":
        """The same error, with its key path placed under ``prefix``."""
        path = _join(prefix, self.path) if self.path else prefix
        return ConfigError(path, self.message, source=self.source)

    def with_source(self, source: str) -> "ConfigError":
        return ConfigError(self.path, self.message, source=source)


def field(default: Any = dataclasses.MISSING, *, doc: str = "", unit: str = "",
          default_factory: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """``dataclasses.field`` with the metadata this loader reads (doc, unit, bounds)."""
    metadata = {"doc": doc, "unit": unit, **meta}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


replace = dataclasses.replace


def _join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {_type_name(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_bounds(value: Any, meta: typing.Mapping[str, Any], path: str) -> None:
    unit = f" ({meta['unit']})" if meta.get("unit") else ""
    for key, ok, word in (("gt", lambda v, b: v > b, ">"), ("ge", lambda v, b: v >= b, ">="),
                          ("lt", lambda v, b: v < b, "<"), ("le", lambda v, b: v <= b, "<=")):
        if key in meta and isinstance(value, (int, float)) and not ok(value, meta[key]):
            raise ConfigError(path, f"{value!r} must be {word} {meta[key]}{unit}")


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise ConfigError naming ``path``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        _check_free_form(value, path)
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(path, f"{value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(path, f"{value!r} is not one of {', '.join(repr(c) for c in choices)}{hint}")
    if origin in (list, tuple):
        (item_tp, *rest) = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list of {_type_name(item_tp)}, got {value!r}")
        if origin is tuple and rest and rest[0] is not Ellipsis:
            item_types = (item_tp, *rest)
            if len(value) != len(item_types):
                raise ConfigError(path, f"expected {len(item_types)} items, got {len(value)}")
            return tuple(_convert(t, v, _join(path, i)) for i, (t, v) in enumerate(zip(item_types, value)))
        items = [_convert(item_tp, v, _join(path, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {value!r}")
        _check_free_form(value, path)
        return {_convert(key_tp, k, path): _convert(val_tp, v, _join(path, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path=path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected true or false, got {value!r}")
    if tp is int:
        return _to_int(value, path)
    if tp is float:
        return _to_float(value, path)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(path, f"expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value).expanduser()
        raise ConfigError(path, f"expected a path, got {value!r}")
    if isinstance(value, tp):
        return value
    raise ConfigError(path, f"expected {_type_name(tp)}, got {value!r}")


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _to_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"expected an integer, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ConfigError(path, f"expected an integer, got {value!r}")
    if abs(value) > MAX_INT:
        raise ConfigError(path, f"{_short(value)} is beyond {MAX_INT:.0e}, the largest integer a config accepts; "
                                "use a count that can run")
    return int(value)


def _to_float(value: Any, path: str) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(path, f"{_short(value)} is too large for a number") from None
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None:
        raise ConfigError(path, f"expected a number, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(path, f"{value!r} is not a finite number; give a real value")
    return number


def _check_free_form(value: Any, path: str) -> None:
    """Refuse keys starting with ``py/`` anywhere inside a free-form value (iterative walk)."""
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if isinstance(key, str) and key.startswith(RESERVED_KEY_PREFIX):
                    raise ConfigError(_join(where, key), f"keys starting with {RESERVED_KEY_PREFIX!r} are "
                                      "reserved by the workflow's serialiser (jsonpickle), which would drop "
                                      "this one silently; rename it")
                stack.append((item, _join(where, str(key))))
        elif isinstance(node, (list, tuple)):
            stack.extend((item, _join(where, i)) for i, item in enumerate(node))


def from_dict(cls: type, data: Any, *, path: str = "", source: str | None = None) -> Any:
    """Build dataclass ``cls`` from a plain mapping, validating every key.

    Args:
        cls: a dataclass type (fields typed with builtins, Literal, Optional, list, dict,
            Path or nested dataclasses).
        data: the mapping (``None`` means "all defaults").
        path: key path of ``data`` inside the whole config, used in error messages.
        source: file name to prefix errors with.
    Raises:
        ConfigError: one error, naming the key path, the value and what was expected.
    """
    try:
        return _from_dict(cls, data, path)
    except ConfigError as err:
        raise (err.with_source(source) if source else err) from None


def _from_dict(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping of {cls.__name__} keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    aliases = {a: f.name for f in fields.values() for a in f.metadata.get("aliases", ())}
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = aliases.get(key, key)
        if name not in fields:
            close = difflib.get_close_matches(str(key), list(fields) + list(aliases), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(_join(path, str(key)), f"unknown key{hint}")
        sub = _join(path, str(key))
        converted = _convert(hints[name], value, sub)
        _check_bounds(converted, fields[name].metadata, sub)
        kwargs[name] = converted
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            doc = f.metadata.get("doc", "")
            raise ConfigError(_join(path, name), f"required key is missing{' (' + doc + ')' if doc else ''}")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise err.under(path) if path else err from None


def to_dict(obj: Any) -> Any:
    """Plain (YAML/JSON-safe) representation of a config dataclass tree."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def schema(cls: type, indent: int = 0) -> str:
    """Human-readable description of every key of ``cls`` (type, default, unit, doc)."""
    lines = []
    hints = _hints(cls)
    pad = "  " * indent
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if f.default is not dataclasses.MISSING:
            default = f" = {to_dict(f.default)!r}"
        elif f.default_factory is not dataclasses.MISSING:
            made = f.default_factory()
            default = "" if dataclasses.is_dataclass(made) else f" = {to_dict(made)!r}"
        else:
            default = " (required)"
        unit = f" [{f.metadata['unit']}]" if f.metadata.get("unit") else ""
        doc = f"  # {f.metadata['doc']}" if f.metadata.get("doc") else ""
        lines.append(f"{pad}{f.name}: {_type_name(tp)}{unit}{default}{doc}")
        nested = [a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)]
        for sub in nested[:1]:
            lines.append(schema(sub, indent + 1))
    return "\n".join(line for line in lines if line)
