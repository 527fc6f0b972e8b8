"""``virial`` is an implemented property of the ASE calculators (a 3x3 array in eV, as deepmd-kit's
calculator gives it), consistent with ASE's stress and with the energy's strain derivative."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError

from dpa3_al.model import CommitteeCalculator, DPA3Calculator

from .helpers import random_cluster, random_periodic, tiny_model


def test_virial_is_a_property_and_matches_stress_and_strain_derivative():
    model = tiny_model()
    atoms = random_periodic(n=8, seed=3)
    atoms.calc = DPA3Calculator(model)
    assert "virial" in DPA3Calculator.implemented_properties
    virial = atoms.calc.get_property("virial", atoms)
    assert virial.shape == (3, 3)
    stress = atoms.get_stress(voigt=False)
    assert np.allclose(-0.5 * (virial + virial.T) / atoms.get_volume(), stress, atol=1e-12)
    # W = -dE/d(strain) at zero strain, by central differences (x' = x (1 + eps))
    h = 1e-5
    numeric = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                strained = atoms.copy()
                eps = np.eye(3)
                eps[a, b] += sign * h
                strained.set_cell(atoms.cell.array @ eps, scale_atoms=True)
                strained.calc = DPA3Calculator(model)
                energies.append(strained.get_potential_energy())
            numeric[a, b] = -(energies[0] - energies[1]) / (2 * h)
    assert np.allclose(0.5 * (virial + virial.T), 0.5 * (numeric + numeric.T), atol=1e-6)


def test_virial_of_a_cluster_and_of_a_committee():
    atoms = random_cluster(n=10, seed=2)
    atoms.calc = DPA3Calculator(tiny_model())
    assert atoms.calc.get_property("virial", atoms).shape == (3, 3)      # also without a cell (no stress)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()
    periodic = random_periodic(n=8, seed=1)
    periodic.calc = CommitteeCalculator([tiny_model(seed=0), tiny_model(seed=1)])
    virial = periodic.calc.get_property("virial", periodic)
    assert np.allclose(virial, periodic.calc.results["virial_comm"].mean(axis=0))
