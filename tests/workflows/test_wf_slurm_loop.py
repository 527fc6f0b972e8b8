"""The `slurm` template's loop shape with the project's real step functions on a real Slurm,
with kill -9 of the driver and resume (issue 20, scale-out).

templates/slurm.yaml's workflow section (dispatcher engine; train, run-explore and run-label as
Slurm jobs, the light steps local), adapted to the single-node test Slurm of conftest.py
(partition ``debug``, 1 CPU per job, 1 s polling, job folders under the test's tmp). The steps
are the real adapters of dpa3_al.steps: MD exploration with a committee, selection, EMT labels
(ASE), the labeled dataset, the schedule; training is the stand-in of wf_science.py (a tiny
random DPA3 model per member), which keeps the test near a minute. One iteration.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml

from dpa3_al.common.typed_config import from_dict
from dpa3_al.dataset import LabeledDataset
from dpa3_al.workflows import Plan, resume, status, submit, wait
from dpa3_al.workflows.keys import step_key

from .test_wf_science import EXPLORE
from .wf_helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
LABEL = {"label": {"kind": "ase", "frames_per_task": 1}}
pytestmark = pytest.mark.slow


def _slurm_workflow(tmp_path: Path) -> dict:
    """templates/slurm.yaml's workflow section, pointed at the test cluster."""
    wf = yaml.safe_load((ROOT / "templates" / "slurm.yaml").read_text())["workflow"]
    assert wf["engine"] == "dispatcher" and set(wf["dispatcher"]["steps"]) == {"train", "run-explore", "run-label"}
    wf["dispatcher"]["machine"]["remote_root"] = str(tmp_path / "jobs")
    wf["dispatcher"]["resources"].update(queue_name="debug", cpu_per_node=1, custom_flags=[])
    wf["dispatcher"]["poll_interval"] = 1
    wf.update(group_size=1, max_iterations=1, local={"poll_interval": 0.5, "preload_modules": ["torch"]})
    return wf


def _plan(tmp_path: Path) -> Plan:
    return from_dict(Plan, {"workflow": _slurm_workflow(tmp_path), "loop": {"n_models": 2, "calls": {
        "train": {"func": "wf_science:train_member", "config": {"type_map": ["Cu"]}},
        "prep-explore": {"config": EXPLORE}, "run-explore": {"config": EXPLORE}, "decide": {"config": EXPLORE},
        "select": {"config": {"select": {"f_lo": 0.0, "f_hi": 1.0e9, "max_select": 3}}},
        "prep-label": {"config": LABEL}, "run-label": {"config": LABEL}}}})


def _same_sites(a, b) -> bool:
    """Same positions up to periodic images (the dataset stores a frame's canonical form)."""
    diff = a.get_scaled_positions(wrap=True) - b.get_scaled_positions(wrap=True)
    return np.allclose((diff + 0.5) % 1.0 - 0.5, 0.0, atol=1e-6) and np.allclose(a.cell.array, b.cell.array, atol=1e-6)



def test_slurm_template_loop_survives_kill_9_and_resume(tmp_path, toy_env, slurm, monkeypatch):  # noqa: ARG001
    monkeypatch.setenv("SLURM_CONF", slurm["SLURM_CONF"])
    run = submit(tmp_path / "runs", "cu-slurm", _plan(tmp_path))

    def labeling():
        state = status(run.root)
        if state.status not in ("submitted", "running"):
            raise AssertionError(f"run ended before the kill: {state.status} {state.message}")
        started = [k for k, s in state.steps.items() if "--run-label-" in k and s.phase in ("Running", "Succeeded")]
        return state if started else None

    state = wait_for(labeling, 400, "labeling to start")
    assert step_key(0, "collect") not in state.steps, "the kill must come before the dataset is written"
    os.kill(state.driver_pid, signal.SIGKILL)
    wait_for(lambda: run.holder() is None, 30, "the lock to be released")
    assert status(run.root).status == "stopped"

    resume(run.root)
    final = wait(run.root, 600, 0.5)
    assert final.status == "succeeded", final.message + run.log_file.read_text()[-3000:]
    assert final.attempt == 2
    it = run.iteration_dir(0)
    # the heavy steps ran as Slurm jobs, the light ones locally
    for key in (step_key(0, "train", 0), step_key(0, "run-explore", 0), step_key(0, "run-label", 0),
                step_key(0, "select"), step_key(0, "collect")):
        assert final.steps[key].phase == "Succeeded", key
    # no labeled frame lost or twice: 3 selected candidates, 3 labels, 3 distinct dataset frames
    selection = json.loads((it / "select" / "selection.json").read_text())
    assert selection["n_selected"] == 3
    summaries = [json.loads(p.read_text()) for p in (it / "label").glob("batch-*/summary.json")]
    assert sum(s["labeled"] for s in summaries) == 3
    candidates = ase.io.read(it / "select" / "candidates.extxyz", index=":")
    stored = list(LabeledDataset(run.dataset_link).frames())
    assert len(candidates) == len(stored) == 3
    for atoms in candidates:            # each candidate exactly once, with its EMT label
        matches = [f for f in stored if len(f) == len(atoms) and _same_sites(f, atoms)]
        assert len(matches) == 1
        assert np.isfinite(matches[0].get_potential_energy())
