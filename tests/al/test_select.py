"""Selection: trust levels, adaptive level, filters, cap strategies, balancing, the select() driver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import ase.io
import numpy as np
import pytest
from ase import Atoms

from dpa3_al.cli import main
from dpa3_al.explore.config import StopConfig
from dpa3_al.explore.deviation import DeviCsvWriter
from dpa3_al.explore.tasks import TASK_JSON, MDSettings, Task, atomic_write_json, write_task
from dpa3_al.common.errors import UserError
from dpa3_al.common.typed_config import ConfigError, from_dict
from dpa3_al.select import (ACCURATE, CANDIDATE, FAILED, FilterConfig, Levels, SelectConfig, adaptive_lower, allot,
                            box_reason, classify, duplicate_mask, farthest_point_sampling, min_distance_reason, pick,
                            SelectionReport, resolve_levels, select)
from dpa3_al.steps import select_candidates

A, C, F = ACCURATE, CANDIDATE, FAILED
nan = float("nan")


def test_classify_hand_made_table_with_nan():
    devi_f = np.array([0.0, 0.049, 0.05, 0.1, 0.1499, 0.15, 3.0, nan, nan])
    assert classify(devi_f, None, Levels(0.05, 0.15)).tolist() == [A, A, C, C, C, F, F, F, F]
    devi_v = np.array([0.0, 0.5, 0.0, 0.02, nan, 0.0, 0.0, 0.0, nan])
    with_v = classify(devi_f, devi_v, Levels(0.05, 0.15, v_lo=0.01, v_hi=0.1))
    assert with_v.tolist() == [A, F, C, C, F, F, F, F, F]
    # virial NaN (no virial) is ignored when no virial levels are set
    assert classify(devi_f, devi_v, Levels(0.05, 0.15)).tolist() == [A, A, C, C, C, F, F, F, F]


def test_adaptive_lower_level_hits_the_target_fraction():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(0, 0.3, 200), [nan, 0.5, 0.9]])
    level = adaptive_lower(values, 0.3, fraction=0.1)
    below = values[~np.isnan(values) & (values < 0.3)]
    assert np.sum((below >= level) & (below < 0.3)) == 20
    assert adaptive_lower(values, 0.3, count=7) == pytest.approx(np.sort(below)[::-1][6])
    assert adaptive_lower(values, 0.3, fraction=0.1, floor=0.29) == 0.29  # clamped to the floor
    assert adaptive_lower(values, 0.3, fraction=1.0, floor=0.01) == 0.01  # everything is a candidate
    assert adaptive_lower(values, 0.3, fraction=0.001) == 0.3  # target 0 -> no candidates
    # better models (smaller deviations) -> lower level, as long as it stays above the floor
    assert adaptive_lower(values * 0.5, 0.3, fraction=0.1) < level
    cfg = from_dict(SelectConfig, {"f_lo": 0.02, "f_hi": 0.3, "adaptive": {"candidate_fraction": 0.1}})
    lv = resolve_levels(values, np.zeros_like(values), cfg)
    assert lv.adaptive and lv.f_lo == pytest.approx(level)
    classes = classify(values, None, lv)
    assert np.sum(classes == C) == 20 and np.sum(classes == F) == 3
    with pytest.raises(ConfigError, match="exactly one of candidate_fraction or candidate_count"):
        from_dict(SelectConfig, {"adaptive": {"candidate_count": 5}}, path="select")


def test_select_config_checks():
    with pytest.raises(ConfigError, match=r"select\.f_lo.*below f_hi"):
        from_dict(SelectConfig, {"f_lo": 0.3, "f_hi": 0.2}, path="select")
    with pytest.raises(ConfigError, match="both v_lo and v_hi"):
        from_dict(SelectConfig, {"v_lo": 0.1}, path="select")
    with pytest.raises(ConfigError, match=r"select\.strategy.*did you mean 'diversity'"):
        from_dict(SelectConfig, {"strategy": "diverse"}, path="select")


def test_allot_balances_groups():
    assert allot([10, 1, 0, 5], 9) == [4, 1, 0, 4]
    assert allot([10, 10, 10], 10) == [4, 3, 3]
    assert allot([2, 3], 100) == [2, 3]
    assert allot([2, 3], None) == [2, 3]
    assert sum(allot([7, 0, 30, 2], 20)) == 20


def test_farthest_point_sampling_picks_one_per_cluster():
    rng = np.random.default_rng(1)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = np.concatenate([c + rng.normal(0, 0.1, (15, 2)) for c in centers])
    order = rng.permutation(len(points))
    points = points[order]
    cluster = order // 15
    picked = farthest_point_sampling(points, 4, start=0)
    assert len(picked) == 4 and sorted(cluster[picked].tolist()) == [0, 1, 2, 3]
    assert picked[0] == 0
    assert len(set(farthest_point_sampling(points, 100))) == len(points)
    # 'diversity' through pick(): same frames regardless of the rng, starts at the highest deviation
    devi = np.arange(len(points), dtype=float)
    chosen = pick("diversity", devi, 4, np.random.default_rng(5), features=lambda: points)
    assert chosen[0] == len(points) - 1 and sorted(cluster[chosen].tolist()) == [0, 1, 2, 3]
    assert pick("highest", np.array([0.1, nan, 0.3, 0.2]), 2, np.random.default_rng(0)) == [2, 3]
    r1 = pick("random", devi, 5, np.random.default_rng(3))
    assert r1 == pick("random", devi, 5, np.random.default_rng(3)) and len(set(r1)) == 5
    with pytest.raises(UserError, match="descriptor"):
        pick("diversity", devi, 4, np.random.default_rng(0))


def test_diversity_weighs_distance_by_deviation():
    # a line of points; the committee is unsure only at both ends and at x = 4
    x = np.arange(9, dtype=float)[:, None]
    devi = np.array([0.5, 0.01, 0.01, 0.01, 0.3, 0.01, 0.01, 0.01, 0.4])
    plain = farthest_point_sampling(x, 3, start=0)
    weighted = farthest_point_sampling(x, 3, start=0, weights=devi)
    assert plain == [0, 8, 4]
    assert weighted == [0, 8, 4]
    # a confident far point loses to an unsure nearer one; a near unsure point to a farther unsure one
    x = np.array([[0.0], [1.0], [5.0], [10.0]])
    assert farthest_point_sampling(x, 2, start=0, weights=np.array([1.0, 1.0, 0.5, 0.01])) == [0, 2]
    assert farthest_point_sampling(x, 2, start=0) == [0, 3]
    assert farthest_point_sampling(x, 2, start=0, weights=np.array([1.0, 1.0, 0.1, 0.01])) == [0, 1]
    # the deviation decides the first pick, the weighted distance the rest (through pick)
    chosen = pick("diversity", np.array([0.1, 0.2, 0.9, 0.3]), 3, np.random.default_rng(0), features=lambda: x)
    assert chosen == [2, 3, 1]
    # zero weights everywhere else: the plain distance spreads the rest, each point once
    assert sorted(farthest_point_sampling(x, 4, start=1, weights=np.array([0.0, 1.0, 0.0, 0.0]))) == [0, 1, 2, 3]


def _box(positions, cell=(10.0, 10.0, 10.0)) -> Atoms:
    return Atoms("Ar" * len(positions), positions=positions, cell=cell, pbc=True)


def test_filters():
    ok = _box([[0, 0, 0], [3.7, 0, 0]])
    close = _box([[0, 0, 0], [1.0, 0, 0]])
    assert min_distance_reason(ok, 0.6) is None
    assert "0-1" in min_distance_reason(close, 0.6)
    cfg = FilterConfig()
    assert box_reason(ok, cfg) is None
    skewed = Atoms("Ar", cell=[[10, 0, 0], [9.6, 2.8, 0], [0, 0, 10]], pbc=True)  # gamma ~ 16 deg
    assert "skewed" in box_reason(skewed, cfg)
    slab = Atoms("Ar", cell=[10, 10, 60], pbc=True)
    assert "ratio" in box_reason(slab, cfg)
    assert "width" in box_reason(ok, FilterConfig(box_min_width=12.0))
    assert box_reason(Atoms("Ar", positions=[[0, 0, 0]]), cfg) is None  # molecules: no box checks
    moved = ok.copy()
    moved.positions[1, 0] += 1e-5
    far = ok.copy()
    far.positions[1, 0] += 0.1
    assert duplicate_mask([ok, moved, far, ok.copy()], 1e-3).tolist() == [False, True, False, True]


# ------------------------------------------------------------------ synthetic exploration folders
def make_task_dir(root: Path, index: int, group: str, rows: list[tuple[int, float]], *, temp: float = 300.0,
                  close_at: int | None = None, status: str = "finished",
                  avg: Callable[[int, float], float] = lambda step, f: f / 1.5) -> Path:
    """A task folder with hand-made deviations: rows of (step, max_devi_f), avg_devi_f = ``avg(step,
    max_devi_f)``; frame positions move with step."""
    base = _box([[1.0, 1.0, 1.0], [4.8, 1.0, 1.0], [1.0, 4.8, 1.0], [1.0, 1.0, 4.8]])
    md = MDSettings("nvt-langevin", temp, None, 1.0, 100, 10, 0.01, 100.0, 1000.0)
    task = Task(name=f"task-{index:06d}", index=index, group=group, stage=0, iteration=3, conf_label="ar4",
                seed=index, md=md, stop=StopConfig(), atoms=base)
    d = root / task.name
    write_task(task, d)
    csv = DeviCsvWriter(d / "model_devi.csv")
    with open(d / "traj.extxyz", "w") as fh:
        for step, f in rows:
            frame = base.copy()
            frame.positions[0] += [0.01 * step, 0.0, 0.05 * index]
            if step == close_at:
                frame.positions[1] = frame.positions[0] + [1.0, 0, 0]
            frame.info["step"] = step
            ase.io.write(fh, frame, format="extxyz")
            csv.write(step, {"max_devi_f": f, "min_devi_f": f / 2, "avg_devi_f": avg(step, f), "devi_e": 0.001,
                             "max_devi_v": nan, "min_devi_v": nan, "avg_devi_v": nan})
    csv.close()
    atomic_write_json(d / "status.json", {"status": status, "reason": None})
    return d


@pytest.fixture
def explored(tmp_path) -> Path:
    root = tmp_path / "explore"
    make_task_dir(root, 0, "bulk", [(0, 0.01), (10, 0.06), (20, 0.08), (30, 0.10), (40, nan), (50, 0.2)],
                  close_at=20)
    make_task_dir(root, 1, "bulk", [(0, 0.01), (10, 0.12), (20, 0.07), (30, 0.02)], temp=600.0)
    make_task_dir(root, 2, "surface", [(0, 0.03), (10, 0.09), (20, 0.13), (30, 0.14), (40, 0.5)])
    # a copy of task 2's frame 10: duplicate
    d = make_task_dir(root, 3, "surface", [(10, 0.09)])
    frames = ase.io.read(root / "task-000002" / "traj.extxyz", ":")
    frames[1].info["step"] = 10
    ase.io.write(d / "traj.extxyz", [frames[1]], format="extxyz")
    return root


def _dirs(root: Path) -> list[Path]:
    return sorted(root.glob("task-*"))


def test_select_counts_filters_and_provenance(explored, tmp_path):
    cfg = SelectConfig(f_lo=0.05, f_hi=0.15, max_select=3, strategy="highest")
    report = select(_dirs(explored), cfg, tmp_path / "sel")
    data = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert data["counts"] == {"accurate": 4, "candidate": 9, "failed": 3, "failed_nan": 1}
    assert data["ratios"]["accurate"] == pytest.approx(4 / 16)
    assert data["per_group"]["bulk"] == {"accurate": 3, "candidate": 5, "failed": 2, "tasks": 2}
    assert data["per_group"]["surface"] == {"accurate": 1, "candidate": 4, "failed": 1, "tasks": 2}
    assert data["filters"]["min_distance"]["count"] == 1
    assert data["filters"]["min_distance"]["frames"][0]["frame"] == "task-000000:20"
    assert [f["frame"] for f in data["filters"]["duplicate"]["frames"]] == ["task-000003:10"]
    assert data["levels"] == {"f_lo": 0.05, "f_hi": 0.15, "v_lo": None, "v_hi": None, "adaptive": False}
    # 4 bulk and 3 surface candidates survive; cap 3 balanced -> 2 bulk (highest) + 1 surface (highest)
    assert data["quotas"] == {"bulk": 2, "surface": 1}
    assert sorted(s["frame"] for s in data["selected"]) == ["task-000000:30", "task-000001:10", "task-000002:30"]
    assert all("highest max_devi_f" in s["reason"] and "candidate" in s["reason"] for s in data["selected"])
    frames = ase.io.read(tmp_path / "sel" / "candidates.extxyz", ":")
    assert [(a.info["task"], a.info["step"]) for a in frames] == [
        ("task-000000", 30), ("task-000001", 10), ("task-000002", 30)]
    assert frames[1].info["temperature"] == 600.0 and frames[1].info["group"] == "bulk"
    assert frames[1].info["max_devi_f"] == pytest.approx(0.12) and frames[1].info["iteration"] == 3
    assert report.ratio("accurate") == pytest.approx(0.25)


def test_draw_power_sets_how_steeply_the_odds_follow_the_deviation(tmp_path):
    """select.draw_power: odds ~ deviation^p in strategy weighted (p 1: 3x the deviation, 3x the odds;
    p 0: uniform); the run's record keeps p, so the calibration weighs each label with its own odds."""
    devi = np.array([0.1, 0.3, 0.1, 0.1, 0.1, 0.1])
    for power, expected in ((1.0, 3 / 8), (0.0, 1 / 6), (2.0, 9 / 14)):
        rng = np.random.default_rng(5)
        hits = sum(pick("weighted", devi, 1, rng, power=power) == [1] for _ in range(4000))
        assert hits / 4000 == pytest.approx(expected, abs=0.03), power
    root = tmp_path / "explore"
    make_task_dir(root, 0, "bulk", [(10, 0.5), (20, 0.2), (30, 0.1), (40, 0.3)])
    cfg = from_dict(SelectConfig, {"f_lo": 0.05, "f_hi": 0.6, "max_select": 2, "draw_power": 1}, path="select")
    select(_dirs(root), cfg, tmp_path / "sel")
    report = SelectionReport.read(tmp_path / "sel")
    assert report.draw_power == 1.0 and len(report.selected) == 2
    assert all("draw weighted by max_devi_f^1 " in r["reason"] for r in report.selected)
    assert report.selection_odds({"max_devi_f": 0.3}) == pytest.approx(0.3)        # not 0.09: its own odds
    with pytest.raises(ConfigError, match="draw_power"):
        from_dict(SelectConfig, {"draw_power": -1}, path="select")


