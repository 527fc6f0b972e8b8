"""Labeling tasks for the workflow: split the selected candidates, gather the results.

``prepare_tasks`` writes one folder per task (``batch-NNNNNN/frames.extxyz`` + ``task.json``)
with ``label.frames_per_task`` frames each; ``dpa3_al.label.run.run_task`` labels one of them
into per-frame directories ``task-NNNNNN/`` (NNNNNN = the frame's index among all candidates
of the iteration); ``read_results`` collects the finished per-frame results of such folders.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

from . import make_labeler
from .config import LabelConfig
from .files import atomic_write_json, atomic_write_with, read_json
from .results import LabelResult
from .taskdir import load_result

log = logging.getLogger(__name__)

__all__ = ["prepare_tasks", "read_task", "read_results", "CANDIDATES"]

CANDIDATES = "candidates.extxyz"
FRAMES = "frames.extxyz"
TASK = "task.json"


def prepare_tasks(cfg: LabelConfig, selection: Path, iteration: int, workdir: Path) -> list[Path]:
    """Split ``selection`` (a select output folder or a candidates file) into task folders of
    ``cfg.frames_per_task`` frames.

    The labeler's ``check`` runs here, so a missing program or pseudopotential stops the
    iteration before any labeling task starts.
    """
    import ase.io

    selection = Path(selection)
    path = selection / CANDIDATES if selection.is_dir() else selection
    frames = ase.io.read(path, index=":") if path.is_file() and path.stat().st_size else []
    if frames:
        make_labeler(cfg).check({s for atoms in frames for s in atoms.get_chemical_symbols()})
    workdir = Path(workdir)
    tasks = []
    for number, first in enumerate(range(0, len(frames), cfg.frames_per_task)):
        chunk = frames[first:first + cfg.frames_per_task]
        task = workdir / f"batch-{number:06d}"
        task.mkdir(parents=True, exist_ok=True)
        atomic_write_with(task / FRAMES, lambda tmp, c=chunk: ase.io.write(tmp, c, format="extxyz"))
        atomic_write_json(task / TASK, {"iteration": iteration, "first_index": first, "count": len(chunk),
                                        "source": str(path)})
        tasks.append(task)
    log.info("label: %d candidates in %d tasks of up to %d frames", len(frames), len(tasks), cfg.frames_per_task)
    return tasks


def read_task(task: Path) -> tuple[list, dict[str, Any]]:
    """(frames, task.json) of a task folder written by :func:`prepare_tasks`."""
    import ase.io

    task = Path(task)
    return ase.io.read(task / FRAMES, index=":"), read_json(task / TASK)


def read_results(folders: Iterable[Path]) -> list[LabelResult]:
    """Finished results of every ``task-NNNNNN/`` below ``folders`` (in index order; unfinished skipped)."""
    found = []
    for folder in folders:
        folder = Path(folder)
        if (folder / "input.extxyz").is_file():
            dirs = [folder]
        else:
            dirs = sorted(p for p in folder.rglob("task-*") if p.is_dir() and (p / "input.extxyz").is_file())
        for task_dir in dirs:
            result = load_result(task_dir)
            if result is not None:
                found.append((task_dir.name, result))
    return [r for _, r in sorted(found, key=lambda item: item[0])]
