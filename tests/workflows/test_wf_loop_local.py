"""The whole loop in the local engine (dflow debug mode) with toy step functions.

These tests exercise the machinery: recursion until decide says stop, grouped fan-outs,
failure tolerance, the step runner's retries and timeouts, publication into the run
directory, kill -9 + resume, stop, and two runs side by side. The science is a toy.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from collections import Counter
from pathlib import Path

from .wf_helpers import ledger_lines, toy_plan, wait_for
from dpa3_al.workflows import resume, status, stop, submit, wait
from dpa3_al.workflows.keys import step_key

TIMEOUT = 240


def _frames(run) -> list[str]:
    return sorted(p.name for p in (run.root / "dataset" / "frames").glob("*.frame"))


def _fake_python(tmp_path: Path, monkeypatch) -> None:
    """A PATH whose python3/python fail loudly: every step must use the explicit interpreter."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name in ("python3", "python"):
        exe = bin_dir / name
        exe.write_text("#!/bin/sh\necho 'wrong interpreter: python3 from PATH' >&2\nexit 97\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_two_runs_side_by_side_loop_until_decide_stops(tmp_path, toy_env, monkeypatch):
    _fake_python(tmp_path, monkeypatch)
    runs = tmp_path / "runs"
    alpha = submit(runs, "alpha", toy_plan({"group_size": 2}, {"prep-explore": {"n_tasks": 3},
                                                               "decide": {"stop_after": 2}}), {"run": "alpha"})
    # beta: three members, trained two per train step (train.training.stack 2): steps train-0 (0, 1), train-1 (2)
    beta = submit(runs, "beta", toy_plan({"group_size": 1}, {"prep-explore": {"n_tasks": 2},
                                                             "decide": {"stop_after": 1}}, n_models=3, stack=2),
                  {"run": "beta"})
    a, b = wait(alpha.root, TIMEOUT, 0.5), wait(beta.root, TIMEOUT, 0.5)
    assert (a.status, a.message) == ("succeeded", "")
    assert (b.status, b.message) == ("succeeded", "")

    # alpha: two iterations, every step by its key, grouped fan-outs (3 tasks, 2 per group)
    assert (a.iteration, a.stage) == (1, "decide")
    for it in (0, 1):
        for key in [step_key(it, "train", 0), step_key(it, "train", 1), step_key(it, "prep-explore"),
                    step_key(it, "run-explore", 0), step_key(it, "run-explore", 1), step_key(it, "select"),
                    step_key(it, "run-label", 1), step_key(it, "collect"), step_key(it, "decide")]:
            assert a.steps[key].phase == "Succeeded", key
        groups = [a.steps[step_key(it, "run-explore", g)] for g in (0, 1)]
        assert [(s.tasks_ok, s.tasks_total) for s in groups] == [(2, 2), (1, 1)]
    assert a.steps[step_key(0, "next-iteration")].phase == "Succeeded"
    assert step_key(1, "next-iteration") not in a.steps       # decide said stop
    # after the last decide: the committee trains on every label, then the final model is chosen
    for key in [step_key(1, "final-train", 0), step_key(1, "final-train", 1), step_key(1, "final-evaluate")]:
        assert a.steps[key].phase == "Succeeded", key
    assert step_key(0, "final-train", 0) not in a.steps and step_key(0, "final-evaluate") not in a.steps
    # evaluate's files travel with the decision; its calibration record is chained across iterations
    assert json.loads((alpha.root / "iter-000001" / "decide" / "calibration.json").read_text()) == [0, 1]
    assert json.loads((alpha.root / "iter-000000" / "decide" / "test.json").read_text())["models"] == 2
    assert step_key(2, "train", 0) not in a.steps

    # published run directory: committee lineage, explore/label folders, growing dataset
    model = (alpha.root / "iter-000001" / "train" / "member-001" / "model.pt").read_text()
    assert model.startswith("model-i1-m1 frames=3 parent=model-i0-m1")
    assert sorted(p.name for p in (alpha.root / "iter-000000" / "explore").iterdir()) == [
        "task-000000", "task-000001", "task-000002"]
    assert json.loads((alpha.root / "iter-000001" / "select" / "selection.json").read_text())["explored"] == 3
    assert len(list((alpha.root / "iter-000000" / "dataset" / "frames").iterdir())) == 3
    assert _frames(alpha) == [f"i{i}-task-00000{k}.frame" for i in (0, 1) for k in range(3)]
    assert (alpha.root / "iter-000001" / "decide" / "schedule.json").is_file()
    assert yaml_load(alpha.config_file) == {"run": "alpha"}

    # every unit of work ran exactly once, with the interpreter running the tests
    for name, n_labels in (("alpha", 3 + 3), ("beta", 2)):
        counts = Counter(ledger_lines(toy_env, name))
        assert max(counts.values()) == 1, counts
        assert sum(1 for s, _, _ in counts if s == "run-label") == n_labels
    alpha_calls = Counter(ledger_lines(toy_env, "alpha"))
    assert {("train", "member-0", "2"), ("train", "member-1", "2"), ("evaluate", "final", "1")} <= set(alpha_calls)
    record = json.loads(Path(a.steps[step_key(0, "select")].log).with_name("runner.json").read_text())
    assert record["command"][0] == sys.executable

    # beta lives in its own folder, one iteration
    assert (b.iteration, _frames(beta)) == (0, ["i0-task-000000.frame", "i0-task-000001.frame"])
    # stacks: one step per stack, yet every member's folder published and every member continued in order
    for name in ("train", "final-train"):
        assert [b.steps[step_key(0, name, g)].phase for g in (0, 1)] == ["Succeeded"] * 2
        assert step_key(0, name, 2) not in b.steps
        assert sorted(p.name for p in (beta.root / "iter-000000" / name).iterdir()) == [
            "member-000", "member-001", "member-002"]
    for m in range(3):
        final = (beta.root / "iter-000000" / "final-train" / f"member-00{m}" / "model.pt").read_text()
        assert final.startswith(f"model-i1-m{m} frames=2 parent=model-i0-m{m}"), final
    assert json.loads((beta.root / "iter-000000" / "decide" / "test.json").read_text())["models"] == 3
    assert not (beta.root / "iter-000001").exists()
    assert (alpha.root / ".dflow").is_dir() and (beta.root / ".dflow").is_dir()


def yaml_load(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_failures_within_tolerance_retries_and_task_timeouts(tmp_path, toy_env):
    plan = toy_plan(
        {"group_size": 3, "continue_on_success_ratio": 0.7, "retries": 1,
         "steps": {"run-explore": {"task_timeout": 2}}},
        {"prep-explore": {"n_tasks": 5}, "decide": {"stop_after": 1},
         "train": {"fail_first": ["member-1"]},             # transient: the retry succeeds
         "run-explore": {"hang": ["task-000003"]},           # hung task: killed after 2 s
         "run-label": {"fail": ["task-000001"]}})            # crashing task
    run = submit(tmp_path / "runs", "tolerant", plan)
    state = wait(run.root, TIMEOUT, 0.5)
    assert state.status == "succeeded", state.message
    assert state.steps[step_key(0, "train", 1)].attempts == 2
    assert state.steps[step_key(0, "train", 0)].attempts == 1
    explore = [state.steps[step_key(0, "run-explore", g)] for g in (0, 1)]
    assert [(s.tasks_ok, s.tasks_total) for s in explore] == [(3, 3), (1, 2)]
    label = [state.steps[step_key(0, "run-label", g)] for g in (0, 1)]
    assert [(s.tasks_ok, s.tasks_total) for s in label] == [(2, 3), (1, 1)]
    assert sorted((run.root / "iter-000000" / "explore").iterdir()) == [
        run.root / "iter-000000" / "explore" / f"task-00000{k}" for k in (0, 1, 2, 4)]
    assert _frames(run) == ["i0-task-000000.frame", "i0-task-000002.frame", "i0-task-000003.frame"]
    log = Path(explore[1].log).read_text()
    assert "task-000003" not in _frames(run) and "Traceback" in log


def test_fanout_below_ratio_fails_the_run_and_says_why(tmp_path, toy_env):
    plan = toy_plan({"group_size": 1, "retries": 0},
                    {"prep-explore": {"n_tasks": 3}, "run-label": {"fail": ["task-000000", "task-000002"]}})
    run = submit(tmp_path / "runs", "fragile", plan)
    state = wait(run.root, TIMEOUT, 0.5)
    assert state.status == "failed"
    assert "run-label: only 1 tasks succeeded, 2.4 needed" in state.message
    assert step_key(0, "collect") not in state.steps
    failed = [s for s in state.failures if s.name == "run-label-check-success-ratio"]
    assert failed and Path(failed[0].log).is_file()


def test_hung_step_is_killed_retried_and_reported(tmp_path, toy_env):
    plan = toy_plan({"retries": 0, "steps": {"select": {"timeout": 2, "retries": 1}}},
                    {"prep-explore": {"n_tasks": 1}, "select": {"hang": ["select"]}}, n_models=1)
    run = submit(tmp_path / "runs", "hung", plan)
    start = time.monotonic()
    state = wait(run.root, TIMEOUT, 0.5)
    assert state.status == "failed"
    select = state.steps[step_key(0, "select")]
    assert select.phase == "Failed" and select.attempts == 2
    assert select.reason == "timed out after 2 s (2 attempts)"
    assert f"{step_key(0, 'select')} (timed out after 2 s (2 attempts); log: {select.log})" in state.message
    assert "timed out" in Path(select.log).read_text()
    assert time.monotonic() - start < TIMEOUT
    wait_for(lambda: not _processes_under(run.root), 30, "the driver and its steps to end")


def _processes_under(root: Path) -> list[int]:
    """Pids of live processes whose command line or working directory is in the run
    directory (the driver, step runners, step processes forked by the preloader)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (str(root) in cmd or cwd.startswith(str(root))) and state not in "ZX":
            pids.append(int(proc.name))
    return pids



def test_kill_9_during_labeling_then_resume_loses_and_repeats_nothing(tmp_path, toy_env):
    plan = toy_plan({"group_size": 1, "local": {"parallel": 2, "poll_interval": 0.3, "grace": 1.0}},
                    {"prep-explore": {"n_tasks": 3}, "decide": {"stop_after": 2}, "run-label": {"sleep": 2.0}})
    run = submit(tmp_path / "runs", "crashy", plan)

    def labeled_one_in_iteration_1():
        state = status(run.root)
        done = [k for k, s in state.steps.items() if k.startswith("iter-000001--run-label") and s.phase == "Succeeded"]
        return (state, done) if done else None

    state, done_before = wait_for(labeled_one_in_iteration_1, TIMEOUT, "a finished label step in iteration 1")
    assert len(done_before) < 3, "the kill must come in the middle of labeling"
    os.kill(state.driver_pid, signal.SIGKILL)
    wait_for(lambda: run.holder() is None, 30, "the lock to be released")
    wait_for(lambda: not _processes_under(run.root), 30, "orphaned step processes to stop")
    killed = status(run.root)
    assert killed.status == "stopped" and "resume" in killed.message
    before = ledger_lines(toy_env, "crashy")

    resume(run.root, wait=True)
    final = status(run.root)
    assert final.status == "succeeded", final.message
    after = ledger_lines(toy_env, "crashy")[len(before):]
    # nothing that had finished ran again: only the interrupted label tasks repeat
    finished_tasks = {f"task-{k.rsplit('-', 1)[1]}" for k in done_before}
    repeated = [(s, n, i) for s, n, i in after if (s, n, i) in set(before)]
    assert all(s == "run-label" and i == "1" and n not in finished_tasks for s, n, i in repeated), repeated
    assert not [line for line in after if line[2] == "0"], "iteration 0 must be reused entirely"
    # and nothing is lost: every frame of both iterations exactly once
    assert _frames(run) == [f"i{i}-task-00000{k}.frame" for i in (0, 1) for k in range(3)]
    assert Counter(n for s, n, i in ledger_lines(toy_env, "crashy") if s == "run-label" and i == "0") == \
        {f"task-00000{k}": 1 for k in range(3)}


def test_stop_ends_the_driver_and_its_steps(tmp_path, toy_env):
    plan = toy_plan({}, {"prep-explore": {"n_tasks": 1}, "train": {"sleep": 60}}, n_models=1)
    run = submit(tmp_path / "runs", "stoppable", plan)
    wait_for(lambda: any(line[0] == "train" for line in ledger_lines(toy_env, "stoppable")), TIMEOUT, "training to start")
    state = stop(run.root, grace=5)
    assert state.status == "stopped" and state.message == "stopped by user"
    assert run.holder() is None
    wait_for(lambda: not _processes_under(run.root), 30, "step processes to end")
    assert status(run.root).status == "stopped"


def test_run_without_initial_data_labels_perturbed_structures_first(tmp_path, toy_env):
    runs = tmp_path / "runs"
    run = submit(runs, "boot", toy_plan({"group_size": 2}, {"prep-explore": {"n_tasks": 1}, "bootstrap": {"n_frames": 3},
                                                            "decide": {"stop_after": 1}}, bootstrap=True), {})
    final = wait(run.root, TIMEOUT, 0.5)
    assert (final.status, final.message) == ("succeeded", "")
    for key in (step_key(0, "bootstrap"), step_key(0, "bootstrap-prep-label"), step_key(0, "bootstrap-run-label", 0),
                step_key(0, "bootstrap-run-label", 1), step_key(0, "bootstrap-collect"), step_key(0, "train", 0)):
        assert final.steps[key].phase == "Succeeded", key
    # the first training saw the 3 bootstrap labels; the dataset holds them plus iteration 0's label
    model = (run.root / "iter-000000" / "train" / "member-000" / "model.pt").read_text()
    assert "frames=3 " in model
    assert len(list((run.root / "iter-000000" / "bootstrap" / "dataset" / "frames").iterdir())) == 3
    # iteration 0's collect started from the bootstrap dataset (toy frame names are per task,
    # so iteration 0's one label replaced task-000000's file; the other two are bootstrap labels)
    final_frames = run.root / "dataset" / "frames"
    assert json.loads((final_frames / "i0-task-000002.frame").read_text()) == {"energy": -1002}
    calls = Counter(ledger_lines(toy_env, "boot"))
    assert calls[("bootstrap", "-", "0")] == 1
    assert calls[("train", "member-0", "0")] == 1 and calls[("run-label", "task-000001", "0")] == 1
