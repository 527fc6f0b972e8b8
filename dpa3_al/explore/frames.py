"""Reading explored frames back from task folders (for :mod:`dpa3_al.select`).

Used by :mod:`dpa3_al.select`. A task folder that never ran (no ``model_devi.csv``) adds no
frames and is counted as ``not_run``; a truncated trajectory (killed task) gives only the
frames that are whole.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from dpa3_al.model.ensemble import DEVI_KEYS

from .deviation import read_model_devi
from .md import DEVI_FILE, TRAJ_FILE
from .status import task_outcome
from .tasks import TASK_JSON

log = logging.getLogger(__name__)


@dataclass
class FrameRef:
    """A recorded frame and its provenance (``atoms`` is loaded only for candidates)."""

    task: str
    group: str
    step: int
    devi: dict[str, float]
    meta: dict[str, Any]
    atoms: Atoms | None = None

    @property
    def key(self) -> str:
        return f"{self.task}:{self.step}"


@dataclass
class TaskInfo:
    """A task folder, its ``task.json`` content and its outcome."""

    path: Path
    name: str
    group: str
    meta: dict[str, Any]
    outcome: str


@dataclass
class FrameTable:
    """All recorded frames of a set of tasks: row r is frame ``steps[r]`` of ``tasks[task_index[r]]``."""

    tasks: list[TaskInfo] = field(default_factory=list)
    task_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    devi: np.ndarray = field(default_factory=lambda: np.zeros((0, len(DEVI_KEYS))))

    @property
    def groups(self) -> list[str]:
        """Group names in order of first appearance."""
        return list(dict.fromkeys(t.group for t in self.tasks))

    @property
    def iteration(self) -> int:
        """The loop iteration the tasks ran in (``task.json``; the largest if they differ, 0 without)."""
        return max((int(t.meta.get("iteration") or 0) for t in self.tasks), default=0)

    def column(self, key: str) -> np.ndarray:
        return self.devi[:, DEVI_KEYS.index(key)]

    def per_group(self, classes: np.ndarray) -> dict[str, dict[str, int]]:
        """Counts of accurate/candidate/failed frames (and tasks) per task group."""
        names = ("accurate", "candidate", "failed")
        group_of_row = np.array([self.tasks[i].group for i in self.task_index], dtype=object)
        out = {}
        for g in self.groups:
            rows = group_of_row == g
            out[g] = {n: int(np.sum(classes[rows] == k)) for k, n in enumerate(names)}
            out[g]["tasks"] = sum(1 for t in self.tasks if t.group == g)
        return out

    def task_outcomes(self) -> dict[str, int]:
        """Tasks per outcome (finished, stopped_early:<reason>, running, not_run)."""
        return dict(Counter(t.outcome for t in self.tasks))


def read_frames_table(task_dirs: Sequence[Path]) -> FrameTable:
    """Read ``task.json`` and ``model_devi.csv`` of every task folder (no structures yet)."""
    table = FrameTable()
    idx, steps, devi = [], [], []
    for path in task_dirs:
        path = Path(path)
        meta = json.loads((path / TASK_JSON).read_text(encoding="utf-8"))
        info = TaskInfo(path=path, name=meta.get("name", path.name), group=meta.get("group", "group-0"),
                        meta=meta, outcome=task_outcome(path))
        table.tasks.append(info)
        if not (path / DEVI_FILE).is_file():
            continue
        s, d = read_model_devi(path / DEVI_FILE)
        idx.append(np.full(len(s), len(table.tasks) - 1, dtype=np.int64))
        steps.append(s)
        devi.append(d)
    if idx:
        table.task_index, table.steps, table.devi = np.concatenate(idx), np.concatenate(steps), np.concatenate(devi)
    return table


def _provenance(task: TaskInfo) -> dict[str, Any]:
    md = task.meta.get("md", {})
    return {"task": task.name, "group": task.group, "stage": task.meta.get("stage"),
            "iteration": task.meta.get("iteration"), "conf": task.meta.get("conf_label"),
            "ensemble": md.get("ensemble"), "temperature": md.get("temperature"), "pressure": md.get("pressure")}


def _read_steps(traj: Path, wanted: set[int]) -> dict[int, Atoms]:
    """Frames of ``traj`` whose ``info['step']`` is in ``wanted`` (a truncated last frame is ignored)."""
    import ase.io

    found: dict[int, Atoms] = {}
    if not traj.is_file() or not wanted:
        return found
    try:
        for atoms in ase.io.iread(traj, format="extxyz"):
            step = int(atoms.info.get("step", -1))
            if step in wanted:
                found[step] = atoms
            if len(found) == len(wanted):
                break
    except Exception as err:  # noqa: BLE001 - a truncated file from a killed task: keep the whole frames
        log.warning("%s: stopped reading after %d frames (%s)", traj, len(found), err)
    return found


def load_frames(table: FrameTable, rows: np.ndarray) -> list[FrameRef]:
    """The frames of table ``rows`` with their structures (``atoms`` None when absent from the file)."""
    refs = []
    by_task: dict[int, list[int]] = {}
    for r in rows:
        by_task.setdefault(int(table.task_index[r]), []).append(int(r))
    for t, task_rows in sorted(by_task.items()):
        task = table.tasks[t]
        frames = _read_steps(task.path / TRAJ_FILE, {int(table.steps[r]) for r in task_rows})
        prov = _provenance(task)
        for r in task_rows:
            step = int(table.steps[r])
            devi = {k: float(v) for k, v in zip(DEVI_KEYS, table.devi[r])}
            atoms = frames.get(step)
            if atoms is not None:
                atoms = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
                atoms.info.update({k: v for k, v in prov.items() if v is not None}, step=step, **devi)
            refs.append(FrameRef(task=task.name, group=task.group, step=step, devi=devi, meta=prov, atoms=atoms))
    return refs
