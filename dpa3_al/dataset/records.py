"""Records of the labeled dataset: provenance of frames and failures, and the conversion of a
labeled frame into the canonical form the store writes (atoms sorted by Z, one system per
composition). Units: eV, Å; virial eV (= -stress * volume).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from dpa3_al.common.errors import InputError
from dpa3_al.label.results import LabeledFrame, LabelFailure, stress_matrix

__all__ = ["Provenance", "FrameRecord", "FailureRecord", "AddReport", "DatasetSummary", "StoredFrame",
           "canonical_frame", "failure_record"]

_COND_KEYS = ("temperature", "temp", "pressure", "press", "ensemble", "conf", "stage", "group")


@dataclass(frozen=True)
class Provenance:
    """Where one batch of frames comes from."""

    iteration: int | None = None
    source: str = ""


@dataclass(frozen=True)
class FrameRecord:
    """Provenance of one stored frame (``system``/``set``/``row`` locate it on disk)."""

    system: str
    set: str
    row: int
    iteration: int | None = None
    task: str | None = None
    step: int | None = None
    condition: dict[str, Any] | None = None
    labeler: str | None = None
    settings_hash: str | None = None
    wall_time: float | None = None
    time: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FailureRecord:
    """A frame that could not be labeled, kept so reports can count and explain failures."""

    formula: str
    reason: str
    detail: str
    workdir: str | None = None
    iteration: int | None = None
    task: str | None = None
    step: int | None = None
    labeler: str | None = None
    settings_hash: str | None = None
    time: str = ""
    source: str = ""


@dataclass(frozen=True)
class AddReport:
    added: int
    duplicates: int
    failures: int
    sets: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSummary:
    frames: int
    systems: dict[str, int]
    iterations: dict[str, int]
    labelers: dict[str, int]
    failures: dict[str, int]
    failures_by_labeler: dict[str, int]

    def format(self) -> str:
        """Human-readable tables (what ``dpa3-al data summary`` prints)."""
        lines = [f"frames: {self.frames} in {len(self.systems)} systems; failed labels: {sum(self.failures.values())}"]
        for title, table in (("system", self.systems), ("iteration", self.iterations),
                             ("labeler", self.labelers), ("failure reason", self.failures),
                             ("failures by labeler", self.failures_by_labeler)):
            if table:
                width = max(len(title), *(len(k) for k in table))
                lines += ["", f"{title:<{width}}  count"]
                lines += [f"{k:<{width}}  {v:>5}" for k, v in table.items()]
        return "\n".join(lines)


@dataclass
class StoredFrame:
    """One frame in canonical (sorted by Z) order, ready to be stored."""

    system: str
    type_map: list[str]
    types: np.ndarray
    coords: np.ndarray          # (N, 3) Å
    box: np.ndarray | None      # (3, 3) Å, None when non-periodic
    energy: float
    forces: np.ndarray          # (N, 3) eV/Å
    virial: np.ndarray | None   # (3, 3) eV
    record: dict[str, Any]


def canonical_frame(item: LabeledFrame | Atoms, provenance: Provenance, stamp: str) -> StoredFrame:
    atoms, meta = (item.atoms, item.meta) if isinstance(item, LabeledFrame) else (item, None)
    if atoms.calc is None or "energy" not in atoms.calc.results or "forces" not in atoms.calc.results:
        raise InputError(f"frame {atoms.get_chemical_formula()} has no energy and forces; only labeled frames "
                         "can be added to the dataset")
    results = atoms.calc.results
    energy = float(results.get("free_energy", results["energy"]))
    order = np.argsort(atoms.numbers, kind="stable")
    all_symbols = atoms.get_chemical_symbols()
    symbols = [all_symbols[i] for i in order]
    type_map = sorted(set(symbols), key=lambda s: atomic_numbers[s])
    periodic = bool(atoms.pbc.any())
    if periodic and abs(atoms.cell.volume) < 1e-9:
        raise InputError(f"frame {atoms.get_chemical_formula()} is periodic but has no cell volume")
    stress = results.get("stress")
    virial = -stress_matrix(stress) * atoms.get_volume() if atoms.pbc.all() and stress is not None else None
    name = atoms.get_chemical_formula(mode="hill") + ("" if periodic else "-nopbc")
    if periodic and virial is None:
        name += "-novirial"
    return StoredFrame(system=name, type_map=type_map, types=np.array([type_map.index(s) for s in symbols]),
                  coords=np.asarray(atoms.positions)[order], box=np.asarray(atoms.cell.array) if periodic else None,
                  energy=energy, forces=np.asarray(results["forces"])[order], virial=virial,
                  record=_frame_record(atoms.info, meta, provenance, stamp))


def _origin(info: dict[str, Any]) -> tuple[str | None, int | None, dict[str, Any] | None]:
    task = info.get("task", info.get("task_id", info.get("explore_task")))
    step = info.get("step", info.get("frame"))
    condition = info.get("condition")
    if not isinstance(condition, dict):
        condition = {k: info[k] for k in _COND_KEYS if k in info} or None
    return (None if task is None else str(task)), (None if step is None else int(step)), condition


_PROVENANCE_KEYS = ("iteration", "task", "step", "condition", "labeler", "settings_hash", "wall_time", "source",
                    "system", "set", "row", "time", "extra")


def _frame_record(info: dict[str, Any], meta: Any, provenance: Provenance, stamp: str) -> dict[str, Any]:
    """Provenance of one frame: the labeler's meta and the batch's provenance first, then what
    the frame's ``info`` says (so data exported with provenance keeps it when imported again)."""
    task, step, condition = _origin(info)
    extra = dict(info.get("extra") or {}) if isinstance(info.get("extra"), dict) else {}
    extra.update({k: (v.item() if isinstance(v, np.generic) else v) for k, v in info.items()
                  if isinstance(v, (str, int, float, bool, np.generic)) and k not in _PROVENANCE_KEYS})
    iteration = provenance.iteration if provenance.iteration is not None else info.get("iteration")
    return {"iteration": None if iteration is None else int(iteration), "task": task, "step": step,
            "condition": condition,
            "labeler": getattr(meta, "labeler", None) or info.get("labeler"),
            "settings_hash": getattr(meta, "settings_hash", None) or info.get("settings_hash"),
            "wall_time": getattr(meta, "wall_time", None) or info.get("wall_time"),
            "time": stamp, "source": provenance.source or str(info.get("source", "")), "extra": extra}


def failure_record(failure: LabelFailure, provenance: Provenance, stamp: str) -> FailureRecord:
    atoms = failure.atoms
    task, step, _ = _origin(atoms.info if atoms is not None else {})
    meta = failure.meta
    return FailureRecord(formula=atoms.get_chemical_formula(mode="hill") if atoms is not None else "?",
                         reason=failure.reason, detail=failure.detail[:2000], workdir=str(failure.workdir),
                         iteration=provenance.iteration, task=task, step=step,
                         labeler=meta.labeler if meta else None, settings_hash=meta.settings_hash if meta else None,
                         time=stamp, source=provenance.source)
