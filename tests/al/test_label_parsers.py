"""VASP and ABACUS labelers on shipped real outputs (tests/data/label, see its README).

The programs are not available here, so a stand-in command copies the shipped output into
the task directory; everything else (inputs, running, parsing, checks) is the real code path.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms

from dpa3_al.label import LabeledFrame, LabelerUnavailable, make_labeler
from dpa3_al.label.abacus import parse_abacus_output
from dpa3_al.label.external import grouped_order
from dpa3_al.label.results import LabelError
from dpa3_al.label.vasp import parse_outcar

DATA = Path(__file__).parents[1] / "data" / "label"


def copy_command(tmp_path: Path, source: Path, target: str) -> list[str]:
    """argv of a stand-in program that copies ``source`` to ``target`` in its working directory."""
    script = tmp_path / "fake_program.py"
    script.write_text("import os, shutil, sys\n"
                      "os.makedirs(os.path.dirname(sys.argv[2]) or '.', exist_ok=True)\n"
                      "shutil.copy(sys.argv[1], sys.argv[2])\n")
    return [sys.executable, str(script), str(source), target]


def fake_potcars(tmp_path: Path, elements: list[str]) -> Path:
    for element in elements:
        (tmp_path / "potcars" / element).mkdir(parents=True)
        (tmp_path / "potcars" / element / "POTCAR").write_text(f"fake POTCAR for {element}\n")
    return tmp_path / "potcars"


def test_outcar_parser_reads_the_free_energy_forces_and_stress():
    computed, positions = parse_outcar(DATA / "vasp-ni18" / "OUTCAR")
    assert computed["energy"] == pytest.approx(-68.22868532)  # free energy TOTEN, not energy(sigma->0)
    assert computed["forces"].shape == (18, 3)
    np.testing.assert_allclose(computed["forces"][2], [-2.152142, -0.601239, -0.175921])
    # 'in kB  -4.29429 -4.58894 -4.50342 0.50047 -0.94049 0.36481' (VASP: positive = compressive)
    assert computed["stress"][0] == pytest.approx(4.29429 * 1e-1 / 160.21766208, rel=1e-5)
    np.testing.assert_allclose(positions[1], [16.82152, 15.71963, 17.66895])


def test_outcar_with_all_nelm_steps_used_is_unconverged(tmp_path):
    with pytest.raises(LabelError) as err:
        parse_outcar(DATA / "vasp-ch4" / "OUTCAR")  # NELM = 1, VASP 5 prints no warning then
    assert err.value.reason == "scf_not_converged" and "NELM=1" in err.value.detail
    # VASP 6 marks the same situation explicitly (marker text as printed by VASP 6)
    text = (DATA / "vasp-ni18" / "OUTCAR").read_text().replace(
        "aborting loop because EDIFF is reached", "aborting loop EDIFF was not reached (unconverged)")
    (tmp_path / "OUTCAR").write_text(text)
    with pytest.raises(LabelError, match="EDIFF was not reached"):
        parse_outcar(tmp_path / "OUTCAR")
    truncated = text[: text.index("Iteration")]
    (tmp_path / "OUTCAR").write_text(truncated)
    with pytest.raises(LabelError) as err:
        parse_outcar(tmp_path / "OUTCAR")
    assert err.value.reason == "missing_output"


def vasp_config(tmp_path: Path, command: list[str]) -> dict:
    return {"kind": "vasp", "command": command, "timeout": 60,
            "vasp": {"kspacing": 0.5, "potcar_dir": str(fake_potcars(tmp_path, ["Ni", "O", "H"])), "incar": {"ENCUT": 300, "LREAL": "Auto",
                                                                                       "LASPH": True}}}


def test_vasp_labeler_writes_inputs_runs_the_command_and_parses_outcar(tmp_path):
    outcar = DATA / "vasp-ni18" / "OUTCAR"
    frame = ase.io.read(outcar, format="vasp-out")
    frame = Atoms(frame.get_chemical_symbols(), positions=frame.positions, cell=frame.cell, pbc=True)
    config = vasp_config(tmp_path, copy_command(tmp_path, outcar, "OUTCAR"))
    (result,) = make_labeler(config).label([frame], tmp_path / "label")
    assert isinstance(result, LabeledFrame), result
    assert result.energy == pytest.approx(-68.22868532)
    task = result.meta.task_dir
    incar = (task / "INCAR").read_text()
    assert "NSW = 0" in incar and "IBRION = -1" in incar and "LASPH = .TRUE." in incar and "ENCUT = 300" in incar
    assert (task / "POTCAR").read_text() == "fake POTCAR for Ni\n"
    assert (task / "KPOINTS").read_text().splitlines()[2:4] == ["Gamma", "1 1 1"]
    assert ase.io.read(task / "POSCAR").get_chemical_symbols() == ["Ni"] * 18

    moved = frame.copy()
    moved.positions[0] += 0.5
    (stale,) = make_labeler(config).label([moved], tmp_path / "stale")
    assert stale.reason == "missing_output" and "another structure" in stale.detail


def test_vasp_species_grouping_is_undone_for_the_forces(tmp_path, monkeypatch):
    """POSCAR groups species; the forces must come back in the frame's own atom order."""
    import dpa3_al.label.vasp as vasp

    def fake_parse(path: Path):
        grouped = ase.io.read(path.parent / "POSCAR")
        return {"energy": 1.0, "forces": grouped.positions.copy()}, grouped.positions

    monkeypatch.setattr(vasp, "parse_outcar", fake_parse)
    frame = Atoms("OH2NiOH", positions=np.arange(18.0).reshape(6, 3) * 0.7, cell=[9, 9, 9], pbc=True)
    assert grouped_order(frame.get_chemical_symbols()).tolist() == [0, 4, 1, 2, 5, 3]
    command = [sys.executable, "-c", "open('OUTCAR', 'w').write('stand-in')"]
    (result,) = make_labeler(vasp_config(tmp_path, command)).label([frame], tmp_path / "label")
    np.testing.assert_allclose(result.forces, frame.positions, atol=1e-6)
    assert (result.meta.task_dir / "POTCAR").read_text() == "fake POTCAR for O\nfake POTCAR for H\nfake POTCAR for Ni\n"


