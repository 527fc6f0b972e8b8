"""The run directory: creation, lock, state.json, publication of step outputs."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from dpa3_al.common.errors import UserError
from dpa3_al.common.typed_config import ConfigError, from_dict
from dpa3_al.workflows.keys import StepKey
from dpa3_al.workflows.rundir import RunBusy, RunDir, RunExists, check_run_name, publish_tree
from dpa3_al.workflows.spec import LoopSpec, Plan, StepCall
from dpa3_al.workflows.state import RunState, StepState

PLAN = from_dict(Plan, {"workflow": {"engine": "dispatcher", "group_size": 3},
                        "loop": {"n_models": 2, "init_data": ["data/water"],
                                 "calls": {"select": {"func": "m:f", "config": {"n": [1, 2]}}}}})


def _make(tmp_path, name="water-01", plan=PLAN):
    return RunDir.create(tmp_path / "runs", name, {"a": 1, "b": [1, 2]}, plan)


def test_create_writes_config_plan_state_and_refuses_duplicates(tmp_path):
    run = _make(tmp_path)
    assert run.config_file.read_text().startswith("a: 1")
    assert Plan.read(run.plan_file) == PLAN
    state = run.read_state()
    assert (state.name, state.engine, state.status, state.workflow_id) == \
        ("water-01", "dispatcher", "submitted", "water-01")
    with pytest.raises(RunExists, match="exists already"):
        _make(tmp_path)
    other = _make(tmp_path, "water-02")       # several runs side by side
    assert other.root.parent == run.root.parent and other.root != run.root


def test_plan_round_trip_keeps_types(tmp_path):
    path = tmp_path / "plan.json"
    PLAN.write(path)
    again = Plan.read(path)
    assert again == PLAN
    assert again.loop.calls["select"] == StepCall(func="m:f", config={"n": [1, 2]})
    assert isinstance(again.loop.init_data[0], Path) and again.workflow.group_size == 3
    assert Plan.read(_write(tmp_path / "p.json", "{}")) == Plan(loop=LoopSpec())   # defaults fill in
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_older_plan_with_final_training_under_loop_still_reads(tmp_path):
    """Plans written before workflow.final_training was the one source kept it under loop: its value moves."""
    for workflow in ({"engine": "local"}, None):
        data = {"loop": {"n_models": 2, "final_training": False}, **({"workflow": workflow} if workflow else {})}
        plan = Plan.read(_write(tmp_path / "old.json", json.dumps(data)))
        assert plan.workflow.final_training is False and plan.loop.n_models == 2
    assert Plan.read(_write(tmp_path / "new.json", '{"workflow": {"final_training": false}}')).workflow.final_training is False


def test_plan_read_names_the_file_and_key(tmp_path):
    bad = _write(tmp_path / "plan.json", '{"loop": {"n_models": 0}}')
    with pytest.raises(ConfigError, match=r"plan\.json: loop\.n_models: 0"):
        Plan.read(bad)


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["Water", "a--b", "-a", "a_b", "x" * 41, ""])
def test_bad_run_names(name):
    with pytest.raises(UserError, match="run name"):
        check_run_name(name)


def _hold(root, ready, release):
    with RunDir(root).lock():
        ready.set()
        release.wait(30)


def test_lock_is_exclusive_and_names_the_holder(tmp_path):
    run = _make(tmp_path)
    assert run.holder() is None
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(run.root, ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        assert run.holder() == proc.pid
        with pytest.raises(RunBusy, match=f"driver pid {proc.pid}"):
            with run.lock():
                pass
    finally:
        release.set()
        proc.join(30)
    assert run.holder() is None
    with run.lock():              # free again once the holder has gone
        pass


def test_state_round_trip_is_atomic_json(tmp_path):
    run = _make(tmp_path)
    state = run.read_state()
    state.steps["iter-000000--train-000001"] = StepState("iter-000000--train-000001", "train", "Failed",
                                                         0, 1, log="/x/log.txt", reason="exit status 1 (2 attempts)")
    state.failures = [state.steps["iter-000000--train-000001"]]
    run.write_state(state)
    again = RunState.read(run.state_file)
    assert again.steps == state.steps and again.failures == state.failures
    assert again.counts() == {"Failed": 1}
    assert json.loads(run.state_file.read_text())["steps"]["iter-000000--train-000001"]["reason"].startswith("exit")
    assert not [p for p in run.root.iterdir() if p.name.endswith(".tmp")]


def test_publish_tree_copies_each_entry_once(tmp_path):
    src = tmp_path / "src"
    (src / "task-000001").mkdir(parents=True)
    (src / "task-000001" / "traj.extxyz").write_text("frames")
    (src / ".dflow").mkdir()
    (src / ".dflow" / "catalog").write_text("{}")
    (src / "loose.txt").write_text("x")
    dest = tmp_path / "dest"
    assert sorted(p.name for p in publish_tree(src, dest)) == ["loose.txt", "task-000001"]
    assert (dest / "task-000001" / "traj.extxyz").read_text() == "frames"
    assert not (dest / ".dflow").exists()
    # hard links where possible: same inode, no copy of big files
    assert os.stat(dest / "loose.txt").st_ino == os.stat(src / "loose.txt").st_ino
    (src / "task-000002").mkdir()
    assert [p.name for p in publish_tree(src, dest)] == ["task-000002"]
    assert publish_tree(src, dest) == []
    assert not [p for p in dest.iterdir() if "publishing" in p.name]


def test_publish_places_outputs_and_points_dataset_to_the_newest(tmp_path):
    run = _make(tmp_path)
    for it in (1, 0):       # published out of order: the link still ends on the newest
        out = tmp_path / f"collect-{it}"
        (out / "dataset").mkdir(parents=True)
        (out / "dataset" / f"frames-{it}").write_text("x")
        run.publish(StepKey(it, "collect"), "dataset", out)
        time.sleep(0.01)
    assert run.dataset_link.is_symlink()
    assert os.readlink(run.dataset_link) == "iter-000001/dataset"
    assert (run.dataset_link / "frames-1").exists()
    explore = tmp_path / "explore"
    (explore / "task-000003").mkdir(parents=True)
    assert run.publish(StepKey(2, "run-explore", 1), "result", explore) == [
        run.root / "iter-000002" / "explore" / "task-000003"]
    assert run.publish(StepKey(2, "prep-explore"), "tasks", explore) == []   # not published


def test_the_final_model_is_published_at_the_run_root(tmp_path):
    """final-evaluate's result (a folder holding final/) lands at runs/<name>/final/, the path that
    `status`, the report and `dpa3-al export` name; final-train's members under iter-N/final-train."""
    run = _make(tmp_path)
    out = tmp_path / "final-evaluate"
    (out / "final" / "committee").mkdir(parents=True)
    (out / "final" / "final.json").write_text("{}")
    run.publish(StepKey(3, "final-evaluate"), "result", out)
    assert (run.root / "final" / "final.json").is_file() and (run.root / "final" / "committee").is_dir()
    members = tmp_path / "final-train"
    (members / "member-000").mkdir(parents=True)
    run.publish(StepKey(3, "final-train", 0), "member_dir", members)
    assert (run.root / "iter-000003" / "final-train" / "member-000").is_dir()
