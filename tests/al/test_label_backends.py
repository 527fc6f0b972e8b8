"""In-process labelers (tblite, ase, pyscf, model) against direct ASE calls; config and check errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk, molecule

from dpa3_al.label import LabelConfig, LabeledFrame, LabelerUnavailable, make_labeler
from dpa3_al.common.typed_config import ConfigError, from_dict


def water_frames(n: int = 3) -> list:
    frames = []
    for i in range(n):
        atoms = molecule("H2O")
        atoms.rattle(0.05, seed=i)
        atoms.info.update(task="task-000001", step=10 * i, temperature=300.0)
        frames.append(atoms)
    return frames


def test_tblite_labels_of_water_equal_direct_ase_calls(tmp_path):
    from tblite.ase import TBLite

    frames = water_frames(3)
    periodic = frames[0].copy()
    periodic.set_cell([6.0, 6.5, 7.0])
    periodic.pbc = True
    frames.append(periodic)
    results = make_labeler({"kind": "tblite"}).label(frames, tmp_path / "label")
    for atoms, result in zip(frames, results):
        assert isinstance(result, LabeledFrame), result
        direct = atoms.copy()
        direct.calc = TBLite(method="GFN2-xTB", verbosity=0)
        assert result.energy == pytest.approx(direct.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(result.forces, direct.get_forces(), atol=1e-7)
        if atoms.pbc.all():
            np.testing.assert_allclose(result.virial, -direct.get_stress(voigt=False) * direct.get_volume(), atol=1e-7)
        else:
            assert result.virial is None
        assert result.atoms.info["step"] == atoms.info["step"]
        assert result.meta.labeler == "tblite" and len(result.meta.settings_hash) == 12
        status = json.loads((result.meta.task_dir / "status.json").read_text())
        assert status["status"] == "ok" and (result.meta.task_dir / "result.extxyz").is_file()


def test_tblite_unconverged_scf_is_a_failure_not_a_label(tmp_path):
    config = {"kind": "tblite", "tblite": {"max_iterations": 2}}
    (result,) = make_labeler(config).label(water_frames(1), tmp_path / "label")
    assert result.reason == "scf_not_converged", result.detail


def test_ase_labeler_with_emt_on_cu_equals_direct_emt(tmp_path):
    from ase.calculators.emt import EMT

    frames = []
    for i in range(3):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
        atoms.rattle(0.05, seed=i)
        frames.append(atoms)
    config = {"kind": "ase", "ase": {"calculator": "ase.calculators.emt.EMT", "kwargs": {"asap_cutoff": False}}}
    results = make_labeler(config).label(frames, tmp_path / "label", first_index=7)
    assert [r.meta.task_dir.name for r in results] == ["task-000007", "task-000008", "task-000009"]
    for atoms, result in zip(frames, results):
        direct = atoms.copy()
        direct.calc = EMT()
        assert result.energy == pytest.approx(direct.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(result.forces, direct.get_forces(), atol=1e-12)
        np.testing.assert_allclose(result.virial, -direct.get_stress(voigt=False) * direct.get_volume(), atol=1e-12)


def test_pyscf_molecule_equals_direct_pyscf(tmp_path):
    from ase.units import Bohr, Hartree
    from pyscf import dft, gto

    atoms = water_frames(1)[0]
    config = {"kind": "pyscf", "pyscf": {"xc": "LDA", "basis": "sto-3g"}}
    (result,) = make_labeler(config).label([atoms], tmp_path / "label")
    mol = gto.M(atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)], basis="sto-3g",
                unit="Angstrom", verbose=0)
    mf = dft.RKS(mol)
    mf.xc, mf.conv_tol = "LDA", 1e-9
    energy = mf.kernel()
    grad = mf.nuc_grad_method().kernel()
    assert result.energy == pytest.approx(energy * Hartree, abs=1e-6)
    np.testing.assert_allclose(result.forces, -grad * Hartree / Bohr, atol=1e-5)


def test_pyscf_periodic_virial_matches_finite_differences(tmp_path):
    """Units and sign of PySCF's stress: virial_xx = -dE/d(strain_xx)."""
    from ase import Atoms

    cell = Atoms("H2", positions=[[0.1, 0.2, 0.3], [0.85, 0.23, 0.32]], cell=[3.0, 3.2, 3.1], pbc=True)
    eps = 2e-3
    strained = []
    for sign in (1, -1):
        atoms = cell.copy()
        atoms.set_cell(cell.cell.array * np.array([[1 + sign * eps], [1], [1]]), scale_atoms=True)
        strained.append(atoms)
    config = {"kind": "pyscf", "pyscf": {"basis": "gth-szv", "pseudo": "gth-pade", "xc": "LDA", "ke_cutoff": 80}}
    result, plus, minus = make_labeler(config).label([cell, *strained], tmp_path / "label")
    assert result.virial[0, 0] == pytest.approx(-(plus.energy - minus.energy) / (2 * eps), abs=2e-3)
    assert np.abs(result.forces.sum(axis=0)).max() < 0.1