def test_draw_by_avg_devi_f_ranks_by_the_atoms_mean_deviation(tmp_path):
    # one hot atom (max 0.5, mean 0.05) against a frame every atom of which is unsure (max 0.2, mean 0.18):
    # the trust levels judge max_devi_f, the strategy ranks by select.draw_by
    root = tmp_path / "explore"
    make_task_dir(root, 0, "bulk", [(10, 0.5), (20, 0.2), (30, 0.1)],
                  avg=lambda step, f: {10: 0.05, 20: 0.18, 30: 0.09}[step])
    by = {}
    for draw_by in ("max_devi_f", "avg_devi_f"):
        cfg = SelectConfig(f_lo=0.05, f_hi=0.6, max_select=1, strategy="highest", draw_by=draw_by)
        report = select(_dirs(root), cfg, tmp_path / draw_by)
        by[draw_by] = report.selected[0]
        assert report.counts["candidate"] == 3 and f"highest {draw_by}" in report.selected[0]["reason"]
        assert SelectionReport.read(tmp_path / draw_by).draw_by == draw_by
    assert by["max_devi_f"]["frame"] == "task-000000:10" and by["avg_devi_f"]["frame"] == "task-000000:20"
    assert by["avg_devi_f"]["avg_devi_f"] == pytest.approx(0.18) and by["avg_devi_f"]["max_devi_f"] == 0.2
    with pytest.raises(ConfigError, match="draw_by"):
        from_dict(SelectConfig, {"draw_by": "mean"}, path="select")