def test_vasp_missing_potcar_and_program_are_reported_up_front(tmp_path):
    config = vasp_config(tmp_path, ["vasp_std_not_here"])
    with pytest.raises(LabelerUnavailable, match="program 'vasp_std_not_here' not found"):
        make_labeler(config).check({"Ni"})
    config["command"] = [sys.executable]
    with pytest.raises(LabelerUnavailable, match=r"no POTCAR for Fe at .*potcars/Fe/POTCAR"):
        make_labeler(config).check({"Ni", "Fe"})


def test_abacus_parser_and_labeler_on_a_shipped_ch4_run(tmp_path):
    source = DATA / "abacus-ch4"
    computed, positions = parse_abacus_output(source)
    assert computed["energy"] == pytest.approx(-219.6499140427659)
    np.testing.assert_allclose(computed["forces"][1], [0.292544, 0.119474, 0.337774])
    # TOTAL-STRESS xx = +17.95102076 kbar is pressure-like: ASE stress is its negative
    assert computed["stress"][0, 0] == pytest.approx(-17.95102076 * 1e-1 / 160.21766208, rel=1e-6)

    frame = Atoms("CH4", positions=positions, cell=np.eye(3) * 5.29177211, pbc=True)
    pseudo = tmp_path / "pp"
    pseudo.mkdir()
    for name in ("C_ONCV_PBE-1.0.upf", "H_ONCV_PBE-1.0.upf"):
        (pseudo / name).write_text("fake")
    config = {"kind": "abacus", "command": copy_command(tmp_path, source / "OUT.ch4" / "running_scf.log",
                                                         "OUT.ABACUS/running_scf.log"),
              "abacus": {"pseudo_dir": str(pseudo), "input": {"ecutwfc": 100, "suffix": "ignored"},
                         "pseudopotentials": {"C": "C_ONCV_PBE-1.0.upf", "H": "H_ONCV_PBE-1.0.upf"}}}
    (result,) = make_labeler(config).label([frame], tmp_path / "label")
    assert isinstance(result, LabeledFrame), result
    np.testing.assert_allclose(result.forces, computed["forces"])
    np.testing.assert_allclose(result.virial, -computed["stress"] * frame.get_volume())
    text = (result.meta.task_dir / "INPUT").read_text()
    assert "calculation scf" in text and "suffix ABACUS" in text and "ecutwfc 100" in text
    assert "C_ONCV_PBE-1.0.upf" in (result.meta.task_dir / "STRU").read_text()

    with pytest.raises(LabelerUnavailable, match="pseudopotentials has no entry for O"):
        make_labeler(config).check({"C", "O"})


def test_abacus_unconverged_scf_is_a_failure(tmp_path):
    shutil.copytree(DATA / "abacus-ch4", tmp_path / "run")
    log = tmp_path / "run" / "OUT.ch4" / "running_scf.log"
    text = log.read_text()
    # what ABACUS prints instead when the density does not converge (as in dpdata's ch4fail sample)
    text = text.replace(" charge density convergence is achieved\n final etot is -219.649914042766 eV\n",
                        " convergence has NOT been achieved!\n")
    log.write_text(text)
    with pytest.raises(LabelError) as err:
        parse_abacus_output(tmp_path / "run")
    assert err.value.reason == "scf_not_converged"


def test_keyword_values_of_incar_and_abacus_input():
    from dpa3_al.label.external import keyword_value

    assert keyword_value(True, ".TRUE.", ".FALSE.") == ".TRUE." and keyword_value(False, "1", "0") == "0"
    assert keyword_value([1, 2.5, "x"], "1", "0") == "1 2.5 x"
    assert keyword_value((True, False), ".TRUE.", ".FALSE.") == ".TRUE. .FALSE."
    assert keyword_value(300, "1", "0") == "300"
