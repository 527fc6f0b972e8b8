"""MD tasks driven by a committee of Lennard-Jones / EMT calculators (stand-in for DPA3 models)."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from dpa3_al.explore import AseCommittee, explore, make_tasks, run_task
from dpa3_al.explore.config import ExploreConfig
from dpa3_al.explore.deviation import DEVI_COLUMNS, read_model_devi
from dpa3_al.common.typed_config import from_dict

NO_STOP = {"max_devi_f": None, "min_dist_ratio": None, "lost_distance": None}


def lj(k: int) -> LennardJones:
    """Argon LJ, member k of the committee: sigma differs by 1% per member."""
    return LennardJones(sigma=3.4 * (1 + 0.01 * k), epsilon=0.0104, rc=6.0, smooth=True)


def ar_config(**group) -> ExploreConfig:
    g = {"name": "ar", "configurations": [{"lattice": {"symbols": "Ar", "crystal": "fcc", "a": 5.26, "cubic": True},
                                           "supercell": [2, 2, 2]}],
         "temps": [60.0], "ensemble": "nvt-langevin", "timestep": 5.0, "steps": 40, "traj_freq": 10}
    stop = group.pop("stop", NO_STOP)
    g.update(group)
    return from_dict(ExploreConfig, {"stages": [{"task_groups": [g]}], "stop": stop})


def one_task(**group):
    cfg = ar_config(**group)
    return make_tasks(cfg.stages[0], cfg.stop)[0]


def numpy_deviation(members: list[Calculator], atoms: Atoms) -> dict[str, float]:
    """deepmd-kit's model deviation written out in numpy, independently of model_deviation()."""
    e, f, w = [], [], []
    for calc in members:
        a = atoms.copy()
        a.calc = calc
        e.append(a.get_potential_energy())
        f.append(a.get_forces())
        w.append(-a.get_stress(voigt=False) * a.get_volume())
    e, f, w = np.array(e), np.array(f), np.array(w)
    n = len(atoms)
    d = np.sqrt(((f - f.mean(0)) ** 2).sum(-1).mean(0))
    s = np.sqrt(((w / n - (w / n).mean(0)) ** 2).mean(0)).ravel()
    return {"max_devi_f": d.max(), "min_devi_f": d.min(), "avg_devi_f": d.mean(), "devi_e": np.std(e / n),
            "max_devi_v": s.max(), "min_devi_v": s.min(), "avg_devi_v": np.sqrt((s ** 2).sum()) / 3}


def test_task_writes_frames_and_deviations_matching_numpy(tmp_path):
    task = one_task()
    comm = AseCommittee([lj(k) for k in range(3)], drive=0)
    report = run_task(task, comm, tmp_path)
    assert report.status == "finished" and report.step == 40 and report.n_frames == 5
    # model 0 drives every step; the other 2 members only on the 5 recorded frames
    assert comm.evaluations == 41 + 2 * 5
    header = (tmp_path / "model_devi.csv").read_text().splitlines()[0]
    assert header == "step,max_devi_v,min_devi_v,avg_devi_v,max_devi_f,min_devi_f,avg_devi_f,devi_e"
    steps, devi = read_model_devi(tmp_path / "model_devi.csv")
    frames = ase.io.read(tmp_path / "traj.extxyz", ":")
    assert steps.tolist() == [0, 10, 20, 30, 40] == [a.info["step"] for a in frames]
    assert devi[1:, DEVI_COLUMNS.index("max_devi_f") - 1].min() > 1e-4  # the committee disagrees
    for atoms, row in zip(frames[1:], devi[1:]):
        expected = numpy_deviation([lj(k) for k in range(3)], atoms)
        for col, value in zip(DEVI_COLUMNS[1:], row):
            assert value == pytest.approx(expected[col], rel=1e-6, abs=1e-12), col
            assert atoms.info[col] == pytest.approx(value, rel=1e-12)
        assert atoms.info["task"] == task.name and atoms.info["group"] == "ar"
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "finished" and status["n_frames"] == 5
    log = (tmp_path / "md.log").read_text()
    assert "ensemble=nvt-langevin" in log and "finished at step 40" in log
    assert json.loads((tmp_path / "task.json").read_text())["md"]["temperature"] == 60.0


def test_identical_models_have_zero_deviation_and_mean_drive(tmp_path):
    cfg = from_dict(ExploreConfig, {"stages": [{"task_groups": [{
        "configurations": [{"lattice": {"symbols": "Cu", "crystal": "fcc", "a": 3.6, "cubic": True},
                            "supercell": [2, 2, 2]}], "temps": [500], "steps": 20, "traj_freq": 5}]}]})
    task = make_tasks(cfg.stages[0], cfg.stop)[0]
    comm = AseCommittee([EMT(), EMT(), EMT()], drive="mean")
    assert run_task(task, comm, tmp_path).status == "finished"
    _, devi = read_model_devi(tmp_path / "model_devi.csv")
    assert devi.shape == (5, 7)
    assert np.all(devi == 0.0) or np.abs(devi).max() < 1e-12


@pytest.mark.parametrize("ensemble", ["nve", "nvt-nhc", "npt-iso", "npt-full"])
def test_every_ensemble_runs(tmp_path, ensemble):
    press = [1000.0] if ensemble.startswith("npt") else None
    task = one_task(ensemble=ensemble, press=press, steps=20)
    report = run_task(task, AseCommittee([lj(k) for k in range(2)], drive=0), tmp_path)
    assert report.status == "finished", report.detail
    frames = ase.io.read(tmp_path / "traj.extxyz", ":")
    volumes = [a.get_volume() for a in frames]
    if ensemble.startswith("npt"):
        assert max(volumes) - min(volumes) > 1e-6  # the cell moves
    else:
        assert np.allclose(volumes, volumes[0])


