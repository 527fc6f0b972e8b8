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
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers

from dpa3_al.label.files import atomic_write_json, atomic_write_text, read_json
from dpa3_al.label.results import LabeledFrame, LabelFailure, stress_matrix
from dpa3_al.common.errors import InputError, UserError

log = logging.getLogger(__name__)

__all__ = ["LabeledDataset", "Provenance", "FrameRecord", "FailureRecord", "AddReport", "DatasetSummary",
           "read_labeled", "find_deepmd_systems", "collect"]

_SET = re.compile(r"^set\.(\d+)$")
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
class _Frame:
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
            atoms_list = _read_set(self.root / "systems" / system, set_name)
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
                failures.append(_failure_record(item, provenance, stamp))
            else:
                frames.append(_canonical(item, provenance, stamp))
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
                orphan = _SET.match(entry.name) and (system.name, entry.name) not in committed
                if entry.name.startswith(".") or orphan:
                    log.warning("dataset %s: removing uncommitted %s", self.root, entry)
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            if not any(_SET.match(e.name) for e in system.iterdir()):
                shutil.rmtree(system)
                self._geometry.pop(system.name, None)

    def _deduplicate(self, frames: list[_Frame]) -> tuple[list[_Frame], int]:
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
                for set_dir in sorted(p for p in path.iterdir() if _SET.match(p.name)):
                    coords = np.load(set_dir / "coord.npy").reshape(-1, len(types), 3)
                    boxes = np.load(set_dir / "box.npy").reshape(-1, 3, 3)
                    for c, b in zip(coords, boxes):
                        box = b if periodic else None
                        entries.append((c, box, _fingerprint(c, box, types)))
            self._geometry[system] = entries
        return self._geometry[system]

    def _write_sets(self, frames: list[_Frame]) -> tuple[list[dict[str, Any]], list[str]]:
        groups: dict[str, list[_Frame]] = {}
        for frame in frames:
            groups.setdefault(frame.system, []).append(frame)
        records, sets = [], []
        for system, group in groups.items():
            path = self.root / "systems" / system
            _ensure_system(path, group[0])
            numbers = [int(m.group(1)) for p in path.iterdir() if (m := _SET.match(p.name))]
            set_name = f"set.{max(numbers, default=-1) + 1:03d}"
            _write_set(path, set_name, group)
            sets.append(f"{system}/{set_name}")
            records += [{"system": system, "set": set_name, "row": row, **f.record} for row, f in enumerate(group)]
        return records, sets


def collect(config: dict[str, Any] | None, dataset: Path | None, labeled: Sequence[Path], iteration: int,
            workdir: Path) -> Path:
    """Workflow step: the previous dataset plus this iteration's labels, as a new dataset in ``workdir``.

    ``dataset`` (the previous iteration's, may be None) is never modified: its files are
    hard-linked (the store never rewrites a file, so sharing them is safe) or copied.
    ``labeled`` are run-label folders holding per-frame ``task-NNNNNN/`` directories.
    A rerun in the same ``workdir`` starts again from ``dataset``, so nothing is added twice.
    Config keys: ``dedup_tol`` (Å).
    """
    from dpa3_al.label.tasks import read_results

    root = Path(workdir)
    if root.exists():
        for entry in root.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    root.mkdir(parents=True, exist_ok=True)
    if dataset is not None and (Path(dataset) / "index").is_dir():
        shutil.copytree(dataset, root, copy_function=_link_or_copy, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".*"))
    store = LabeledDataset(root, dedup_tol=float((config or {}).get("dedup_tol", 1e-3)))
    for folder in labeled:
        store.add(read_results([Path(folder)]), Provenance(iteration=iteration, source=Path(folder).name))
    return root


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ---------------------------------------------------------------------- frame conversion


