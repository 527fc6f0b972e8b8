"""The import graph keeps its shape: rooms in layers, and no import circles.

Layers, bottom to top (docs/architecture.md): ``dpa3_al.common`` (plumbing) <- ``dpa3_al.model``
(the DPA3 core) <- the active-learning science (``dpa3_al.explore``, ``label``, ``select``,
``dataset``, ``schedule``, ``report``, ``steps``, ``calibration``, ``evaluation``, ``interop``:
everything not named elsewhere) <- ``dpa3_al.workflows`` (dflow) <- the
application (``dpa3_al.config``, ``dpa3_al.cli``, ``dpa3_al.commands``). A module may import its
own layer and the layers below it. Imports inside functions count too (a deferred import hides a
circle from Python, not from a reader).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder -> installed package name (pyproject.toml's package-dir)
PACKAGES = {"dpa3_al": "dpa3_al", "model": "dpa3_al.model", "workflows": "dpa3_al.workflows"}
APP = ("dpa3_al.config", "dpa3_al.cli", "dpa3_al.commands")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for folder, pkg in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The longest known module that ``name`` (a module or module.attribute) lies in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """Project modules imported anywhere in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            names = [f"{base}.{a.name}" for a in node.names]   # a submodule or an attribute
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target and target != module:
                found.add(target)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(module: str) -> int:
    if module == "dpa3_al" or module.startswith("dpa3_al.common"):   # the root holds only __version__
        return 0
    if module.startswith("dpa3_al.model"):
        return 1
    if module.startswith("dpa3_al.workflows"):
        return 3
    if module.startswith(APP):
        return 4
    return 2


def test_the_root_package_stays_plumbing():
    """Everything may import ``dpa3_al`` (for ``__version__``), so it must import nothing of ours."""
    assert not GRAPH["dpa3_al"], f"dpa3_al/__init__.py imports {sorted(GRAPH['dpa3_al'])}"


def test_the_graph_sees_the_project():
    assert "dpa3_al.model.energy" in MODULES and "dpa3_al.workflows.loop" in MODULES
    assert "dpa3_al.model.config" in GRAPH["dpa3_al.model.energy"]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_its_own_layer_and_below(module):
    upward = sorted(t for t in GRAPH[module] if _layer(t) > _layer(module))
    assert not upward, f"{module} (layer {_layer(module)}) imports a layer above it: {upward}"


def test_no_import_circles():
    """Tarjan's strongly connected components over the whole graph: each must be one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)
