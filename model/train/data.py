"""Labeled training data: deepmd-kit's layouts, extended XYZ, and what ASE/dpdata read.

A *system* is a set of frames with the same atoms in the same order (deepmd-kit's unit), a
:class:`DataSystem` (``model/train/system.py``). deepmd-kit's layouts (npy, npy/mixed, raw,
hdf5) are read by ``model/train/deepmd_data.py``, the one reader and system finder of the
project; :func:`load_systems` picks the reader of each path:

- a directory: every deepmd system under it (recognised by its files, no format needed);
- ``*.h5`` / ``*.hdf5`` (optionally ``file.h5#/group``): deepmd/hdf5 systems;
- ``*.xyz`` / ``*.extxyz``: extended XYZ (one system per distinct atom sequence);
- with ``fmt``: that dpdata format (e.g. vasp/outcar, abacus/scf, qe/pw/scf);
- anything else: ASE's reader.

Any bad input is one :class:`InputError` that names the file and what is wrong.
:meth:`DataSystem.model_types` maps a system's elements onto a model's type map by name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from dpa3_al.common.errors import InputError

from .deepmd_data import (DIR_FORMATS, H5_FORMATS, find_npy_systems, is_hdf5_path, read_deepmd_dir,
                          read_deepmd_system, read_hdf5, read_npy_system)
from .system import DataSystem

XYZ_SUFFIXES = (".xyz", ".extxyz")

__all__ = ["DataSystem", "load_systems", "find_npy_systems", "read_npy_system", "read_deepmd_system",
           "read_ase_file", "read_dpdata", "data_elements", "split_validation", "check_finite"]


def load_systems(paths: Sequence[Path | str], fmt: str | None = None) -> list[DataSystem]:
    """Every system under ``paths`` (directories searched recursively; files read by suffix or ``fmt``)."""
    systems: list[DataSystem] = []
    for item in paths:
        path = Path(item)
        h5 = (fmt is None and is_hdf5_path(item)) or fmt in H5_FORMATS
        if not Path(str(item).partition("#")[0] if h5 else item).exists():
            raise InputError(f"{item}: no such file or directory (training data)")
        if h5:
            systems += read_hdf5(item)
        elif path.is_dir() and (fmt is None or fmt in DIR_FORMATS):
            systems += read_deepmd_dir(path)
        elif fmt is None and path.suffix in XYZ_SUFFIXES:
            systems += read_ase_file(path, "extxyz")
        elif fmt is not None:
            systems += [read_dpdata(path, fmt)]
        else:
            systems += read_ase_file(path, None)
    return systems


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
    """Hold out about ``fraction`` of each system's frames (none from systems under 1/fraction frames).

    A frame's side is a property of the frame: it is held out when a hash of (``seed``, its atom types,
    coordinates and cell) falls under ``fraction``. So the split does not move as a dataset grows: the
    loop appends labels to its systems and each member continues from its previous model, and a
    frame it trained on must not turn up in its validation set (which would bias the validation
    error, hence early stopping and the best-model choice, low). The count per system is binomial
    around fraction * frames; frames identical in coordinates fall on the same side.
    """
    train, valid = [], []
    for s in systems:
        if np.floor(fraction * s.n_frames + 1e-9) == 0:
            train.append(s)
            continue
        held = _frame_uniforms(s, seed) < fraction
        if not held.any() or held.all():
            train.append(s)
            continue
        train.append(s.subset(np.flatnonzero(~held)))
        valid.append(s.subset(np.flatnonzero(held), "[validation]"))
    return train, valid


def _frame_uniforms(system: DataSystem, seed: int) -> np.ndarray:
    """(nf,) numbers in [0, 1), one per frame, fixed by ``seed`` and the frame's content (types, coords, cell)."""
    types = np.ascontiguousarray(system.types, dtype=np.int64).tobytes()
    out = np.empty(system.n_frames)
    for i in range(system.n_frames):
        h = hashlib.blake2b(str(seed).encode(), digest_size=8)
        h.update(types)
        h.update(np.ascontiguousarray(system.coords[i], dtype=np.float64).tobytes())
        if system.cells is not None:
            h.update(np.ascontiguousarray(system.cells[i], dtype=np.float64).tobytes())
        out[i] = int.from_bytes(h.digest(), "little") / 2.0**64
    return out
