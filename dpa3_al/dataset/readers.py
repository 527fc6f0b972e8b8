"""Readers of labeled data to import: deepmd-kit systems (npy, npy/mixed, raw: directories
searched recursively; hdf5 files), extxyz/xyz files with energies and forces, and any dpdata
format (``vasp/outcar``, ``abacus/scf``, ``qe/pw/scf``...). deepmd-kit's layouts and dpdata go
through the project's one reader (``dpa3_al.model.train.data.load_systems``). Units: eV, Å."""

from __future__ import annotations

from pathlib import Path

from ase import Atoms

from dpa3_al.common.errors import InputError
from dpa3_al.model.train.data import load_systems
from dpa3_al.model.train.deepmd_data import DIR_FORMATS, H5_FORMATS, is_hdf5_path

__all__ = ["read_labeled"]


def read_labeled(path: Path, fmt: str | None = None) -> list[Atoms]:
    """Labeled frames from deepmd systems (directories, recursive; .h5 files), extxyz/xyz files or a dpdata format."""
    path = Path(path)
    h5 = is_hdf5_path(path) or fmt in H5_FORMATS
    if not Path(str(path).partition("#")[0] if h5 else path).exists():
        raise FileNotFoundError(f"{path} does not exist")
    if fmt in (None, "extxyz", "xyz") and path.suffix in (".xyz", ".extxyz"):
        import ase.io

        frames = ase.io.read(path, index=":")
        missing = [i for i, a in enumerate(frames) if a.calc is None or "forces" not in a.calc.results]
        if missing:
            raise InputError(f"{path}: frames {missing[:10]} have no energy/forces; only labeled frames can be imported")
        return frames
    deepmd = h5 or (path.is_dir() and fmt in (None, *DIR_FORMATS))
    if fmt is None and not deepmd:
        raise InputError(f"{path}: unknown data format; give --fmt (a dpdata format such as vasp/outcar, "
                         "abacus/scf, qe/pw/scf), or a deepmd system directory, .h5 or .extxyz file")
    return [atoms for system in load_systems([path], fmt) for atoms in system.to_atoms()]
