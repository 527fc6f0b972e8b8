"""ASE calculators: single model, committee deviations, checkpoints, bad input."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.md.verlet import VelocityVerlet

from dpa3_al.model import (CheckpointError, CommitteeCalculator, DPA3Calculator, InputError, load_model,
                           model_deviation, save_model)

from .helpers import evaluate, random_periodic, tiny_model


def test_calculator_matches_model_and_ase_conventions(water_atoms, tmp_path):
    model = tiny_model(e_rcut=6.0, e_rcut_smth=5.3, a_rcut=4.0, a_rcut_smth=3.5)
    path = save_model(model, tmp_path / "m.pt")
    calc = DPA3Calculator(path)
    atoms = water_atoms
    atoms.calc = calc
    e, f, v = evaluate(model, atoms)
    assert atoms.get_potential_energy() == pytest.approx(e, abs=1e-9)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(e, abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), f, atol=1e-10)
    np.testing.assert_allclose(atoms.get_potential_energies().sum(), e, atol=1e-8)
    s = -0.5 * (v + v.T) / atoms.get_volume()
    np.testing.assert_allclose(atoms.get_stress(), [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]], atol=1e-12)


def test_calculator_passes_ase_gradient_tests():
    """ASE's gradient_test check (forces vs finite differences) with and without a cell filter."""
    from ase.calculators.fd import calculate_numerical_forces
    from ase.filters import FrechetCellFilter

    atoms = random_periodic(4, seed=31)
    atoms.calc = DPA3Calculator(tiny_model())
    for obj in (atoms, FrechetCellFilter(atoms)):
        np.testing.assert_allclose(obj.get_forces(), calculate_numerical_forces(obj, eps=1e-5), atol=1e-6)


def test_no_stress_without_cell():
    from ase.calculators.calculator import PropertyNotImplementedError

    atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    atoms.calc = DPA3Calculator(tiny_model())
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_committee_deviation_equals_numpy_from_individual_models():
    models = [tiny_model(seed=s) for s in range(4)]
    atoms = random_periodic(9, seed=32)
    comm = CommitteeCalculator(models)
    atoms.calc = comm
    forces_mean = atoms.get_forces()
    evals = [evaluate(m, atoms) for m in models]
    E = np.array([x[0] for x in evals])
    F = np.stack([x[1] for x in evals])
    V = np.stack([x[2] for x in evals])
    n = len(atoms)
    d = np.sqrt(((F - F.mean(0)) ** 2).sum(-1).mean(0))
    s = (V / n).reshape(4, 9).std(0)
    expected = {"max_devi_f": d.max(), "min_devi_f": d.min(), "avg_devi_f": d.mean(), "devi_e": (E / n).std(),
                "max_devi_v": s.max(), "min_devi_v": s.min(), "avg_devi_v": np.linalg.norm(s) / 3}
    for key, value in expected.items():
        assert comm.results[key] == pytest.approx(value, rel=1e-10, abs=1e-14), key
    np.testing.assert_allclose(forces_mean, F.mean(0), atol=1e-12)
    assert atoms.get_potential_energy() == pytest.approx(E.mean(), abs=1e-10)
    assert model_deviation(E, F, V) == pytest.approx(expected)


def test_identical_models_have_zero_deviation_and_drive_mode_reuses_driver(tmp_path):
    model = tiny_model(seed=3)
    paths = [save_model(model, tmp_path / f"m{i}.pt") for i in range(3)]
    atoms = random_periodic(8, seed=33)
    comm = CommitteeCalculator(paths, drive=0)
    atoms.calc = comm
    f0 = atoms.get_forces()
    res = comm.evaluate_all(atoms)
    for key in ("max_devi_f", "avg_devi_f", "devi_e", "max_devi_v"):
        assert res[key] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(res["forces_comm"][0], f0, atol=0)


def test_committee_drives_md():
    atoms = random_periodic(6, seed=34)
    atoms.calc = CommitteeCalculator([tiny_model(seed=1), tiny_model(seed=2)], drive=1)
    VelocityVerlet(atoms, timestep=0.5 * 0.09822694788464063).run(3)   # 0.5 fs in ASE units
    assert np.isfinite(atoms.get_potential_energy())


def test_checkpoint_round_trip_and_metadata(tmp_path):
    model = tiny_model(seed=5, use_exp_switch=True)
    path = save_model(model, tmp_path / "sub" / "model.pt", metadata={"training": {"steps": 7}})
    again = load_model(path)
    atoms = random_periodic(5, seed=35)
    assert evaluate(again, atoms)[0] == evaluate(model, atoms)[0]
    assert again.metadata["training"]["steps"] == 7 and again.config == model.config
    assert not list((tmp_path / "sub").glob("*.tmp"))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "dpa3-al-model" and raw["config"]["type_map"] == ["O", "H"]


def test_bad_inputs_give_clear_errors(tmp_path):
    calc = DPA3Calculator(tiny_model())
    with pytest.raises(InputError, match=r"\['Cu'\].*type map \['O', 'H'\]"):
        calc.get_potential_energy(Atoms("OCu", positions=[[0, 0, 0], [2, 0, 0]]))
    with pytest.raises(InputError, match="atoms 0 and 1 are 0.05 Å apart"):
        calc.get_potential_energy(Atoms("OH", positions=[[0, 0, 0], [0.05, 0, 0]]))
    with pytest.raises(InputError, match=r"non-finite coordinates for atoms \[1\]"):
        calc.get_potential_energy(Atoms("OH", positions=[[0, 0, 0], [np.nan, 0, 0]]))


def test_bad_checkpoints_give_clear_errors(tmp_path, data_dir):
    good = data_dir / "dpa3-reference" / "small" / "model.ckpt.pt"
    broken = tmp_path / "broken.pt"
    broken.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupted, truncated"):
        load_model(broken)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "missing.pt")
    ck = torch.load(good, weights_only=True)
    ck["model"]["_extra_state"]["model_params"]["descriptor"]["type"] = "dpa2"
    torch.save(ck, tmp_path / "dpa2.pt")
    with pytest.raises(CheckpointError, match="descriptor type 'dpa2' is not supported"):
        load_model(tmp_path / "dpa2.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_model(tmp_path / "other.pt")
