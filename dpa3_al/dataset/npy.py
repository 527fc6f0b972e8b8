"""deepmd npy files: one system per folder (``type.raw``, ``type_map.raw``, ``[nopbc]``,
``set.NNN/{coord,box,energy,force[,virial]}.npy``), as deepmd-kit and dpdata read them.
Units: Å, eV, eV/Å; virial eV."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from dpa3_al.common.errors import UserError
from dpa3_al.label.files import atomic_write_text

from .records import StoredFrame

__all__ = ["SET_RE", "ensure_system", "write_set", "read_set", "labeled_atoms", "find_deepmd_systems", "set_names"]

SET_RE = re.compile(r"^set\.(\d+)$")


def ensure_system(path: Path, frame: StoredFrame) -> None:
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


def write_set(system: Path, set_name: str, frames: Sequence[StoredFrame]) -> None:
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


def read_set(system: Path, set_name: str) -> list[Atoms]:
    type_map = (system / "type_map.raw").read_text().split()
    types = np.loadtxt(system / "type.raw", dtype=int, ndmin=1)
    periodic = not (system / "nopbc").exists()
    d = system / set_name
    coords = np.load(d / "coord.npy").reshape(-1, len(types), 3)
    boxes = np.load(d / "box.npy").reshape(-1, 3, 3)
    energies = np.load(d / "energy.npy").reshape(-1)
    forces = np.load(d / "force.npy").reshape(-1, len(types), 3)
    virials = np.load(d / "virial.npy").reshape(-1, 3, 3) if (d / "virial.npy").is_file() else None
    return [labeled_atoms([type_map[t] for t in types], coords[i], boxes[i] if periodic else None, energies[i],
                   forces[i], None if virials is None else virials[i]) for i in range(len(coords))]


def labeled_atoms(symbols: list[str], coords: np.ndarray, box: np.ndarray | None, energy: float, forces: np.ndarray,
           virial: np.ndarray | None) -> Atoms:
    atoms = Atoms(symbols, positions=coords, cell=box if box is not None else np.zeros((3, 3)),
                  pbc=box is not None)
    results: dict[str, Any] = {"energy": float(energy), "forces": forces}
    if virial is not None and box is not None:
        results["stress"] = -np.asarray(virial) / atoms.get_volume()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def find_deepmd_systems(root: Path) -> list[Path]:
    """Directories under ``root`` (itself included) that hold a deepmd npy system."""
    root = Path(root)
    found = [root] if (root / "type.raw").is_file() else []
    found += sorted(p.parent for p in root.rglob("type.raw") if p.parent != root)
    return [p for p in found if any(SET_RE.match(s.name) for s in p.iterdir())]




def set_names(system: Path) -> list[str]:
    """The ``set.NNN`` folders of a system, in order."""
    return sorted(p.name for p in Path(system).iterdir() if SET_RE.match(p.name))
