"""Readers of labeled data in other layouts: deepmd npy folders (searched recursively),
extxyz/xyz files with energies and forces, and any dpdata format (``vasp/outcar``,
``abacus/scf``, ``qe/pw/scf``...). Units: eV, Å."""

from __future__ import annotations

from pathlib import Path

from ase import Atoms

from dpa3_al.common.errors import InputError

from .npy import find_deepmd_systems, labeled_atoms, read_set, set_names

__all__ = ["read_labeled"]


def read_labeled(path: Path, fmt: str | None = None) -> list[Atoms]:
    """Labeled frames from deepmd npy dirs (recursive), extxyz/xyz files or any dpdata format."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if fmt in (None, "deepmd/npy", "deepmd") and path.is_dir():
        systems = find_deepmd_systems(path)
        if not systems:
            raise InputError(f"{path}: no deepmd npy system (type.raw + set.*/) found; give --fmt for other data")
        return [a for system in systems for s in set_names(system) for a in read_set(system, s)]
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
    return [labeled_atoms(symbols, system["coords"][i], None if system.nopbc else system["cells"][i],
                   system["energies"][i], system["forces"][i], None if virials is None else virials[i])
            for i in range(len(system))]
