"""One labeled *system*: frames with the same atoms in the same order (deepmd-kit's unit).

Units: coordinates and cells Å (cells as row vectors), energy eV, forces eV/Å, virial eV.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dpa3_al.common.errors import InputError


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

    def to_atoms(self, labels: bool = True) -> list:
        """The frames as ASE Atoms with their labels (a SinglePointCalculator: energy, forces and,
        where a virial is labeled and the frame periodic, stress = -virial / volume); structures
        only with ``labels=False``."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        if self.elements is None:
            raise InputError(f"{self.name}: no element names (type.raw without type_map.raw); add a type_map.raw "
                             "listing the element of each type index")
        symbols = self.symbols()
        frames = []
        for i in range(self.n_frames):
            cell = self.cells[i] if self.cells is not None else np.zeros((3, 3))
            atoms = Atoms(symbols, positions=self.coords[i], cell=cell, pbc=self.cells is not None)
            frames.append(atoms)
            if not labels:
                continue
            results = {"energy": float(self.energy[i]), "forces": self.forces[i].copy()}
            if self.has_virial[i] and self.cells is not None:
                results["stress"] = -self.virial[i] / atoms.get_volume()
            atoms.calc = SinglePointCalculator(atoms, **results)
        return frames
