"""The top-level ``seed`` seeds everything that has no seed of its own (dpa3_al/config.py:
fill_seeds): training members, MD tasks and configuration sampling, selection, bootstrap. Fast
tests check where the seed goes; the slow one runs the whole loop (tiny models trained for real,
EMT labels) twice with one seed and once with another and compares the labeled datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from dpa3_al.config import fill_seeds, load_run_config
from dpa3_al.explore.tasks import write_stage_tasks
from dpa3_al.workflows.plan import plan_from_config
from tests.model.train_helpers import TINY, emt_system


def _config(tmp_path: Path, seed: int | None, **over) -> dict:
    init = emt_system(tmp_path / "init", n_frames=6, seed=1, symbols="Cu", rattle=0.08)
    test = emt_system(tmp_path / "test", n_frames=4, seed=2, symbols="Cu", rattle=0.08)
    cfg = {
        "name": "cu", "init_data": [str(init)], "test_data": [str(test)],
        "train": {"model": {**TINY, "type_map": ["Cu"]}, "data": {"batch_size": 1},
                  "training": {"numb_models": 2, "numb_steps": 8, "progress": False, "threads": 1},
                  "stopping": {"patience": 0}},
        "explore": {"stop": {"max_devi_f": None}, "stages": [{"max_iter": 1, "conv_accuracy": 0.99, "task_groups": [{
            "name": "cu", "configurations": [{"lattice": {"symbols": "Cu", "crystal": "fcc", "a": 3.7, "cubic": True},
                                              "supercell": [2, 1, 1], "perturb": {"copies": 3, "atom": 0.05}}],
            "n_sample": 2, "temps": [300], "steps": 10, "traj_freq": 5, "timestep": 1.0}]}]},
        "select": {"f_lo": 0.0, "f_hi": 1.0e9, "max_select": 3, "strategy": "random"},
        "label": {"kind": "ase", "frames_per_task": 1},
        "workflow": {"group_size": 2, "retries": 0,
                     "local": {"poll_interval": 0.5, "preload_modules": ["torch", "dpa3_al.model"]}},
        **over}
    if seed is not None:
        cfg["seed"] = seed
    return cfg


def _load(tmp_path: Path, cfg: dict, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return load_run_config(path)


def test_seed_zero_keeps_every_section_default_and_explicit_seeds_win():
    out = fill_seeds({"explore": {"stages": [{"task_groups": [{}, {"seed": 9}]}]}, "select": {"seed": 4}})
    assert out["train"]["training"]["seed"] == 1                    # TrainConfig's own default
    assert [g["seed"] for g in out["explore"]["stages"][0]["task_groups"]] == [0, 9]
    assert out["select"]["seed"] == 4                                # written by the user: kept
    assert "bootstrap" not in out


def test_the_run_seed_reaches_every_section_without_a_seed(tmp_path):
    cfg = _load(tmp_path, {**_config(tmp_path, 7), "bootstrap": {"copies": 2}})
    assert cfg.train.training.seed == 7001                            # members 7001, 7002
    assert cfg.explore.stages[0].task_groups[0].seed == 7
    assert cfg.select.seed == 7 and cfg.bootstrap.seed == 7
    other = _load(tmp_path, _config(tmp_path, 8), "other.yaml")
    assert other.train.training.seed == 8001 and other.select.seed == 8
    plan = plan_from_config(other, tmp_path)                          # implicit bootstrap: seeded too
    assert plan.loop.calls["bootstrap"].config["bootstrap"]["seed"] == 8
    assert plan.loop.test_data == [(tmp_path / "test").resolve()]
    # MD tasks: same seed, same tasks; another seed, other MD seeds and other perturbed copies
    tasks = {}
    for name, c in (("a", cfg), ("b", _load(tmp_path, _config(tmp_path, 7), "again.yaml")), ("c", other)):
        dirs = write_stage_tasks(c.explore, 0, 0, tmp_path, tmp_path / f"tasks-{name}")
        tasks[name] = [(json.loads((d / "task.json").read_text())["seed"], (d / "conf.extxyz").read_text())
                       for d in dirs]
    assert tasks["a"] == tasks["b"]
    assert [s for s, _ in tasks["a"]] != [s for s, _ in tasks["c"]]
    assert [x for _, x in tasks["a"]] != [x for _, x in tasks["c"]]


def _dataset_arrays(run_root: Path) -> dict[str, np.ndarray]:
    root = (run_root / "dataset").resolve()
    return {str(p.relative_to(root)): np.load(p) for p in sorted(root.rglob("*.npy"))}


@pytest.mark.slow
def test_same_seed_same_dataset_other_seed_other_dataset(tmp_path):
    """Three real runs (1 iteration + final training each, ~1 min each on 2 busy cores)."""
    from dpa3_al.config import config_dict
    from dpa3_al.workflows import submit, wait

    results = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        cfg = _load(tmp_path, _config(tmp_path, seed), f"{name}.yaml")
        run = submit(tmp_path / "runs", name, plan_from_config(cfg, tmp_path), config_dict(cfg))
        state = wait(run.root, 600, 0.5)
        assert state.status == "succeeded", state.message
        results[name] = (run, _dataset_arrays(run.root))
    (run_a, a), (_, b), (_, c) = results["a"], results["b"], results["c"]
    assert a and set(a) == set(b)
    assert all(np.array_equal(a[k], b[k]) for k in a), "same seed, different datasets"
    assert set(a) != set(c) or not all(np.array_equal(a[k], c[k]) for k in a if k in c)
    # the iteration's evaluate step: test errors of 2 members + mean, calibration of the 3 new labels
    decide = run_a.iteration_dir(0) / "decide"
    test = json.loads((decide / "test.json").read_text())
    assert test["labels"] == 6 and [r["member"] for r in test["rows"]] == ["0", "1", "mean"]
    pairs = json.loads((decide / "calibration.json").read_text())["pairs"]
    selected = json.loads((run_a.iteration_dir(0) / "select" / "selection.json").read_text())["selected"]
    assert [p["max_devi_f"] for p in pairs] == pytest.approx([s["max_devi_f"] for s in selected])
    assert all(p["true_f_max"] > 0 for p in pairs)
    csv = (run_a.root / "report" / "learning_curve.csv").read_text().splitlines()
    assert csv[0] == "iteration,labels,member,test_e_rmse,test_f_rmse,test_f_p99,test_v_rmse"
    assert [row.split(",")[:3] for row in csv[1:]] == [   # iteration 0 on 6 labels, the final committee on 9
        [it, n, m] for it, n in (("0", "6"), ("final", "9")) for m in ("0", "1", "mean")]
    # the final training ran on all 9 labels; final-evaluate chose a member (its output, before publication)
    finals = sorted(run_a.root.rglob("final/final.json"))
    assert finals, "final-evaluate wrote no final.json"
    final = json.loads(finals[0].read_text())
    assert final["member"] in (0, 1) and len(final["committee"]) == 2
    assert json.loads((finals[0].parent / "test.json").read_text())["labels"] == 9
