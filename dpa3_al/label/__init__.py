"""Labelers: reference energies, forces and virials for selected frames.

::

    from dpa3_al.label import LabelConfig, make_labeler
    labeler = make_labeler(LabelConfig(kind="tblite"))
    labeler.check({"H", "O"})                      # LabelerUnavailable before expensive work
    results = labeler.label(frames, Path("label"))  # LabeledFrame | LabelFailure per frame

Backends (``kind``): tblite, pyscf, espresso, cp2k, vasp, abacus, ase, model. See
docs/labeling.md.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from .base import Labeler
from .config import LABELER_KINDS, LabelConfig
from .results import (FAILURE_REASONS, LabeledFrame, LabelError, LabelerUnavailable, LabelFailure, LabelMeta,
                      LabelResult)

__all__ = [
    "LABELER_KINDS", "FAILURE_REASONS", "LabelConfig", "Labeler", "LabeledFrame", "LabelFailure", "LabelMeta",
    "LabelResult", "LabelError", "LabelerUnavailable", "make_labeler", "labeler_class",
]

_REGISTRY = {
    "tblite": "dpa3_al.label.inprocess:TbliteLabeler",
    "ase": "dpa3_al.label.inprocess:AseLabeler",
    "model": "dpa3_al.label.inprocess:ModelLabeler",
    "pyscf": "dpa3_al.label.pyscf_dft:PyscfLabeler",
    "espresso": "dpa3_al.label.espresso:EspressoLabeler",
    "cp2k": "dpa3_al.label.cp2k:Cp2kLabeler",
    "vasp": "dpa3_al.label.vasp:VaspLabeler",
    "abacus": "dpa3_al.label.abacus:AbacusLabeler",
}


def labeler_class(kind: str) -> type:
    """The Labeler class registered for ``kind``."""
    if kind not in _REGISTRY:
        raise LabelerUnavailable(f"unknown labeler {kind!r}; valid kinds: {', '.join(LABELER_KINDS)}")
    module, name = _REGISTRY[kind].split(":")
    return getattr(importlib.import_module(module), name)


def make_labeler(config: LabelConfig | Mapping[str, Any]):
    """Build the labeler for ``config`` (a LabelConfig or the plain ``label:`` mapping)."""
    if not isinstance(config, LabelConfig):
        from dpa3_al.common.typed_config import from_dict

        config = from_dict(LabelConfig, dict(config), path="label")
    return labeler_class(config.kind)(config)
