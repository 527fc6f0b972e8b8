"""A committee of arbitrary ASE calculators with the API of ``dpa3_al.model.CommitteeCalculator``.

Useful to explore with classical or cheap reference potentials and to test the exploration
and selection code without neural networks (e.g. EMT or Lennard-Jones with slightly
different parameters). Deviations come from :func:`dpa3_al.model.model_deviation`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from dpa3_al.model.ensemble import model_deviation


class AseCommittee(Calculator):
    """ASE calculator over M member calculators.

    Args:
        calcs: the member calculators (each gives energy [eV] and forces [eV/Å]; stress
            [eV/Å^3] for periodic cells).
        drive: ``"mean"`` (every calculate() evaluates all members; results are the means
            plus the deviation keys and ``energy_comm``/``forces_comm``/``virial_comm``) or a
            member index ``k`` (calculate() evaluates member k only; :meth:`evaluate_all`
            gives the committee for a frame).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, calcs: Sequence[Calculator], drive: str | int = "mean"):
        super().__init__()
        if drive != "mean" and not (isinstance(drive, int) and 0 <= drive < len(calcs)):
            raise ValueError(f"drive={drive!r}: use 'mean' or a member index in 0..{len(calcs) - 1}")
        self.calcs = list(calcs)
        self.drive = drive
        self.evaluations = 0  # member evaluations so far (for cost accounting in tests/benchmarks)

    def _member(self, k: int, atoms: Atoms) -> dict[str, Any]:
        probe = atoms.copy()
        probe.calc = self.calcs[k]
        if self.calcs[k].calculation_required(probe, ["energy", "forces"]):
            self.evaluations += 1  # a member re-asked for the same positions answers from its cache
        energy = probe.get_potential_energy()
        forces = probe.get_forces()
        stress = probe.get_stress(voigt=False) if atoms.pbc.all() and atoms.cell.rank == 3 else None
        return {"energy": float(energy), "forces": np.array(forces), "stress": stress}

    def evaluate_all(self, atoms: Atoms) -> dict[str, Any]:
        """All members on ``atoms``: committee mean, deviations and per-member arrays."""
        members = [self._member(k, atoms) for k in range(len(self.calcs))]
        energies = np.array([m["energy"] for m in members])
        forces = np.stack([m["forces"] for m in members])
        virials = None
        if all(m["stress"] is not None for m in members):
            virials = np.stack([-m["stress"] * atoms.get_volume() for m in members])
        out: dict[str, Any] = {"energy": float(energies.mean()), "free_energy": float(energies.mean()),
                               "forces": forces.mean(axis=0), "energy_comm": energies, "forces_comm": forces}
        if virials is not None:
            out["virial_comm"] = virials
            out["stress"] = _voigt(-virials.mean(axis=0) / atoms.get_volume())
        out.update(model_deviation(energies, forces, virials))
        return out

    def calculate(self, atoms: Atoms | None = None, properties: Any = None,
                  system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        if self.drive == "mean":
            self.results = self.evaluate_all(self.atoms)
            return
        member = self._member(int(self.drive), self.atoms)
        self.results = {"energy": member["energy"], "free_energy": member["energy"], "forces": member["forces"]}
        if member["stress"] is not None:
            self.results["stress"] = _voigt(member["stress"])


def _voigt(s: np.ndarray) -> np.ndarray:
    """3x3 stress -> Voigt order xx, yy, zz, yz, xz, xy."""
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