def test_same_seed_reproduces_the_trajectory(tmp_path):
    task = one_task(steps=20)
    run_task(task, AseCommittee([lj(0), lj(1)], drive=0), tmp_path / "a")
    run_task(task, AseCommittee([lj(0), lj(1)], drive=0), tmp_path / "b")
    a = ase.io.read(tmp_path / "a" / "traj.extxyz", ":")
    b = ase.io.read(tmp_path / "b" / "traj.extxyz", ":")
    assert all(np.array_equal(x.positions, y.positions) for x, y in zip(a, b))
    assert (tmp_path / "a" / "model_devi.csv").read_text() == (tmp_path / "b" / "model_devi.csv").read_text()


def test_exploding_system_stops_early_and_later_frames_are_not_recorded(tmp_path):
    task = one_task(temps=[30000.0], ensemble="nve", steps=200, traj_freq=5,
                    stop={"max_devi_f": 10.0, "min_dist_ratio": None, "lost_distance": None})
    report = run_task(task, AseCommittee([lj(k) for k in range(3)], drive=0), tmp_path)
    assert report.status == "stopped_early" and report.reason == "max_devi_f"
    assert 0 < report.step < 200
    steps, devi = read_model_devi(tmp_path / "model_devi.csv")
    assert steps.max() == report.step  # nothing recorded after the stop
    assert devi[-1, 3] > 10.0 and np.all(devi[:-1, 3] <= 10.0)
    assert len(ase.io.read(tmp_path / "traj.extxyz", ":")) == len(steps)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["reason"] == "max_devi_f" and "stop level 10" in status["detail"]
    # the same system, stopped by the geometry check instead
    geo = one_task(temps=[30000.0], ensemble="nve", steps=200, traj_freq=5,
                   stop={"max_devi_f": None, "min_dist_ratio": 1.2, "lost_distance": None})
    assert run_task(geo, AseCommittee([lj(0), lj(1)], drive=0), tmp_path / "geo").reason == "min_distance"


class Failing(Calculator):
    """LJ that returns NaN forces (or raises) after ``after`` evaluations."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, after: int, mode: str):
        super().__init__()
        self.inner, self.after, self.mode, self.calls = lj(0), after, mode, 0

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        probe = self.atoms.copy()
        probe.calc = self.inner
        self.results = {"energy": probe.get_potential_energy(), "forces": probe.get_forces().copy(),
                        "stress": probe.get_stress()}
        self.results["free_energy"] = self.results["energy"]
        if self.calls > self.after:
            if self.mode == "raise":
                raise RuntimeError("solver blew up")
            self.results["forces"][3] = np.nan


@pytest.mark.parametrize("mode,reason", [("nan", "nan"), ("raise", "error")])
def test_nan_or_error_stops_the_task_not_the_exploration(tmp_path, mode, reason):
    cfg = ar_config(temps=[60.0, 90.0], steps=30)
    comm = AseCommittee([Failing(after=12, mode=mode), lj(1)], drive=0)
    report = explore(cfg, comm, tmp_path, progress=False)
    assert [t.reason for t in report.tasks] == [reason, reason]  # the second task ran too
    first = report.tasks[0]
    assert first.status == "stopped_early" and 0 < first.step < 30
    summary = json.loads((tmp_path / "explore.json").read_text())
    assert summary["counts"] == {f"stopped_early:{reason}": 2}
    steps, _ = read_model_devi(tmp_path / "task-000000" / "model_devi.csv")
    assert steps.max() <= first.step


def test_lost_atom_stops_the_task(tmp_path):
    atoms = Atoms("Ar4", positions=[[0, 0, 0], [3.8, 0, 0], [0, 3.8, 0], [30, 0, 0]])
    path = tmp_path / "cluster.xyz"
    ase.io.write(path, atoms)
    cfg = from_dict(ExploreConfig, {"stages": [{"task_groups": [{"configurations": [{"file": str(path)}],
                                                                 "temps": [10], "steps": 10, "traj_freq": 5}]}]})
    task = make_tasks(cfg.stages[0], cfg.stop)[0]
    report = run_task(task, AseCommittee([lj(0), lj(1)], drive="mean"), tmp_path / "t")
    assert report.reason == "lost_atoms" and report.step == 0 and "3" in report.detail


def test_finished_task_is_skipped_and_killed_task_restarts(tmp_path):
    cfg = ar_config(temps=[60.0, 80.0], steps=20)
    first = explore(cfg, AseCommittee([lj(0), lj(1)], drive=0), tmp_path, progress=False)
    assert [t.skipped for t in first.tasks] == [False, False]
    # simulate a kill of task 1: half-written outputs and a 'running' status
    t1 = tmp_path / "task-000001"
    (t1 / "status.json").write_text(json.dumps({"status": "running"}))
    with open(t1 / "traj.extxyz", "a") as fh:
        fh.write("32\nLattice=")
    comm = AseCommittee([lj(0), lj(1)], drive=0)
    second = explore(cfg, comm, tmp_path, progress=False)
    assert [t.skipped for t in second.tasks] == [True, False]
    assert comm.evaluations == 21 + 3  # only task 1 ran again
    assert len(ase.io.read(t1 / "traj.extxyz", ":")) == 3
    assert second.tasks[0] == first.tasks[0].__class__(**{**first.tasks[0].__dict__, "skipped": True})
