"""Run configs to break on purpose: the quickstart template, and copies with one key set or removed."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def quickstart() -> dict:
    return yaml.safe_load((TEMPLATES / "quickstart.yaml").read_text())


def _parent(cfg: dict, path: str):
    """(the container holding the last key of ``path``, that key); ``a.b[2].c`` key paths."""
    keys = [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")]
    node = cfg
    for k in keys[:-1]:
        node = node[k]
    return node, keys[-1]


def with_key(cfg: dict, path: str, value) -> dict:
    """A copy of ``cfg`` with ``path`` set to ``value``."""
    cfg = copy.deepcopy(cfg)
    node, key = _parent(cfg, path)
    node[key] = value
    return cfg


def without_key(cfg: dict, path: str) -> dict:
    """A copy of ``cfg`` without ``path``."""
    cfg = copy.deepcopy(cfg)
    node, key = _parent(cfg, path)
    del node[key]
    return cfg