def test_pyscf_unconverged_scf_is_reported(tmp_path):
    config = {"kind": "pyscf", "pyscf": {"xc": "LDA", "basis": "sto-3g", "max_cycle": 1}}
    (result,) = make_labeler(config).label(water_frames(1), tmp_path / "label")
    assert result.reason == "scf_not_converged"


def test_unknown_labeler_and_stray_sections_are_config_errors():
    with pytest.raises(ConfigError, match=r"label.kind: 'tblit' is not one of .*did you mean 'tblite'"):
        from_dict(LabelConfig, {"kind": "tblit"}, path="label")
    with pytest.raises(ConfigError, match=r"label.pyscf: settings for 'pyscf' are given but kind is 'tblite'"):
        from_dict(LabelConfig, {"kind": "tblite", "pyscf": {"xc": "PBE0"}}, path="label")
    with pytest.raises(ConfigError, match="label.command: kind 'vasp' needs the command"):
        make_labeler({"kind": "vasp"})
    config = from_dict(LabelConfig, {"kind": "espresso", "mpi": "mpirun -np 4", "command": ["pw.x", "-nk", "2"]})
    assert config.mpi == ("mpirun", "-np", "4") and config.argv == ("pw.x", "-nk", "2")
    from dpa3_al.label import labeler_class

    with pytest.raises(LabelerUnavailable, match="unknown labeler 'orca'; valid kinds: tblite, pyscf"):
        labeler_class("orca")


def test_unsupported_elements_and_bad_imports_fail_before_any_work(tmp_path):
    gold = bulk("Au", cubic=True)
    gold[0].symbol = "Ir"
    with pytest.raises(LabelerUnavailable, match="no EMT parameters for Ir"):
        make_labeler({"kind": "ase"}).label([gold], tmp_path / "a")
    uranium = molecule("H2O")
    uranium[0].symbol = "U"
    with pytest.raises(LabelerUnavailable, match=r"up to Rn \(Z=86\).*U"):
        make_labeler({"kind": "tblite"}).label([uranium], tmp_path / "b")
    with pytest.raises(LabelerUnavailable, match="cannot import 'ase.calculators.nope.Nope'"):
        make_labeler({"kind": "ase", "ase": {"calculator": "ase.calculators.nope.Nope"}}).check({"Cu"})
    with pytest.raises(LabelerUnavailable, match="basis 'sto-3g' has no functions for U"):
        make_labeler({"kind": "pyscf", "pyscf": {"basis": "sto-3g"}}).check({"H", "U"})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_teacher_checkpoint_is_reported_up_front(tmp_path):
    labeler = make_labeler({"kind": "model", "model": {"checkpoint": str(tmp_path / "teacher.pt")}})
    with pytest.raises(LabelerUnavailable, match="teacher.pt does not exist"):
        labeler.check({"Cu"})


def test_model_labeler_equals_the_teacher_calculator(tmp_path):
    from dpa3_al.model import DPA3Calculator, ModelConfig, build_model, save_model

    path = tmp_path / "teacher.pt"
    save_model(build_model(ModelConfig.tiny(type_map=["Cu"]), seed=0), path)
    frames = []
    for i in range(2):
        atoms = bulk("Cu", cubic=True)
        atoms.rattle(0.05, seed=i)
        frames.append(atoms)
    labeler = make_labeler({"kind": "model", "model": {"checkpoint": str(path)}})
    with pytest.raises(LabelerUnavailable, match="does not know O"):
        labeler.check({"Cu", "O"})
    results = labeler.label(frames, tmp_path / "label")
    calc = DPA3Calculator(str(path))
    for atoms, result in zip(frames, results):
        direct = atoms.copy()
        direct.calc = calc
        assert result.energy == pytest.approx(direct.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(result.forces, direct.get_forces(), atol=1e-6)
        np.testing.assert_allclose(result.virial, -direct.get_stress(voigt=False) * direct.get_volume(), atol=1e-6)
