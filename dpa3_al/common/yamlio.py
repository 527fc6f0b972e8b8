"""Reading YAML config files safely: the one loader every config file goes through.

``yaml.safe_load`` already refuses code-carrying tags; this loader also refuses what makes a
small file expensive or ambiguous, each as one line naming the file and where:

- bytes that are not UTF-8 (the byte offset of the first bad byte);
- mappings/lists nested deeper than :data:`MAX_DEPTH` (PyYAML would recurse until Python's
  recursion limit);
- aliases that expand the document to more than :data:`MAX_VALUES` values (a "billion laughs"
  file is a few hundred bytes and expands to 10^9 strings);
- the same key twice in one mapping (YAML parsers silently keep the last one), naming both lines.

Merge keys (``<<: *base``) keep working: keys written next to a merge override it, as YAML says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .typed_config import ConfigError, from_dict

__all__ = ["MAX_DEPTH", "MAX_VALUES", "MAX_BYTES", "load_yaml_text", "read_yaml_file", "read_section"]

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists accepted (real configs use fewer than 10 levels)."""

MAX_VALUES = 200_000
"""Most values (scalars, lists and mappings, aliases counted as often as they are expanded)."""

MAX_BYTES = 16 * 1024 * 1024
"""Largest config file read (16 MiB)."""


class _Refused(yaml.YAMLError):
    """A document this loader will not construct; ``line`` is 1-based (0 = unknown)."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader with a depth limit while composing and a duplicate-key check per mapping."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(mark.line + 1, f"nested more than {MAX_DEPTH} levels deep; "
                                              "a config never needs that many (a generated or damaged file?)")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        _check_duplicates(node)
        return node


def _check_duplicates(node: yaml.MappingNode) -> None:
    seen: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        ident = (key.tag, key.value)
        line = key.start_mark.line + 1
        if ident in seen:
            raise _Refused(line, f"key {key.value!r} is given twice in one mapping (lines {seen[ident]} and "
                                 f"{line}); YAML would silently keep the last one: remove one of them")
        seen[ident] = line


def _expanded_size(root: yaml.Node) -> int:
    """Values in the document once every alias is expanded (memoised on the shared nodes; no
    expansion is built). Raises _Refused as soon as the count passes MAX_VALUES, or when an
    alias refers to a collection that contains it."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not children_done and children:
            if id(node) in open_nodes:
                raise _Refused(node.start_mark.line + 1, "an alias refers to the collection that contains it; "
                                                         "such a value would be infinite")
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        size = 1 + sum(sizes.get(id(c), 0) for c in children)
        if size > MAX_VALUES:
            raise _Refused(node.start_mark.line + 1, f"expands to more than {MAX_VALUES:,} values through "
                           "aliases (*name); a 'billion laughs' file? Write the values out instead")
        sizes[id(node)] = size
        open_nodes.discard(id(node))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load_yaml_text(text: str, source: str) -> Any:
    """Parse one YAML document with the limits above; errors are ConfigError naming ``source``."""
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _Refused as err:
        raise ConfigError("", f"line {err.line}: {err.message}" if err.line else err.message,
                          source=source) from None
    except RecursionError:
        raise ConfigError("", f"nested too deeply to read (more than {MAX_DEPTH} levels)", source=source) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError("", f"{where}not valid YAML ({getattr(err, 'problem', None) or err})",
                          source=source) from None
    finally:
        loader.dispose()


def read_yaml_file(path: Path) -> Any:
    """The YAML document of ``path`` (UTF-8, at most MAX_BYTES), through :func:`load_yaml_text`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", "no such config file", source=str(path))
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError("", f"{size:,} bytes; a config file is at most {MAX_BYTES:,} bytes", source=str(path))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ConfigError("", f"byte offset {err.start} (line {line}): byte 0x{raw[err.start]:02x} is not UTF-8; "
                          "save the file as UTF-8", source=str(path)) from None
    return load_yaml_text(text, str(path))


def read_section(path: Path, section: str, cls: type) -> Any:
    """``cls`` (a typed config) from YAML ``path``: its ``section`` key when present, else the whole file."""
    data = read_yaml_file(path) or {}
    if isinstance(data, dict) and section in data:
        return from_dict(cls, data[section], path=section, source=str(path))
    return from_dict(cls, data, source=str(path))
