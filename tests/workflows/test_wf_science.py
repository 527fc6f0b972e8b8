"""The loop with the project's real step functions: exploration (ASE MD with a committee of
tiny DPA3 models), selection, EMT labels, the labeled dataset, the stage schedule. Training
is a stand-in (random tiny models) until the model room's ``train_member`` exists."""

from __future__ import annotations

import json

from dpa3_al.dataset import LabeledDataset
from dpa3_al.common.typed_config import from_dict
from dpa3_al.workflows import Plan, submit, wait
from dpa3_al.workflows.keys import step_key

EXPLORE = {"explore": {
    "stages": [{"max_iter": 2, "conv_accuracy": 0.99, "task_groups": [{
        "name": "cu",
        "configurations": [{"lattice": {"symbols": "Cu", "crystal": "fcc", "a": 3.61, "cubic": True},
                            "supercell": [2, 2, 2], "perturb": {"copies": 2, "atom": 0.05}}],
        "n_sample": 2, "temps": [300], "steps": 20, "traj_freq": 5, "timestep": 1.0}]}],
    "stop": {"max_devi_f": None}}}
LABEL = {"label": {"kind": "ase", "frames_per_task": 1}}


def test_two_iterations_with_the_real_step_functions(tmp_path, toy_env):  # noqa: ARG001 - PYTHONPATH
    plan = from_dict(Plan, {
        "workflow": {"group_size": 2, "retries": 0,
                     "local": {"poll_interval": 0.5, "preload_modules": ["torch", "dpa3_al.model"]}},
        "loop": {"n_models": 2, "calls": {
            "train": {"func": "wf_science:train_member", "config": {"type_map": ["Cu"]}},
            "prep-explore": {"config": EXPLORE}, "run-explore": {"config": EXPLORE}, "decide": {"config": EXPLORE},
            "select": {"config": {"select": {"f_lo": 0.0, "f_hi": 1.0e9, "max_select": 3}}},
            "prep-label": {"config": LABEL}, "run-label": {"config": LABEL}}}})
    run = submit(tmp_path / "runs", "cu", plan)
    state = wait(run.root, 600, 0.5)
    assert state.status == "succeeded", state.message
    assert state.iteration == 1 and step_key(1, "next-iteration") not in state.steps   # stage max_iter = 2
    labeled = 0
    for it in (0, 1):
        folder = run.iteration_dir(it)
        selection = json.loads((folder / "select" / "selection.json").read_text())
        assert selection["tasks"]["finished"] == 2 and selection["n_frames"] == 10     # 2 tasks x 5 frames
        summaries = [json.loads(p.read_text()) for p in (folder / "label").glob("batch-*/summary.json")]
        assert len(summaries) == 3                                                    # max_select 3, 1 per task
        labeled += sum(s["labeled"] for s in summaries)
        assert sorted(p.name for p in (folder / "train").iterdir()) == ["member-000", "member-001"]
    assert labeled == 6
    assert LabeledDataset(run.dataset_link).summary().frames == labeled       # nothing lost, nothing twice
    schedule = json.loads((run.iteration_dir(1) / "decide" / "schedule.json").read_text())
    assert schedule["state"]["finished"] is True
