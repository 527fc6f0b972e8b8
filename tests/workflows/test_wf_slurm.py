"""The dispatcher engine against a real single-node Slurm (see the ``slurm`` fixture).

The heavy steps (train, run-explore, run-label) must run as Slurm jobs submitted by
dpdispatcher through dflow's DispatcherExecutor; the light ones stay local processes.
"""

from __future__ import annotations

import json
import subprocess

from dpa3_al.workflows import submit, wait
from dpa3_al.workflows.keys import step_key

from .wf_helpers import ledger_lines, toy_plan


def _where(path):
    return json.loads((path / "where.json").read_text())["slurm_job_id"]


def test_heavy_steps_run_as_slurm_jobs(tmp_path, toy_env, slurm, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm["SLURM_CONF"])
    plan = toy_plan({"engine": "dispatcher", "group_size": 2, "retries": 0,
                     "dispatcher": {"machine": {"batch_type": "Slurm", "context_type": "LocalContext"},
                                    "resources": {"number_node": 1, "cpu_per_node": 1, "queue_name": "debug"},
                                    "poll_interval": 1}},
                    {"prep-explore": {"n_tasks": 3}, "decide": {"stop_after": 1}}, n_models=2)
    run = submit(tmp_path / "runs", "onslurm", plan)
    state = wait(run.root, 300, 0.5)
    assert state.status == "succeeded", state.message + (run.log_file.read_text()[-3000:])
    it = run.root / "iter-000000"
    jobs = {
        "train": [_where(it / "train" / f"member-00{m}") for m in (0, 1)],
        "run-explore": [_where(it / "explore" / f"task-00000{k}") for k in range(3)],
        "run-label": [_where(it / "label" / f"task-00000{k}") for k in range(3)],
    }
    for step, ids in jobs.items():
        assert all(ids), f"{step} did not run in a Slurm job: {ids}"
    # one job per step: members each on their own, tasks grouped two by two
    assert len(set(jobs["train"])) == 2
    assert jobs["run-explore"][0] == jobs["run-explore"][1] != jobs["run-explore"][2]
    assert _where(it / "select") is None, "light steps must stay local"
    # Slurm saw those jobs (accounting is off; the controller keeps finished jobs for MinJobAge)
    shown = subprocess.run(["scontrol", "show", "job", jobs["run-label"][2]], capture_output=True, text=True,
                           env={**slurm})
    assert "JobState=COMPLETED" in shown.stdout, shown.stdout + shown.stderr
    assert state.steps[step_key(0, "run-label", 1)].tasks_ok == 1
    assert len([line for line in ledger_lines(toy_env, "onslurm") if line[0] == "run-label"]) == 3
