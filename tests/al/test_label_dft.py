"""Quantum ESPRESSO and CP2K labelers against ASE's own runs of the same input.

pw.x and cp2k_shell are installed by scripts/setup-env.sh (Debian quantum-espresso, cp2k).
Where they are missing the tests fail, except for a non-root user who cannot apt-get them:
then they skip and say what to install.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from dpa3_al.label import LabeledFrame, LabelerUnavailable, make_labeler
from dpa3_al.label.kpoints import kpoint_grid

pytestmark = pytest.mark.dft

PSEUDO_DIR = "/usr/share/espresso/pseudo"


def require(program: str, package: str) -> None:
    """Fail (root or CI: the set-up should have installed it) or skip (a user who cannot)."""
    found = Path(program).is_file() if program.startswith("/") else shutil.which(program)
    if found:
        return
    if os.geteuid() == 0 or os.environ.get("CI"):
        pytest.fail(f"{program} is missing; scripts/setup-env.sh installs it (apt-get install {package})")
    pytest.skip(f"{program} not installed and not root: apt-get install {package} to run this test")


def require_qe() -> None:
    """pw.x and the Debian pseudopotentials (a separate package that --no-install-recommends skips)."""
    require("pw.x", "quantum-espresso")
    require(f"{PSEUDO_DIR}/Si.pbe-rrkj.UPF", "quantum-espresso-data")


def si_cell(seed: int = 1) -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.05, seed=seed)
    return atoms


QE = {"kind": "espresso", "timeout": 120,
      "espresso": {"pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}, "ecutwfc": 12.0, "kspacing": 0.6}}


def test_espresso_labels_si2_like_ases_own_espresso_run(tmp_path):
    require_qe()
    from ase.calculators.espresso import Espresso, EspressoProfile

    atoms = si_cell()
    (result,) = make_labeler(QE).label([atoms], tmp_path / "label")
    assert isinstance(result, LabeledFrame), result
    assert (result.meta.task_dir / "espresso.pwo").is_file()

    grid = kpoint_grid(atoms, 0.6)
    assert grid == (4, 4, 4)
    reference = atoms.copy()
    reference.calc = Espresso(profile=EspressoProfile(command="pw.x", pseudo_dir=PSEUDO_DIR),
                              directory=str(tmp_path / "ase"), pseudopotentials={"Si": "Si.pbe-rrkj.UPF"},
                              input_data={"control": {"tprnfor": True, "tstress": True},
                                          "system": {"ecutwfc": 12.0}}, kpts=grid)
    assert result.energy == pytest.approx(reference.get_potential_energy(), abs=1e-6)
    np.testing.assert_allclose(result.forces, reference.get_forces(), atol=1e-5)
    np.testing.assert_allclose(result.virial, -reference.get_stress(voigt=False) * atoms.get_volume(), atol=1e-4)
    assert np.abs(result.forces).max() > 0.1, "a rattled cell has forces"


def test_espresso_unconverged_scf_and_bad_setup(tmp_path):
    require_qe()
    config = {**QE, "espresso": {**QE["espresso"], "input_data": {"electron_maxstep": 2}}}
    (result,) = make_labeler(config).label([si_cell()], tmp_path / "label")
    assert result.reason == "scf_not_converged", result.detail
    assert "convergence NOT achieved" in result.detail

    no_pseudo = {**QE, "espresso": {**QE["espresso"], "pseudopotentials": {}}}
    with pytest.raises(LabelerUnavailable, match=r"no entry for Si; add one of the files .* e.g. Si: Si\."):
        make_labeler(no_pseudo).label([si_cell()], tmp_path / "x")
    wrong_file = {**QE, "espresso": {**QE["espresso"], "pseudopotentials": {"Si": "Si.missing.UPF"}}}
    with pytest.raises(LabelerUnavailable, match="Si.missing.UPF does not exist"):
        make_labeler(wrong_file).check({"Si"})
    with pytest.raises(LabelerUnavailable, match=r"program 'pw-nowhere.x' not found.*quantum-espresso"):
        make_labeler({**QE, "command": "pw-nowhere.x"}).check({"Si"})
    assert not (tmp_path / "x").exists()


def h2_box() -> Atoms:
    return Atoms("H2", positions=[[0, 0, 0], [0.76, 0.02, 0.01]], cell=[4.0, 4.0, 4.0], pbc=True)


CP2K_CONFIG = {"kind": "cp2k", "timeout": 120, "cp2k": {"cutoff": 150.0, "basis_set": "SZV-MOLOPT-SR-GTH"}}


def test_cp2k_labels_h2_like_ases_own_cp2k_run(tmp_path):
    require("cp2k_shell", "cp2k")
    from ase.calculators.cp2k import CP2K
    from ase.units import Rydberg

    atoms = h2_box()
    (result,) = make_labeler(CP2K_CONFIG).label([atoms], tmp_path / "label")
    assert isinstance(result, LabeledFrame), result
    reference = atoms.copy()
    with CP2K(command="cp2k_shell", directory=str(tmp_path / "ase"), xc="PBE", cutoff=150 * Rydberg,
              basis_set="SZV-MOLOPT-SR-GTH", max_scf=50, print_level="LOW") as calc:
        reference.calc = calc
        energy, forces = reference.get_potential_energy(), reference.get_forces()
        stress = reference.get_stress(voigt=False)
    assert result.energy == pytest.approx(energy, abs=1e-6)
    np.testing.assert_allclose(result.forces, forces, atol=1e-5)
    np.testing.assert_allclose(result.virial, -stress * atoms.get_volume(), atol=1e-4)


def test_cp2k_unconverged_scf_and_unknown_basis(tmp_path):
    require("cp2k_shell", "cp2k")
    config = {**CP2K_CONFIG, "cp2k": {**CP2K_CONFIG["cp2k"], "max_scf": 2}}
    (result,) = make_labeler(config).label([h2_box()], tmp_path / "label")
    assert result.reason == "scf_not_converged", result.detail
    with pytest.raises(LabelerUnavailable, match="'SZV-MOLOPT-SR-GTH' in .*BASIS_MOLOPT has no entry for Np"):
        make_labeler(CP2K_CONFIG).check({"H", "Np"})
