"""The labeler interface and the per-frame loop every backend shares.

A backend subclasses :class:`Labeler` and implements ``check`` (cheap, up front) and
``compute`` (one frame in its task directory, returning energy/forces/stress or raising
:class:`LabelError`). The base class does the rest: task directories, skipping frames
that are already finished, retries, timing, validation and persistence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
from ase import Atoms

from .config import LabelConfig, section_dict
from .files import frame_fingerprint
from .results import (RETRYABLE, LabeledFrame, LabelError, LabelerUnavailable, LabelFailure, LabelMeta,
                      LabelResult, attach_results)
from .taskdir import archive_attempt, prepare_task, read_finished, task_dir_name, write_result

log = logging.getLogger(__name__)

__all__ = ["Labeler", "LabelerUnavailable", "LabelError", "Computed", "settings_hash"]

Computed = dict[str, Any]
"""What ``compute`` returns: ``energy`` (eV), ``forces`` (N,3 eV/Å), optional ``stress``
(eV/Å^3, 3x3 or Voigt, ASE sign) and ``free_energy``."""


def settings_hash(config: LabelConfig, extra: Any = None) -> str:
    """Short hash of the settings that decide the labels (kind + its section [+ extra])."""
    data = {"section": section_dict(config), "extra": extra}
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Labeler(ABC):
    """Labels frames with one reference method. Build with :func:`dpa3_al.label.make_labeler`."""

    kind: ClassVar[str]

    def __init__(self, config: LabelConfig):
        self.config = config
        self.settings = config.settings

    @property
    def settings_hash(self) -> str:
        return settings_hash(self.config)

    @abstractmethod
    def check(self, elements: Iterable[str]) -> None:
        """Raise :class:`LabelerUnavailable` if these elements cannot be labeled here."""

    @abstractmethod
    def compute(self, atoms: Atoms, task_dir: Path) -> Computed:
        """Label one frame inside ``task_dir``; raise :class:`LabelError` on failure."""

    def preflight(self, elements: Iterable[str] = ()) -> None:
        """The availability check before any work (``validate``, ``submit``, the start of a run):
        :meth:`check` for ``elements`` (empty: the program, package or calculator only), its
        :class:`LabelerUnavailable` saying that nothing has run yet."""
        try:
            self.check(set(elements))
        except LabelerUnavailable as err:
            raise LabelerUnavailable(f"{err} (found before any work: nothing has run)") from None
        finally:
            self.close()

    def close(self) -> None:
        """Release worker processes; the labeler can still be used afterwards."""

    def __enter__(self) -> "Labeler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def label(self, frames: Sequence[Atoms], workdir: Path, *, first_index: int = 0,
              redo_failed: bool = False) -> list[LabelResult]:
        """Label ``frames`` in ``workdir/task-NNNNNN/`` (NNNNNN = first_index + position).

        Returns one result per frame, in order. Frames whose task directory already holds a
        finished result for the same frame and settings are not recomputed (failures too,
        unless ``redo_failed``). Each result is persisted the moment it exists.
        """
        frames = list(frames)
        if not frames:
            return []
        self.check({symbol for atoms in frames for symbol in atoms.get_chemical_symbols()})
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        results: list[LabelResult] = []
        counts = {"ok": 0, "failed": 0, "reused": 0}
        try:
            for i, atoms in enumerate(_progress(frames, self.kind)):
                result, reused = self._label_one(atoms, workdir / task_dir_name(first_index + i), redo_failed)
                counts["reused"] += reused
                counts["ok" if isinstance(result, LabeledFrame) else "failed"] += 1
                results.append(result)
        finally:
            self.close()
        log.info("%s: %d frames labeled, %d failed (%d reused from %s)", self.kind, counts["ok"],
                 counts["failed"], counts["reused"], workdir)
        return results

    def _label_one(self, atoms: Atoms, task_dir: Path, redo_failed: bool) -> tuple[LabelResult, bool]:
        done = read_finished(task_dir, atoms, self.settings_hash)
        if done is not None and not (redo_failed and isinstance(done, LabelFailure)):
            return done, True
        prepare_task(task_dir, atoms)
        result = self._attempts(atoms, task_dir)
        write_result(task_dir, result, frame_fingerprint(atoms))
        if isinstance(result, LabelFailure):
            log.warning("%s: %s failed (%s): %s", self.kind, task_dir.name, result.reason, result.detail)
        return result, False

    def _attempts(self, atoms: Atoms, task_dir: Path) -> LabelResult:
        start = time.perf_counter()
        attempts = self.config.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                computed = self.compute(atoms, task_dir)
                labeled = _validated(atoms, computed)
                meta = self._meta(start, attempt, task_dir)
                return LabeledFrame(labeled, meta)
            except LabelerUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - a frame's failure is a record, never the end of the run
                err = exc if isinstance(exc, LabelError) else LabelError("crash", f"{type(exc).__name__}: {exc}")
                if not isinstance(exc, LabelError):
                    log.exception("%s: unexpected error on %s", self.kind, task_dir.name)
                failure = LabelFailure(err.reason, err.detail, task_dir, atoms, self._meta(start, attempt, task_dir))
            if failure.reason not in RETRYABLE or attempt == attempts:
                return failure
            log.warning("%s: %s attempt %d failed (%s), retrying", self.kind, task_dir.name, attempt, failure.reason)
            archive_attempt(task_dir, attempt)
        raise AssertionError("unreachable")

    def _meta(self, start: float, attempt: int, task_dir: Path) -> LabelMeta:
        return LabelMeta(labeler=self.kind, settings_hash=self.settings_hash,
                         wall_time=round(time.perf_counter() - start, 3), attempts=attempt, task_dir=task_dir)


def _validated(atoms: Atoms, computed: Computed) -> Atoms:
    """Check shapes and finiteness; return ``atoms`` with the results attached."""
    try:
        energy = float(computed["energy"])
        forces = np.asarray(computed["forces"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise LabelError("missing_output", f"no energy/forces in the result ({err})") from None
    if forces.shape != (len(atoms), 3):
        raise LabelError("invalid_result", f"forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
    stress = computed.get("stress")
    values = [energy, *forces.ravel(), *(np.ravel(stress) if stress is not None else ())]
    if not all(math.isfinite(v) for v in values):
        raise LabelError("invalid_result", "energy, forces or stress contain NaN or inf")
    extra = {"free_energy": computed["free_energy"]} if "free_energy" in computed else {}
    return attach_results(atoms, energy, forces, stress if atoms.pbc.all() else None, **extra)


def _progress(frames: list[Atoms], kind: str):
    from tqdm import tqdm

    return tqdm(frames, desc=f"label ({kind})", unit="frame", disable=None, leave=False)


def require_program(argv: Sequence[str], kind: str, install_hint: str) -> None:
    """Raise :class:`LabelerUnavailable` unless ``argv[0]`` is an executable (path or on PATH)."""
    import os
    import shutil

    if not argv:
        raise LabelerUnavailable(f"label.command is empty; set the program that runs {kind}")
    program = argv[0]
    found = shutil.which(program) or (os.access(program, os.X_OK) and Path(program).is_file())
    if not found:
        raise LabelerUnavailable(f"label ({kind}): program {program!r} not found on PATH; {install_hint}")