def test_same_seed_same_selection(explored, tmp_path):
    def run(seed: int, out: str) -> list[str]:
        cfg = SelectConfig(max_select=4, strategy="random", seed=seed, balance=False)
        return [s["frame"] for s in select(_dirs(explored), cfg, tmp_path / out).selected]

    first = run(0, "a")
    assert first == run(0, "b") and len(first) == 4
    assert (tmp_path / "a" / "candidates.extxyz").read_text() == (tmp_path / "b" / "candidates.extxyz").read_text()
    assert any(run(s, f"s{s}") != first for s in range(1, 6))


def test_each_iteration_draws_afresh(explored, tmp_path):
    # a seed fixed across iterations drew the same positions (task, step) every iteration whenever
    # the candidate count repeated: the same tasks went unlabeled all run (bench/bench_al.py arm b)
    def run(strategy: str, iteration: int, out: str) -> list[str]:
        for d in _dirs(explored):                   # the iteration the tasks ran in, as the loop records it
            meta = json.loads((d / TASK_JSON).read_text())
            (d / TASK_JSON).write_text(json.dumps({**meta, "iteration": iteration}))
        cfg = SelectConfig(max_select=2, strategy=strategy, seed=1, balance=False)
        return [s["frame"] for s in select(_dirs(explored), cfg, tmp_path / out).selected]

    for strategy in ("random", "weighted"):
        picks = [run(strategy, it, f"{strategy}{it}") for it in range(12)]
        assert len({tuple(p) for p in picks}) > 3, picks
        assert len({f for p in picks for f in p}) >= 7       # 8 candidates survive the filters
        assert run(strategy, 3, f"{strategy}-again") == picks[3]      # a rerun of an iteration draws the same
    n3 = select_candidates({"max_select": 2, "strategy": "random", "seed": 1, "balance": False},
                           _dirs(explored), 3, tmp_path / "step3")
    assert n3 == 2 and [s["frame"] for s in json.loads((tmp_path / "step3" / "selection.json").read_text())[
        "selected"]] == run("random", 3, "again3")


