"""A run's life cycle through the CLI and the library (issue 20): the resume handshake, corrupt
state files, why a step failed and which failures are not retried, the labeler preflight,
and no temporary folders left behind. Toy step functions (wf_toy) in dflow's local mode.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .wf_helpers import ledger_lines, toy_plan, wait_for
from dpa3_al.cli import main
from dpa3_al.workflows import resume, status, stop, submit, wait
from dpa3_al.workflows.keys import step_key
from dpa3_al.workflows.state import CorruptState

TIMEOUT = 240
CLI = [sys.executable, "-m", "dpa3_al.cli"]
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"



def _cli(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def _stopped_toy_run(tmp_path: Path, toy_env: Path, name: str):
    """A toy run stopped by the user while its one committee member trains (3 s per attempt)."""
    plan = toy_plan({}, {"prep-explore": {"n_tasks": 1}, "train": {"sleep": 3}, "decide": {"stop_after": 0}},
                    n_models=1)
    run = submit(tmp_path / "runs", name, plan)
    wait_for(lambda: any(line[0] == "train" for line in ledger_lines(toy_env, name)), TIMEOUT, "training")
    assert stop(run.root, grace=2).status == "stopped"
    return run


def test_resume_wait_follows_the_new_driver_to_the_end(tmp_path, toy_env, monkeypatch):
    """Was: 'dpa3-al resume RUN --wait' printed the old 'stopped' state and returned 1 within a
    second while the run went on. Now resume returns once the new driver has written its state,
    and --wait follows it to 'succeeded'."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    run = _stopped_toy_run(tmp_path, toy_env, "handshake")
    before = status(run.root)
    assert before.status == "stopped" and before.attempt == 1

    start = time.monotonic()
    done = _cli("resume", "handshake", "--runs", str(tmp_path / "runs"), "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - start > 3            # it waited for a training attempt of 3 s
    assert "run handshake (local): succeeded" in done.stdout
    final = status(run.root)
    assert (final.status, final.attempt) == ("succeeded", 2)
    assert final.steps[step_key(0, "decide")].phase == "Succeeded"
    # the steps' OpenMP threads do not spin (driver.RUN_ENV_DEFAULTS)
    assert json.loads((run.iteration_dir(0) / "select" / "where.json").read_text())["omp_wait_policy"] == "PASSIVE"


def test_resume_returns_with_the_new_driver_holding_the_run(tmp_path, toy_env, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")          # the user's choice wins over the default
    run = _stopped_toy_run(tmp_path, toy_env, "holder")
    resume(run.root)
    state = status(run.root)       # right after resume: the new driver's state, never the old one
    assert state.status == "running" and state.attempt == 2
    assert state.driver_pid == run.holder() and state.driver_pid is not None
    assert wait(run.root, TIMEOUT, 0.3).status == "succeeded"
    assert json.loads((run.iteration_dir(0) / "select" / "where.json").read_text())["omp_wait_policy"] == "ACTIVE"


def test_corrupt_state_is_one_line_per_run_and_resume_rebuilds_it(tmp_path, toy_env, capsys):
    """Was: a corrupt state.json crashed status, resume and list (list for the whole folder)."""
    runs = tmp_path / "runs"
    good = submit(runs, "good", toy_plan({}, {"prep-explore": {"n_tasks": 1}, "decide": {"stop_after": 0}}, n_models=1))
    assert wait(good.root, TIMEOUT, 0.3).status == "succeeded"
    bad = submit(runs, "bad", toy_plan({}, {"prep-explore": {"n_tasks": 1}, "decide": {"stop_after": 0}}, n_models=1))
    assert wait(bad.root, TIMEOUT, 0.3).status == "succeeded"
    calls_before = len(ledger_lines(toy_env, "bad"))
    (bad.root / "state.json").write_text('{"name": "bad", "status": "runn')        # truncated

    with pytest.raises(CorruptState):
        status(bad.root)
    assert main(["status", "bad", "--runs", str(runs)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad.root / "state.json") in err[0] and "dpa3-al resume" in err[0]

    assert main(["list", "--runs", str(runs)]) == 1
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert rows == {"bad": "unreadable", "good": "succeeded"}
    assert str(bad.root / "state.json") in err

    (bad.root / "state.json").write_text('[1, 2]')                                   # JSON, not a state
    assert main(["resume", "bad", "--runs", str(runs)]) == 0
    final = wait(bad.root, TIMEOUT, 0.3)
    assert final.status == "succeeded", final.message
    assert len(ledger_lines(toy_env, "bad")) == calls_before       # every step reused from dflow's records


def test_a_deterministic_error_is_not_retried_and_is_the_reason(tmp_path, toy_env):
    """Was: 'exit status 1 (2 attempts)', the reason only in log.txt, and an input error retried."""
    plan = toy_plan({"retries": 2}, {"prep-explore": {"n_tasks": 1}, "select": {"user_error": ["select"]},
                                     "train": {"fail_first": ["member-0"]}}, n_models=1)
    run = submit(tmp_path / "runs", "bad-input", plan)
    state = wait(run.root, TIMEOUT, 0.3)
    assert state.status == "failed"
    select = state.steps[step_key(0, "select")]
    assert select.attempts == 1                                         # not retried
    assert select.reason == ("dpa3_al.common.errors.UserError: toy input error of select: fix toy.value "
                             "(exit status 1, 1 attempt; not retried: it fails the same way every time)")
    assert "toy input error of select" in state.message
    assert state.steps[step_key(0, "train", 0)].attempts == 2          # a transient error still is retried
    assert main(["status", str(run.root)]) == 1


def _vasp_config(tmp_path: Path, command: str) -> Path:
    """The quickstart config with a VASP labeler whose program is ``command``."""
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "data").symlink_to(TEMPLATES / "data")           # the template's relative data paths
    cfg = yaml.safe_load((TEMPLATES / "quickstart.yaml").read_text())
    cfg["label"] = {"kind": "vasp", "command": command, "vasp": {"potcar_dir": str(tmp_path)}}
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_missing_labeler_program_is_refused_before_any_work(tmp_path, capsys):
    """Was: found at prep-label, after training and exploration."""
    config = _vasp_config(tmp_path, "vasp-not-installed-here")
    assert main(["validate", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert "program 'vasp-not-installed-here' not found on PATH" in err and "before any work" in err
    assert main(["submit", str(config), "--runs", str(tmp_path / "runs")]) == 1
    assert "vasp-not-installed-here" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_driver_checks_the_labeler_before_training(tmp_path, toy_env):
    """A run submitted through the library (or a machine that changed since) fails at its start."""
    toy = toy_plan({}, {"prep-explore": {"n_tasks": 1}}, n_models=1)
    from dpa3_al.workflows import LoopSpec, Plan, StepCall

    label = {"label": {"kind": "vasp", "command": "vasp-not-installed-here", "vasp": {"potcar_dir": str(tmp_path)}}}
    calls = {**toy.loop.calls, "run-label": StepCall(config=label)}
    run = submit(tmp_path / "runs", "nolabeler", Plan(workflow=toy.workflow, loop=LoopSpec(n_models=1, calls=calls)),
                 check=False)
    state = wait(run.root, TIMEOUT, 0.3)
    assert state.status == "failed" and "vasp-not-installed-here" in state.message
    assert ledger_lines(toy_env, "nolabeler") == []                 # nothing trained


def _our_tmp_folders(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.glob("dpa3-al-*") if not p.name.startswith("dpa3-al-kernels"))


def test_no_temporary_folder_is_left_after_stop_or_kill(tmp_path, toy_env, monkeypatch):
    """Was: an empty dpa3-al-XXXX folder (the step preloader's socket) in /tmp per stop or kill."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    run = _stopped_toy_run(tmp_path, toy_env, "tidy")
    wait_for(lambda: not _our_tmp_folders(tmp), 30, "the preloader's folder to go after stop")

    resume(run.root)
    wait_for(lambda: _our_tmp_folders(tmp), 60, "the preloader of the resumed driver")
    os.kill(status(run.root).driver_pid, signal.SIGKILL)
    wait_for(lambda: not _our_tmp_folders(tmp), 30, "the preloader's folder to go after kill -9")


def test_sweep_removes_only_stale_preloader_folders(tmp_path, monkeypatch):
    import socket

    from dpa3_al.workflows.zygote import sweep_stale

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    old = time.time() - 3600
    empty, dead, live, young, other = (tmp_path / f"dpa3-al-{n}" for n in ("empty", "dead", "live", "young", "other"))
    for folder in (empty, dead, live, young, other):
        folder.mkdir()
    (other / "keep.txt").write_text("not ours to remove")
    with socket.socket(socket.AF_UNIX) as gone:
        gone.bind(str(dead / "zygote.sock"))            # closed at once: nobody listens
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(live / "zygote.sock"))
    listener.listen(1)
    try:
        for folder in (empty, dead, live, other):
            os.utime(folder, (old, old))
        removed = sweep_stale()
    finally:
        listener.close()
    assert sorted(p.name for p in removed) == ["dpa3-al-dead", "dpa3-al-empty"]
    assert live.is_dir() and young.is_dir() and (other / "keep.txt").is_file()
