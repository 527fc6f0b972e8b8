"""The labeled dataset: an append-only store of deepmd npy systems plus a provenance index.

Layout (readable by deepmd-kit and dpdata ``deepmd/npy`` as it is)::

    dataset/
      systems/<formula>[-nopbc|-novirial]/    one system per composition (atoms sorted by Z)
        type.raw  type_map.raw  [nopbc]
        set.000/  coord.npy box.npy energy.npy force.npy [virial.npy]
        set.001/  ...                          one new set per add() that touches the system
      index/add-000001.json                   one commit per add(): frames (system, set, row,
                                              provenance) and failure records

Writes are crash-safe: a set is built in a hidden temporary directory and renamed into place,
every other file is written atomically, and the commit file comes last. Sets that no commit
names (a crash between the two) are removed when the dataset is opened, so a reader never
sees a frame without provenance. Units: eV, Å; virial eV (= -stress * volume).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from ase import Atoms

from dpa3_al.common.errors import UserError
from dpa3_al.label.files import atomic_write_json, read_json
from dpa3_al.label.results import LabeledFrame, LabelFailure

from .npy import SET_RE, ensure_system, read_set, write_set
from .readers import read_labeled
from .records import (AddReport, DatasetSummary, FailureRecord, FrameRecord, Provenance, StoredFrame, canonical_frame,
                      failure_record)

log = logging.getLogger(__name__)

__all__ = ["LabeledDataset"]


class LabeledDataset:
    """Append-only labeled data with provenance, deduplication, import and export.

    Args:
        root: dataset directory (created when missing).
        dedup_tol: frames of one system whose cells and positions (any atom order within a
            species, periodic images folded) agree within this many Å are one frame.
    """

    def __init__(self, root: Path, *, dedup_tol: float = 1e-3):
        self.root = Path(root)
        self.dedup_tol = dedup_tol
        (self.root / "systems").mkdir(parents=True, exist_ok=True)
        (self.root / "index").mkdir(exist_ok=True)
        self._geometry: dict[str, list[tuple[np.ndarray, np.ndarray | None, np.ndarray]]] = {}
        with self._lock():
            self._repair()

    # ------------------------------------------------------------------ reading

    def commits(self) -> list[dict[str, Any]]:
        return [read_json(p) for p in sorted((self.root / "index").glob("add-*.json"))]

    @property
    def records(self) -> list[FrameRecord]:
        return [FrameRecord(**r) for c in self.commits() for r in c["frames"]]

    @property
    def failures(self) -> list[FailureRecord]:
        return [FailureRecord(**r) for c in self.commits() for r in c["failures"]]

    def system_dirs(self) -> list[Path]:
        """The deepmd npy system directories with committed data (what training reads)."""
        committed = {r.system for r in self.records}
        return [self.root / "systems" / name for name in sorted(committed)]

    def __len__(self) -> int:
        return sum(len(c["frames"]) for c in self.commits())

    def frames(self) -> Iterator[Atoms]:
        """Every stored frame with its labels (calculator) and provenance (``info``; the
        ``extra`` and ``condition`` entries are also flattened into ``info``)."""
        by_set: dict[tuple[str, str], list[FrameRecord]] = {}
        for record in self.records:
            by_set.setdefault((record.system, record.set), []).append(record)
        for (system, set_name), records in by_set.items():
            atoms_list = read_set(self.root / "systems" / system, set_name)
            for record in sorted(records, key=lambda r: r.row):
                atoms = atoms_list[record.row]
                fields = {k: v for k, v in asdict(record).items() if v not in (None, {}, "") and k != "extra"}
                atoms.info.update({**record.extra, **(record.condition or {}), **fields})
                yield atoms

    def summary(self) -> DatasetSummary:
        records, failures = self.records, self.failures
        iteration = lambda r: "initial" if r.iteration is None else f"{r.iteration:03d}"  # noqa: E731
        return DatasetSummary(
            frames=len(records),
            systems=dict(sorted(Counter(r.system for r in records).items())),
            iterations=dict(sorted(Counter(iteration(r) for r in records).items())),
            labelers=dict(sorted(Counter(r.labeler or "imported" for r in records).items())),
            failures=dict(sorted(Counter(f.reason for f in failures).items())),
            failures_by_labeler=dict(sorted(Counter(f.labeler or "?" for f in failures).items())),
        )

    # ------------------------------------------------------------------ writing

    def add(self, items: Iterable[LabeledFrame | LabelFailure | Atoms],
            provenance: Provenance | None = None) -> AddReport:
        """Store labeled frames (and failure records) as one commit.

        ``items`` may be labeler results or ASE Atoms carrying energy and forces (a
        SinglePointCalculator, e.g. read from extxyz). Frames already in the dataset (within
        ``dedup_tol``) are skipped and counted as duplicates.
        """
        provenance = provenance or Provenance()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        frames, failures = [], []
        for item in items:
            if isinstance(item, LabelFailure):
                failures.append(failure_record(item, provenance, stamp))
            else:
                frames.append(canonical_frame(item, provenance, stamp))
        with self._lock():
            self._repair()
            kept, duplicates = self._deduplicate(frames)
            records, sets = self._write_sets(kept)
            number = 1 + max((int(p.stem.split("-")[1]) for p in (self.root / "index").glob("add-*.json")), default=0)
            commit = {"version": 1, "time": stamp, "provenance": asdict(provenance),
                      "frames": records, "failures": [asdict(f) for f in failures]}
            if records or failures:
                atomic_write_json(self.root / "index" / f"add-{number:06d}.json", commit)
        log.info("dataset %s: %d frames added in %d sets, %d duplicates skipped, %d failures recorded",
                 self.root, len(records), len(sets), duplicates, len(failures))
        return AddReport(len(records), duplicates, len(failures), tuple(sets))

    def import_path(self, path: Path, fmt: str | None = None, provenance: Provenance | None = None) -> AddReport:
        """Add labeled data from deepmd npy directories (searched recursively), extxyz or a dpdata format."""
        frames = read_labeled(Path(path), fmt)
        return self.add(frames, provenance or Provenance(source=str(path)))

    def export(self, dest: Path, fmt: str = "deepmd/npy") -> Path:
        """Copy the committed data to ``dest`` as deepmd npy systems or one extxyz file."""
        dest = Path(dest)
        if fmt == "extxyz":
            import ase.io

            from dpa3_al.label.files import atomic_write_with

            frames = list(self.frames())
            for atoms in frames:
                atoms.info = {k: v for k, v in atoms.info.items() if isinstance(v, (str, int, float, bool))}
            atomic_write_with(dest, lambda tmp: ase.io.write(tmp, frames, format="extxyz"))
            return dest
        if fmt != "deepmd/npy":
            raise UserError(f"export format {fmt!r} is not supported; use deepmd/npy or extxyz")
        for system in self.system_dirs():
            target = dest / system.name
            shutil.copytree(system, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        return dest

    # ------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _repair(self) -> None:
        """Remove what no commit names: half-written sets, temporary files, empty systems."""
        committed = {(r["system"], r["set"]) for c in self.commits() for r in c["frames"]}
        for system in (self.root / "systems").iterdir():
            if not system.is_dir():
                continue
            for entry in system.iterdir():
                orphan = SET_RE.match(entry.name) and (system.name, entry.name) not in committed
                if entry.name.startswith(".") or orphan:
                    log.warning("dataset %s: removing uncommitted %s", self.root, entry)
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            if not any(SET_RE.match(e.name) for e in system.iterdir()):
                shutil.rmtree(system)
                self._geometry.pop(system.name, None)

    def _deduplicate(self, frames: list[StoredFrame]) -> tuple[list[StoredFrame], int]:
        kept, duplicates = [], 0
        for frame in frames:
            known = self._known(frame.system)
            fp = _fingerprint(frame.coords, frame.box, frame.types)
            if known:
                box = frame.box
                fp_tol = self.dedup_tol if box is None else \
                    2 * np.pi * self.dedup_tol * np.linalg.norm(np.linalg.inv(box), axis=0).max()
                close = np.abs(np.asarray([k[2] for k in known]) - fp).max(axis=1) <= fp_tol * 1.01 + 1e-12
                if any(_same(frame, *known[i][:2], self.dedup_tol) for i in np.flatnonzero(close)):
                    duplicates += 1
                    continue
            known.append((frame.coords, frame.box, fp))
            kept.append(frame)
        return kept, duplicates

    def _known(self, system: str) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
        if system not in self._geometry:
            entries = []
            path = self.root / "systems" / system
            if path.is_dir():
                types = np.loadtxt(path / "type.raw", dtype=int, ndmin=1)
                periodic = not (path / "nopbc").exists()
                for set_dir in sorted(p for p in path.iterdir() if SET_RE.match(p.name)):
                    coords = np.load(set_dir / "coord.npy").reshape(-1, len(types), 3)
                    boxes = np.load(set_dir / "box.npy").reshape(-1, 3, 3)
                    for c, b in zip(coords, boxes):
                        box = b if periodic else None
                        entries.append((c, box, _fingerprint(c, box, types)))
            self._geometry[system] = entries
        return self._geometry[system]

    def _write_sets(self, frames: list[StoredFrame]) -> tuple[list[dict[str, Any]], list[str]]:
        groups: dict[str, list[StoredFrame]] = {}
        for frame in frames:
            groups.setdefault(frame.system, []).append(frame)
        records, sets = [], []
        for system, group in groups.items():
            path = self.root / "systems" / system
            ensure_system(path, group[0])
            numbers = [int(m.group(1)) for p in path.iterdir() if (m := SET_RE.match(p.name))]
            set_name = f"set.{max(numbers, default=-1) + 1:03d}"
            write_set(path, set_name, group)
            sets.append(f"{system}/{set_name}")
            records += [{"system": system, "set": set_name, "row": row, **f.record} for row, f in enumerate(group)]
        return records, sets


# ---------------------------------------------------------------------- dedup


def _fingerprint(coords: np.ndarray, box: np.ndarray | None, types: np.ndarray) -> np.ndarray:
    """Permutation-invariant summary per species (periodic: mean cos/sin of 2π·fractional coords)."""
    parts = []
    for t in np.unique(types):
        sel = coords[types == t]
        if box is None:
            parts.append(sel.mean(axis=0))
        else:
            angle = 2 * np.pi * np.linalg.solve(box.T, sel.T).T
            parts += [np.cos(angle).mean(axis=0), np.sin(angle).mean(axis=0)]
    return np.concatenate(parts)


def _same(frame: StoredFrame, coords: np.ndarray, box: np.ndarray | None, tol: float) -> bool:
    """Same cell and, species by species, a one-to-one match of atoms within ``tol`` Å."""
    if (box is None) != (frame.box is None) or coords.shape != frame.coords.shape:
        return False
    if box is not None and np.abs(box - frame.box).max() > tol:
        return False
    for t in np.unique(frame.types):
        a, b = frame.coords[frame.types == t], coords[frame.types == t]
        delta = a[:, None, :] - b[None, :, :]
        if box is not None:
            frac = np.linalg.solve(box.T, delta.reshape(-1, 3).T).T
            delta = ((frac - np.round(frac)) @ box).reshape(delta.shape)
        dist = np.linalg.norm(delta, axis=-1)
        nearest = dist.argmin(axis=1)
        if dist[np.arange(len(a)), nearest].max() > tol or len(set(nearest.tolist())) != len(a):
            return False
    return True
