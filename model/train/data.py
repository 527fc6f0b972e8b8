"""Labeled training data: deepmd npy systems, extended XYZ, and what ASE/dpdata read.

A *system* is a set of frames with the same atoms in the same order (deepmd-kit's unit)::

    DataSystem(name, elements, types, coords (nf, nat, 3) Å, cells (nf, 3, 3) Å | None,
               energy (nf,) eV, forces (nf, nat, 3) eV/Å, virial (nf, 3, 3) eV, has_virial (nf,))

deepmd npy layout (what dpdata and :class:`dpa3_al.dataset.LabeledDataset` write)::

    system/type.raw          one type index per atom (into type_map.raw, else into the model's map)
    system/type_map.raw      optional element names
    system/nopbc             present for non-periodic frames (box.npy then holds zeros)
    system/set.NNN/{coord,box,energy,force}.npy [virial.npy]

:func:`load_systems` finds systems recursively under directories, reads extxyz files (one
system per distinct atom sequence), and reports any bad input as one :class:`InputError`
that names the file and what is wrong. :meth:`DataSystem.model_types` maps a system's
elements onto a model's type map by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dpa3_al.common.errors import InputError

_SET = re.compile(r"^set\.\d+$")
XYZ_SUFFIXES = (".xyz", ".extxyz")


@dataclass
class DataSystem:
    """One system's frames and labels (float64). ``elements`` None: types index the model's map."""

    name: str
    elements: list[str] | None
    types: np.ndarray            # (nat,) int64
    coords: np.ndarray           # (nf, nat, 3) Å
    cells: np.ndarray | None     # (nf, 3, 3) Å, rows = lattice vectors; None = not periodic
    energy: np.ndarray           # (nf,) eV
    forces: np.ndarray           # (nf, nat, 3) eV/Å
    virial: np.ndarray           # (nf, 3, 3) eV (zeros where has_virial is False)
    has_virial: np.ndarray       # (nf,) bool

    @property
    def n_frames(self) -> int:
        return int(self.coords.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.types.shape[0])

    @property
    def periodic(self) -> bool:
        return self.cells is not None

    def symbols(self, type_map: Sequence[str] | None = None) -> list[str]:
        names = self.elements if self.elements is not None else list(type_map or [])
        return [names[t] for t in self.types]

    def element_set(self) -> set[str] | None:
        return None if self.elements is None else {self.elements[t] for t in np.unique(self.types)}

    def model_types(self, type_map: Sequence[str]) -> np.ndarray:
        """Types as indices into ``type_map`` (by element name); InputError for unknown elements."""
        type_map = list(type_map)
        if self.elements is None:
            if self.types.max(initial=0) >= len(type_map):
                raise InputError(f"{self.name}: type index {int(self.types.max())} in type.raw but the model's type "
                                 f"map {type_map} has {len(type_map)} types (add a type_map.raw naming the elements)")
            return self.types.astype(np.int64)
        missing = sorted(self.element_set() - set(type_map))
        if missing:
            raise InputError(f"{self.name}: element(s) {missing} are not in the model's type map {type_map}; "
                             f"add them to model.type_map (a fine-tune gives new elements new embedding rows)")
        index = np.array([type_map.index(e) if e in type_map else -1 for e in self.elements], dtype=np.int64)
        return index[self.types]

    def subset(self, frames: np.ndarray, suffix: str = "") -> "DataSystem":
        """The frames ``frames`` of this system as a new system."""
        f = np.asarray(frames, dtype=np.int64)
        return DataSystem(self.name + suffix, self.elements, self.types, self.coords[f],
                          None if self.cells is None else self.cells[f], self.energy[f], self.forces[f],
                          self.virial[f], self.has_virial[f])


# ---------------------------------------------------------------------------- discovery


def find_npy_systems(root: Path) -> list[Path]:
    """Directories under ``root`` (itself included) holding a deepmd npy system (type.raw)."""
    root = Path(root)
    found = [root] if (root / "type.raw").is_file() else []
    found += sorted(p.parent for p in root.rglob("type.raw") if p.parent != root
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return found


def load_systems(paths: Sequence[Path | str], fmt: str | None = None) -> list[DataSystem]:
    """Every system under ``paths`` (directories searched recursively; files read by suffix or ``fmt``)."""
    systems: list[DataSystem] = []
    for path in (Path(p) for p in paths):
        if not path.exists():
            raise InputError(f"{path}: no such file or directory (training data)")
        if path.is_dir() and fmt in (None, "deepmd/npy", "deepmd"):
            found = find_npy_systems(path)
            if not found:
                raise InputError(f"{path}: no deepmd npy system (a directory with type.raw and set.*/) found in it")
            systems += [read_npy_system(p) for p in found]
        elif fmt is None and path.suffix in XYZ_SUFFIXES:
            systems += read_ase_file(path, "extxyz")
        elif fmt is not None:
            systems += [read_dpdata(path, fmt)]
        else:
            systems += read_ase_file(path, None)
    return systems


# ---------------------------------------------------------------------------- deepmd npy


def read_npy_system(path: Path) -> DataSystem:
    """One deepmd npy system; InputError naming the file for any missing or inconsistent array."""
    path = Path(path)
    types = _read_types(path / "type.raw")
    elements = None
    if (path / "type_map.raw").is_file():
        elements = (path / "type_map.raw").read_text().split()
        if types.max() >= len(elements):
            raise InputError(f"{path / 'type.raw'}: type index {int(types.max())} but {path / 'type_map.raw'} names "
                             f"only {len(elements)} elements {elements}")
    periodic = not (path / "nopbc").exists()
    sets = sorted(p for p in path.iterdir() if p.is_dir() and _SET.match(p.name))
    if not sets:
        raise InputError(f"{path}: empty system: no set.* directory with frames")
    parts = [_read_set(s, len(types), periodic) for s in sets]
    if sum(p[0].shape[0] for p in parts) == 0:
        raise InputError(f"{path}: empty system: its sets hold 0 frames")
    coords, energy, forces, virial, has_virial = (np.concatenate([p[k] for p in parts]) for k in (0, 2, 3, 4, 5))
    cells = np.concatenate([p[1] for p in parts]) if periodic else None
    return DataSystem(str(path), elements, types, coords, cells, energy, forces, virial, has_virial)


def _read_types(file: Path) -> np.ndarray:
    try:
        raw = file.read_text().split()
        types = np.array([int(t) for t in raw], dtype=np.int64)
    except ValueError:
        raise InputError(f"{file}: expected one integer type index per line") from None
    if types.size == 0:
        raise InputError(f"{file}: empty (a system needs at least one atom)")
    if types.min() < 0:
        raise InputError(f"{file}: negative type index {int(types.min())}")
    return types


def _load(file: Path, required: bool = True) -> np.ndarray | None:
    if not file.is_file():
        if required:
            raise InputError(f"{file}: missing (every set needs coord.npy, box.npy (also for nopbc), energy.npy "
                             f"and force.npy; virial.npy is optional)")
        return None
    try:
        return np.load(file).astype(np.float64)
    except (ValueError, OSError) as err:
        raise InputError(f"{file}: not a readable .npy array ({err})") from None


def _read_set(d: Path, nat: int, periodic: bool):
    """Arrays of one set.NNN, checked: (coords, cells|None, energy, forces, virial, has_virial)."""
    coord = _load(d / "coord.npy")
    nf = coord.shape[0] if coord.ndim >= 1 else 0
    arrays = {"coord": (coord, nat * 3), "energy": (_load(d / "energy.npy"), 1),
              "force": (_load(d / "force.npy"), nat * 3)}
    box = _load(d / "box.npy", required=periodic)
    if box is not None:
        arrays["box"] = (box, 9)
    virial = _load(d / "virial.npy", required=False)
    if virial is not None:
        arrays["virial"] = (virial, 9)
    flat = {}
    for name, (arr, width) in arrays.items():
        if arr.size != nf * width:
            raise InputError(f"{d / (name + '.npy')}: shape {arr.shape} does not fit {nf} frames of {nat} atoms "
                             f"(expected {nf} x {width} values, as coord.npy has {nf} frames)")
        flat[name] = arr.reshape(nf, width)
        bad = ~np.isfinite(flat[name]).all(axis=1)
        if bad.any():
            raise InputError(f"{d / (name + '.npy')}: NaN or infinite values in frame(s) "
                             f"{np.flatnonzero(bad)[:10].tolist()}; remove or relabel these frames")
    cells = flat["box"].reshape(nf, 3, 3) if periodic else None
    if periodic:
        vol = np.abs(np.linalg.det(cells))
        if (vol < 1e-6).any():
            raise InputError(f"{d / 'box.npy'}: zero-volume cell in frame(s) {np.flatnonzero(vol < 1e-6)[:10].tolist()}"
                             f"; for non-periodic data put an empty file 'nopbc' in {d.parent}")
    has_v = np.full(nf, virial is not None)
    vir = flat["virial"].reshape(nf, 3, 3) if virial is not None else np.zeros((nf, 3, 3))
    return (flat["coord"].reshape(nf, nat, 3), cells, flat["energy"].reshape(nf), flat["force"].reshape(nf, nat, 3),
            vir, has_v)


# ---------------------------------------------------------------------------- ASE and dpdata


def read_ase_file(path: Path, fmt: str | None) -> list[DataSystem]:
    """Labeled frames read by ASE, one system per distinct (atom sequence, periodicity)."""
    import ase.io

    try:
        frames = ase.io.read(path, index=":", format=fmt)
    except Exception as err:  # noqa: BLE001 - ASE raises many kinds; one clear line
        raise InputError(f"{path}: ASE cannot read it ({type(err).__name__}: {err}); for other formats set "
                         f"data.fmt to a dpdata format (e.g. vasp/outcar, abacus/scf, qe/pw/scf)") from None
    if not frames:
        raise InputError(f"{path}: no frames")
    groups: dict[tuple, list[int]] = {}
    for i, atoms in enumerate(frames):
        groups.setdefault((tuple(atoms.get_chemical_symbols()), bool(atoms.pbc.any())), []).append(i)
    systems = []
    for k, ((symbols, periodic), idx) in enumerate(groups.items()):
        name = f"{path}" if len(groups) == 1 else f"{path}#{k}"
        systems.append(_system_from_atoms(name, [frames[i] for i in idx], idx, symbols, periodic, path))
    return systems


def _labels(atoms, frame: int, path: Path):
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    energy = results.get("energy", results.get("free_energy", atoms.info.get("energy")))
    forces = results.get("forces", atoms.arrays.get("forces"))
    if energy is None or forces is None:
        raise InputError(f"{path}: frame {frame} has no {'energy' if energy is None else 'forces'}; "
                         f"training needs labeled frames (energy and forces)")
    virial = None
    if "virial" in atoms.info:
        virial = np.asarray(atoms.info["virial"], dtype=np.float64).reshape(3, 3)
    elif "stress" in results and atoms.pbc.all():
        from ase.stress import voigt_6_to_full_3x3_stress

        stress = np.asarray(results["stress"], dtype=np.float64)
        stress = voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress.reshape(3, 3)
        virial = -stress * atoms.get_volume()
    return float(energy), np.asarray(forces, dtype=np.float64), virial


def _system_from_atoms(name, frames, idx, symbols, periodic, path) -> DataSystem:
    elements = sorted(set(symbols), key=symbols.index)
    types = np.array([elements.index(s) for s in symbols], dtype=np.int64)
    labels = [_labels(a, i, path) for a, i in zip(frames, idx)]
    has_v = np.array([lab[2] is not None for lab in labels])
    system = DataSystem(
        name, elements, types, np.stack([a.get_positions() for a in frames]).astype(np.float64),
        np.stack([a.cell.array for a in frames]).astype(np.float64) if periodic else None,
        np.array([lab[0] for lab in labels]), np.stack([lab[1] for lab in labels]),
        np.stack([lab[2] if lab[2] is not None else np.zeros((3, 3)) for lab in labels]), has_v)
    check_finite(system, path)
    return system


def read_dpdata(path: Path, fmt: str) -> DataSystem:
    """A labeled system in any dpdata format (``fmt`` e.g. vasp/outcar, abacus/scf, qe/pw/scf)."""
    import dpdata

    try:
        s = dpdata.LabeledSystem(str(path), fmt=fmt)
    except Exception as err:  # noqa: BLE001 - dpdata raises many kinds
        raise InputError(f"{path}: dpdata cannot read it as {fmt!r} ({type(err).__name__}: {err})") from None
    nf = len(s)
    if nf == 0:
        raise InputError(f"{path}: no frames (dpdata format {fmt!r})")
    virials = s.data.get("virials")
    system = DataSystem(str(path), list(s["atom_names"]), np.asarray(s["atom_types"], dtype=np.int64),
                        np.asarray(s["coords"], dtype=np.float64),
                        None if s.nopbc else np.asarray(s["cells"], dtype=np.float64),
                        np.asarray(s["energies"], dtype=np.float64).reshape(nf),
                        np.asarray(s["forces"], dtype=np.float64),
                        np.zeros((nf, 3, 3)) if virials is None else np.asarray(virials, dtype=np.float64),
                        np.full(nf, virials is not None))
    check_finite(system, path)
    return system


def check_finite(system: DataSystem, path: Path) -> None:
    for name in ("coords", "energy", "forces", "virial"):
        arr = getattr(system, name).reshape(system.n_frames, -1)
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise InputError(f"{path}: NaN or infinite {name} in frame(s) {np.flatnonzero(bad)[:10].tolist()}")


# ---------------------------------------------------------------------------- helpers


def data_elements(systems: Sequence[DataSystem]) -> list[str]:
    """Elements present in ``systems``, sorted by atomic number (systems without names are skipped)."""
    from ase.data import atomic_numbers

    names: set[str] = set()
    for s in systems:
        names |= s.element_set() or set()
    unknown = sorted(n for n in names if n not in atomic_numbers)
    if unknown:
        raise InputError(f"type_map.raw names {unknown}, which are not element symbols")
    return sorted(names, key=lambda e: atomic_numbers[e])


def split_validation(systems: Sequence[DataSystem], fraction: float, seed: int,
                     ) -> tuple[list[DataSystem], list[DataSystem]]:
    """Hold out floor(fraction * nf) random frames of each system (none from systems under 1/fraction frames)."""
    rng = np.random.default_rng(seed)
    train, valid = [], []
    for s in systems:
        n_val = int(np.floor(fraction * s.n_frames + 1e-9))
        if n_val == 0 or n_val >= s.n_frames:
            train.append(s)
            continue
        perm = rng.permutation(s.n_frames)
        train.append(s.subset(np.sort(perm[n_val:])))
        valid.append(s.subset(np.sort(perm[:n_val]), "[validation]"))
    return train, valid
