"""The dataset's deepmd npy files: one system per folder (``type.raw``, ``type_map.raw``,
``[nopbc]``, ``set.NNN/{coord,box,energy,force[,virial]}.npy``), as deepmd-kit and dpdata read
them. Writing lives here; reading goes through the project's one deepmd reader and system
finder (``dpa3_al.model.train.deepmd_data``). Units: Å, eV, eV/Å; virial eV."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from dpa3_al.common.errors import UserError
from dpa3_al.model.train.deepmd_data import find_npy_systems as find_deepmd_systems
from dpa3_al.model.train.deepmd_data import read_deepmd_system
from dpa3_al.common.fileio import atomic_write_text, replace_entry

from .records import StoredFrame

__all__ = ["SET_RE", "ensure_system", "write_set", "read_set", "find_deepmd_systems", "set_names"]

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
    replace_entry(tmp, system / set_name)      # a set appears complete or not at all, its entry flushed


def read_set(system: Path, set_name: str) -> list[Atoms]:
    """The labeled frames of one set of a stored system, in row order."""
    return [a for part in read_deepmd_system(system, [set_name]) for a in part.to_atoms()]


def set_names(system: Path) -> list[str]:
    """The ``set.NNN`` folders of a system, in order."""
    return sorted(p.name for p in Path(system).iterdir() if SET_RE.match(p.name))