def test_diversity_uses_structure_averaged_descriptors(tmp_path):
    root = tmp_path / "explore"
    # 8 candidate frames; frames with step < 40 sit near x=0, the others near x=+3 (descriptor: position)
    make_task_dir(root, 0, "g", [(s, 0.1) for s in range(0, 80, 10)])
    calls = []

    def descriptor(atoms: Atoms) -> np.ndarray:
        calls.append(atoms.info["step"])
        shift = 0.0 if atoms.info["step"] < 40 else 3.0
        return np.array([[shift + 0.001 * atoms.info["step"], 1.0]] * len(atoms))

    cfg = SelectConfig(max_select=2, strategy="diversity", filters=FilterConfig(dedup_tol=None))
    chosen = [s["step"] for s in select(_dirs(root), cfg, tmp_path / "sel", descriptor_fn=descriptor).selected]
    assert len(chosen) == 2 and min(chosen) < 40 <= max(chosen)
    assert sorted(calls) == list(range(0, 80, 10))
    with pytest.raises(UserError, match="--models"):
        select(_dirs(root), cfg, tmp_path / "sel2")


def test_nan_and_unrun_tasks_are_counted_not_fatal(tmp_path):
    root = tmp_path / "explore"
    make_task_dir(root, 0, "g", [(0, nan), (10, nan)], status="stopped_early")
    make_task_dir(root, 1, "g", [(0, 0.01)])
    (root / "task-000001" / "model_devi.csv").unlink()  # never ran
    (root / "task-000001" / "status.json").unlink()
    report = select(_dirs(root), SelectConfig(), tmp_path / "sel")
    assert report.counts == {"accurate": 0, "candidate": 0, "failed": 2, "failed_nan": 2}
    assert report.tasks == {"stopped_early:None": 1, "not_run": 1}
    assert report.selected == []
    assert (tmp_path / "sel" / "candidates.extxyz").read_text() == ""  # written, no frames


