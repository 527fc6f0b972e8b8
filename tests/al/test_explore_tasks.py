"""Exploration config, starting configurations and the task grid (no MD here)."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule

from dpa3_al.explore import ExploreConfig, load_task, make_tasks, task_dirs, write_tasks
from dpa3_al.explore.configurations import build_pool, perturb, read_structures, substitute
from dpa3_al.explore.config import PerturbSpec, SubstituteSpec
from dpa3_al.steps import prepare_explore
from dpa3_al.common.errors import InputError
from dpa3_al.common.typed_config import ConfigError, from_dict, to_dict

WATER = Path(__file__).resolve().parents[1] / "data" / "water" / "data_0"


def _cfg(groups: list[dict], **extra) -> ExploreConfig:
    return from_dict(ExploreConfig, {"stages": [{"task_groups": groups}], **extra}, path="explore", source="t.yaml")


def _cu_group(**kw) -> dict:
    group = {"name": "cu", "configurations": [{"lattice": {"symbols": "Cu", "crystal": "fcc", "a": 3.6,
                                                           "cubic": True}, "supercell": [2, 2, 2]}],
             "temps": [300, 600], "steps": 10, "traj_freq": 5}
    group.update(kw)
    return group


def test_config_errors_name_the_key_and_fix():
    with pytest.raises(ConfigError, match=r"explore\.stages\[0\]\.task_groups\[0\]\.press.*npt-iso"):
        _cfg([_cu_group(press=[1.0])])
    with pytest.raises(ConfigError, match=r"task_groups\[0\]\.press.*needs pressures"):
        _cfg([_cu_group(ensemble="npt-full")])
    with pytest.raises(ConfigError, match=r"task_groups\[0\]\.ensemble.*did you mean 'nvt-nhc'"):
        _cfg([_cu_group(ensemble="nvt-nhcc")])
    with pytest.raises(ConfigError, match=r"configurations\[0\].*exactly one of `file` or `lattice`"):
        _cfg([_cu_group(configurations=[{}])])
    with pytest.raises(ConfigError, match="unique"):
        _cfg([_cu_group(), _cu_group()])
    with pytest.raises(ConfigError, match=r"explore\.stages\[0\]\.task_groups\[0\]\.temps\[0\]"):
        _cfg([_cu_group(temps=["hot"])])
    with pytest.raises(ConfigError, match=r"explore\.drive"):
        from_dict(ExploreConfig, {"drive": "median"}, path="explore")
    cfg = _cfg([_cu_group(ensemble="npt-iso", press=[1.0, 1000.0])], drive="mean")
    assert from_dict(ExploreConfig, to_dict(cfg)) == cfg  # round trip


def test_grid_is_configurations_x_temps_x_pressures_and_deterministic(tmp_path):
    cfg = _cfg([_cu_group(ensemble="npt-iso", press=[1.0, 100.0]),
                {"name": "h2o", "configurations": [{"file": str(WATER), "index": "0:3"}], "temps": [330],
                 "steps": 5}])
    tasks = make_tasks(cfg.stages[0], cfg.stop, iteration=2)
    assert len(tasks) == 1 * 2 * 2 + 3 * 1
    assert [t.name for t in tasks] == [f"task-{i:06d}" for i in range(7)]
    cu = [(t.md.temperature, t.md.pressure) for t in tasks if t.group == "cu"]
    assert cu == [(300.0, 1.0), (300.0, 100.0), (600.0, 1.0), (600.0, 100.0)]
    assert len({t.seed for t in tasks}) == len(tasks)
    again = make_tasks(cfg.stages[0], cfg.stop, iteration=2)
    assert [t.seed for t in again] == [t.seed for t in tasks]
    assert all(np.array_equal(a.atoms.positions, b.atoms.positions) for a, b in zip(tasks, again))
    other = make_tasks(cfg.stages[0], cfg.stop, iteration=3)
    assert [t.seed for t in other] != [t.seed for t in tasks]
    # task folders round-trip
    dirs = write_tasks(tasks, tmp_path)
    assert task_dirs(tmp_path) == dirs
    back = load_task(dirs[5])
    assert back.to_json() == tasks[5].to_json()
    assert np.allclose(back.atoms.positions, tasks[5].atoms.positions)
    assert back.atoms.get_chemical_formula() == "H128O64"


def test_n_sample_draws_a_seeded_subset_per_iteration():
    confs = [{"lattice": {"symbols": "Cu", "crystal": "fcc", "a": 3.6}, "perturb": {"copies": 12, "atom": 0.05}}]
    cfg = _cfg([{"name": "g", "configurations": confs, "n_sample": 3, "temps": [100], "seed": 7}])
    labels = {it: [t.conf_label for t in make_tasks(cfg.stages[0], cfg.stop, iteration=it)] for it in range(4)}
    assert all(len(v) == 3 for v in labels.values())
    assert labels[0] == [t.conf_label for t in make_tasks(cfg.stages[0], cfg.stop, iteration=0)]
    assert len({tuple(v) for v in labels.values()}) > 1  # a different subset in other iterations
    everything = _cfg([{"name": "g", "configurations": confs, "n_sample": 50, "temps": [100]}])
    assert len(make_tasks(everything.stages[0], everything.stop)) == 12


def test_npt_on_a_molecule_is_refused_up_front(tmp_path):
    path = tmp_path / "h2o.xyz"
    ase.io.write(path, molecule("H2O"))
    cfg = _cfg([{"name": "mol", "configurations": [{"file": "h2o.xyz"}], "ensemble": "npt-iso", "press": [1.0]}])
    with pytest.raises(InputError, match="periodic 3D cell"):
        make_tasks(cfg.stages[0], cfg.stop, base_dir=tmp_path)


def test_structure_files_in_several_formats(tmp_path):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    ase.io.write(tmp_path / "POSCAR", cu, format="vasp")
    ase.io.write(tmp_path / "cu.cif", cu)
    ase.io.write(tmp_path / "many.extxyz", [cu, cu * (2, 1, 1), cu * (2, 2, 1)])
    for name in ("POSCAR", "cu.cif"):
        (atoms,) = read_structures(tmp_path / name)
        assert atoms.get_chemical_formula() == "Cu4"
        assert np.allclose(atoms.cell.lengths(), 3.6)
    assert [len(a) for a in read_structures(tmp_path / "many.extxyz", "1:")] == [8, 16]
    water = read_structures(WATER, "-1")
    assert len(water) == 1 and len(water[0]) == 192 and water[0].pbc.all()
    with pytest.raises(InputError, match="does not exist"):
        read_structures(tmp_path / "nope.xyz")
    (tmp_path / "junk.dat").write_text("not a structure\n")
    with pytest.raises(InputError, match="cannot read structure file"):
        read_structures(tmp_path / "junk.dat")


def test_generators_substitute_and_perturb_within_bounds():
    rng = np.random.default_rng(0)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    alloy = substitute(cu, SubstituteSpec(element="Cu", by="Au", fraction=0.25), rng)
    assert alloy.get_chemical_formula() == "Au8Cu24"
    moved = perturb(cu, PerturbSpec(copies=1, cell=0.0, atom=0.1), rng)
    assert 0 < np.abs(moved.positions - cu.positions).max() <= 0.1
    strained = perturb(cu, PerturbSpec(copies=1, cell=0.05, atom=0.0), rng)
    rel = np.abs(strained.cell.array - cu.cell.array) / cu.cell.lengths().max()
    assert 0 < rel.max() <= 0.05 + 1e-12
    assert np.allclose(strained.get_scaled_positions(), cu.get_scaled_positions())
    cfg = _cfg([{"name": "a", "configurations": [{
        "lattice": {"symbols": "Cu", "crystal": "fcc", "a": 3.6, "cubic": True}, "supercell": [2, 2, 2],
        "substitute": [{"element": "Cu", "by": "Ni", "fraction": 0.5, "copies": 2}],
        "perturb": {"copies": 3, "atom": 0.02, "keep_original": True}}]}])
    spec = cfg.stages[0].task_groups[0].configurations
    pool = build_pool(spec, Path("."), seed=1)
    assert len(pool) == 2 * (1 + 3)
    assert all(a.atoms.get_chemical_formula() == "Cu16Ni16" for a in pool)
    assert pool[0].label == "Cu-fcc 2x2x2 sub0.0" and pool[1].label == "Cu-fcc 2x2x2 sub0.0 pert0"
    again = build_pool(spec, Path("."), seed=1)
    assert all(np.array_equal(a.atoms.positions, b.atoms.positions) for a, b in zip(pool, again))
    other = build_pool(spec, Path("."), seed=2)
    assert not np.array_equal(other[1].atoms.positions, pool[1].atoms.positions)


def test_prepare_tasks_step_follows_the_schedule_stage(tmp_path):
    path = tmp_path / "h2o.xyz"
    ase.io.write(path, molecule("H2O"))
    explore = {"stages": [{"task_groups": [_cu_group()]},
                          {"task_groups": [{"name": "mol", "configurations": [{"file": "h2o.xyz"}],
                                            "temps": [100, 200, 300]}]}]}
    first = prepare_explore({"explore": explore, "base_dir": str(tmp_path)}, None, 0, tmp_path / "it0")
    assert [d.name for d in first] == ["task-000000", "task-000001"] and load_task(first[0]).group == "cu"
    schedule = tmp_path / "schedule.json"
    schedule.write_text(json.dumps({"state": {"stage": 1, "iteration": 0, "finished": False, "history": []}}))
    second = prepare_explore({**explore, "base_dir": str(tmp_path)}, schedule, 1, tmp_path / "it1")
    tasks = [load_task(d) for d in second]
    assert [(t.group, t.stage, t.iteration, t.md.temperature) for t in tasks] == [
        ("mol", 1, 1, 100.0), ("mol", 1, 1, 200.0), ("mol", 1, 1, 300.0)]
    schedule.write_text(json.dumps({"state": {"stage": 2, "iteration": 0, "finished": False, "history": []}}))
    with pytest.raises(InputError, match="stage 2"):
        prepare_explore(explore, schedule, 2, tmp_path / "it2")