def _canonical(item: LabeledFrame | Atoms, provenance: Provenance, stamp: str) -> _Frame:
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
    return _Frame(system=name, type_map=type_map, types=np.array([type_map.index(s) for s in symbols]),
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


def _failure_record(failure: LabelFailure, provenance: Provenance, stamp: str) -> FailureRecord:
    atoms = failure.atoms
    task, step, _ = _origin(atoms.info if atoms is not None else {})
    meta = failure.meta
    return FailureRecord(formula=atoms.get_chemical_formula(mode="hill") if atoms is not None else "?",
                         reason=failure.reason, detail=failure.detail[:2000], workdir=str(failure.workdir),
                         iteration=provenance.iteration, task=task, step=step,
                         labeler=meta.labeler if meta else None, settings_hash=meta.settings_hash if meta else None,
                         time=stamp, source=provenance.source)


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


def _same(frame: _Frame, coords: np.ndarray, box: np.ndarray | None, tol: float) -> bool:
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


# ---------------------------------------------------------------------- npy files


def _ensure_system(path: Path, frame: _Frame) -> None:
    type_text = "\n".join(str(t) for t in frame.types) + "\n"
    map_text = "\n".join(frame.type_map) + "\n"
    if (path / "type.raw").is_file():
        if (path / "type.raw").read_text() != type_text or (path / "type_map.raw").read_text() != map_text:
            raise UserError(f"{path} holds another atom order or type map; the dataset was edited by hand")
        return
    path.mkdir(parents=True, exist_ok=True)
    if frame.box is None:
        atomic_write_text(path / "nopbc", "")
    atomic_write_text(path / "type_map.raw", map_text)
    atomic_write_text(path / "type.raw", type_text)


def _write_set(system: Path, set_name: str, frames: Sequence[_Frame]) -> None:
    """Build the set in a hidden temporary directory, then rename it into place."""
    tmp = system / f".{set_name}.tmp-{os.getpid()}"
    tmp.mkdir()
    arrays = {
        "coord": np.stack([f.coords.reshape(-1) for f in frames]),
        "box": np.stack([(f.box if f.box is not None else np.zeros((3, 3))).reshape(-1) for f in frames]),
        "energy": np.array([f.energy for f in frames]),
        "force": np.stack([f.forces.reshape(-1) for f in frames]),
    }
    if all(f.virial is not None for f in frames):
        arrays["virial"] = np.stack([f.virial.reshape(-1) for f in frames])
    for name, array in arrays.items():
        with open(tmp / f"{name}.npy", "wb") as handle:
            np.save(handle, array.astype(np.float64))
            handle.flush()
            os.fsync(handle.fileno())
    os.rename(tmp, system / set_name)


def _read_set(system: Path, set_name: str) -> list[Atoms]:
    type_map = (system / "type_map.raw").read_text().split()
    types = np.loadtxt(system / "type.raw", dtype=int, ndmin=1)
    periodic = not (system / "nopbc").exists()
    d = system / set_name
    coords = np.load(d / "coord.npy").reshape(-1, len(types), 3)
    boxes = np.load(d / "box.npy").reshape(-1, 3, 3)
    energies = np.load(d / "energy.npy").reshape(-1)
    forces = np.load(d / "force.npy").reshape(-1, len(types), 3)
    virials = np.load(d / "virial.npy").reshape(-1, 3, 3) if (d / "virial.npy").is_file() else None
    return [_atoms([type_map[t] for t in types], coords[i], boxes[i] if periodic else None, energies[i],
                   forces[i], None if virials is None else virials[i]) for i in range(len(coords))]


def _atoms(symbols: list[str], coords: np.ndarray, box: np.ndarray | None, energy: float, forces: np.ndarray,
           virial: np.ndarray | None) -> Atoms:
    atoms = Atoms(symbols, positions=coords, cell=box if box is not None else np.zeros((3, 3)),
                  pbc=box is not None)
    results: dict[str, Any] = {"energy": float(energy), "forces": forces}
    if virial is not None and box is not None:
        results["stress"] = -np.asarray(virial) / atoms.get_volume()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


# ---------------------------------------------------------------------- import


def find_deepmd_systems(root: Path) -> list[Path]:
    """Directories under ``root`` (itself included) that hold a deepmd npy system."""
    root = Path(root)
    found = [root] if (root / "type.raw").is_file() else []
    found += sorted(p.parent for p in root.rglob("type.raw") if p.parent != root)
    return [p for p in found if any(_SET.match(s.name) for s in p.iterdir())]


def read_labeled(path: Path, fmt: str | None = None) -> list[Atoms]:
    """Labeled frames from deepmd npy dirs (recursive), extxyz/xyz files or any dpdata format."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if fmt in (None, "deepmd/npy", "deepmd") and path.is_dir():
        systems = find_deepmd_systems(path)
        if not systems:
            raise InputError(f"{path}: no deepmd npy system (type.raw + set.*/) found; give --fmt for other data")
        return [a for system in systems for s in sorted(p.name for p in system.iterdir() if _SET.match(p.name))
                for a in _read_set(system, s)]
    if fmt in (None, "extxyz", "xyz") and path.suffix in (".xyz", ".extxyz"):
        import ase.io

        frames = ase.io.read(path, index=":")
        missing = [i for i, a in enumerate(frames) if a.calc is None or "forces" not in a.calc.results]
        if missing:
            raise InputError(f"{path}: frames {missing[:10]} have no energy/forces; only labeled frames can be imported")
        return frames
    if fmt is None:
        raise InputError(f"{path}: unknown data format; give --fmt (deepmd/npy, extxyz, or a dpdata format "
                         "such as vasp/outcar, abacus/scf, qe/pw/scf)")
    return _read_dpdata(path, fmt)


def _read_dpdata(path: Path, fmt: str) -> list[Atoms]:
    import dpdata

    try:
        system = dpdata.LabeledSystem(str(path), fmt=fmt)
    except Exception as err:  # noqa: BLE001 - dpdata raises many kinds; report one clear line
        raise InputError(f"{path}: dpdata cannot read it as {fmt!r} ({type(err).__name__}: {err})") from None
    names = system["atom_names"]
    symbols = [names[t] for t in system["atom_types"]]
    virials = system.data.get("virials")
    return [_atoms(symbols, system["coords"][i], None if system.nopbc else system["cells"][i],
                   system["energies"][i], system["forces"][i], None if virials is None else virials[i])
            for i in range(len(system))]