def test_cli_select(explored, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("select:\n  f_lo: 0.05\n  f_hi: 0.15\n  max_select: 2\n  strategy: highest\n")
    assert main(["select", str(explored), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "16 frames from 4 tasks" in out and "selected 2 frames" in out and "min_distance 1" in out
    assert len(ase.io.read(explored / "select" / "candidates.extxyz", ":")) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("select:\n  strategy: diversity\n  max_select: 1\n")
    assert main(["select", str(explored), "--config", str(bad)]) == 1
    assert "--models" in capsys.readouterr().err
    bad.write_text("select:\n  f_hi: -1\n")
    assert main(["select", str(explored), "--config", str(bad)]) == 1
    assert "select.f_hi" in capsys.readouterr().err


def test_killed_task_with_truncated_trajectory(tmp_path):
    root = tmp_path / "explore"
    d = make_task_dir(root, 0, "g", [(0, 0.1), (10, 0.1), (20, 0.1)], status="running")
    text = (d / "traj.extxyz").read_text()
    (d / "traj.extxyz").write_text(text[: len(text) - 60])  # the last frame is cut in the middle
    report = select(_dirs(root), SelectConfig(), tmp_path / "sel")
    assert report.counts["candidate"] == 3 and report.tasks == {"running": 1}
    assert [f["frame"] for f in report.filters["missing_frame"]["frames"]] == ["task-000000:20"]
    assert [s["step"] for s in report.selected] == [0, 10]


def test_select_candidates_step(explored, tmp_path):
    (tmp_path / "not-a-task").mkdir()
    dirs = _dirs(explored) + [tmp_path / "not-a-task"]
    config = {"select": {"f_lo": 0.05, "f_hi": 0.15, "max_select": 2, "strategy": "highest"}, "base_dir": "."}
    n = select_candidates(config, dirs, 3, tmp_path / "select")
    assert n == 2
    data = json.loads((tmp_path / "select" / "selection.json").read_text())
    assert data["n_frames"] == 16 and data["n_selected"] == 2
    with pytest.raises(ConfigError, match=r"select\.strategy"):
        select_candidates({"strategy": "best"}, _dirs(explored), 3, tmp_path / "bad")


def test_select_step_does_not_pick_frames_already_labeled(explored, tmp_path):
    """The run's dataset/init_data (labeled_data) hold the frame the step picks first: with them,
    the step skips it (filter 'labeled') and still picks two others."""
    import dpdata

    config = {"select": {"f_lo": 0.05, "f_hi": 0.15, "max_select": 2, "strategy": "highest"}}
    select_candidates(config, _dirs(explored), 3, tmp_path / "plain")
    plain = json.loads((tmp_path / "plain" / "selection.json").read_text())
    task, step = plain["selected"][0]["task"], plain["selected"][0]["step"]
    labeled = next(a for a in ase.io.read(explored / task / "traj.extxyz", ":") if a.info["step"] == step)
    dpdata.System(labeled, fmt="ase/structure").to("deepmd/npy", str(tmp_path / "dataset" / "sys"))
    select_candidates(config, _dirs(explored), 3, tmp_path / "known", labeled_data=[tmp_path / "dataset"])
    known = json.loads((tmp_path / "known" / "selection.json").read_text())
    assert (task, step) not in [(s["task"], s["step"]) for s in known["selected"]]
    assert known["n_selected"] == 2 and [f["frame"] for f in known["filters"]["labeled"]["frames"]] == [f"{task}:{step}"]


def test_weighted_draw_follows_the_squared_deviation():
    """'weighted' draws distinct frames, reproducibly, with odds ~ max_devi_f**2: a frame with 3x
    the deviation is picked ~9x as often; NaN deviations can still be drawn (smallest weight)."""
    devi = np.array([0.1, 0.3, 0.1, 0.1, np.nan, 0.1])
    counts = np.zeros(len(devi))
    rng = np.random.default_rng(11)
    for _ in range(4000):
        (i,) = pick("weighted", devi, 1, rng)
        counts[i] += 1
    share = counts / counts.sum()
    assert share[1] == pytest.approx(9 / 14, abs=0.03)             # weights 1,9,1,1,1,1 (NaN -> smallest)
    assert share[4] == pytest.approx(1 / 14, abs=0.02)
    picks = pick("weighted", devi, 4, np.random.default_rng(2))
    assert len(set(picks)) == 4 and picks == pick("weighted", devi, 4, np.random.default_rng(2))
    assert sorted(pick("weighted", np.zeros(3), 3, np.random.default_rng(0))) == [0, 1, 2]
