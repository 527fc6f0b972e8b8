"""Offline Argo render of the loop: a golden file, plus checks that say what is wrong."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from dpa3_al.common.typed_config import from_dict
from dpa3_al.workflows import Plan, render

GOLDEN = Path(__file__).parent / "golden" / "argo_loop.yaml"
UPDATE = os.environ.get("DPA3_AL_UPDATE_GOLDEN") == "1"

PLAN = {
    "workflow": {
        "engine": "argo", "group_size": 4, "continue_on_success_ratio": 0.8, "max_iterations": 12,
        "retries": 2, "timeout": 3600,
        "steps": {"run-label": {"timeout": 7200, "task_timeout": 600}, "decide": {"retries": 0}},
        "argo": {"image": "registry.example.org/dpa3-al:0.1.0", "parallelism": 20,
                 "s3": {"endpoint": "minio.example.org:9000", "bucket": "dpa3"}},
    },
    "loop": {"n_models": 4, "init_data": ["data/water"], "init_models": ["models/dpa3.pt"],
             "calls": {"prep-explore": {"config": {"temps": [300, 600]}}}},
}


@pytest.fixture(scope="module")
def rendered():
    secrets = {"DFLOW_TOKEN": "tok-abc123-secret", "DFLOW_S3_SECRET_KEY": "s3-secret-xyz789",
               "DFLOW_S3_ACCESS_KEY": "s3-access-key-42"}
    old = {k: os.environ.get(k) for k in secrets}
    os.environ.update(secrets)
    try:
        text = render(from_dict(Plan, PLAN), "water", normalise=True)
        raw = render(from_dict(Plan, PLAN), "water")
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return text, raw, secrets


def test_render_matches_golden_file(rendered):
    text, _, _ = rendered
    if UPDATE:
        GOLDEN.write_text(text)
    assert GOLDEN.is_file(), "no golden file: run once with DPA3_AL_UPDATE_GOLDEN=1 and review it"
    assert text == GOLDEN.read_text(), ("rendered Argo YAML differs from tests/workflows/golden/argo_loop.yaml; "
                                        "review the change, then regenerate with DPA3_AL_UPDATE_GOLDEN=1")


def test_render_is_a_complete_workflow_without_secrets(rendered):
    text, raw, secrets = rendered
    for secret in secrets.values():
        assert secret not in raw, "a credential leaked into the manifest"
    doc = yaml.safe_load(raw)
    assert (doc["apiVersion"], doc["kind"]) == ("argoproj.io/v1alpha1", "Workflow")
    assert doc["metadata"]["generateName"] == "water-"
    spec = doc["spec"]
    assert spec["entrypoint"] == "main" and spec["parallelism"] == 20
    templates = {t["name"]: t for t in spec["templates"]}
    by_step = {re.sub(r"-x\d+$", "", name): t for name, t in templates.items()
               if re.fullmatch(r"[a-z-]+?(-x\d+)?", name) and "script" in t}
    for step in ("train", "prep-explore", "run-explore", "select", "prep-label", "run-label", "collect", "decide"):
        body = by_step[step]["script"]
        assert body["image"] == "registry.example.org/dpa3-al:0.1.0" and body["command"] == ["python3"]
    assert by_step["run-label"]["timeout"] == "7200s" and by_step["select"]["timeout"] == "3600s"
    assert by_step["train"]["retryStrategy"] == {"retryPolicy": "Always", "limit": 2}
    assert "retryStrategy" not in by_step["decide"]
    assert "timeout=600)" in by_step["run-label"]["script"]["source"]          # per-task limit
    assert "from dpa3_al.workflows.ops.run_explore import RunExplore" in by_step["run-explore"]["script"]["source"]


def test_render_loop_structure(rendered):
    doc = yaml.safe_load(rendered[1])
    block = next(t for t in doc["spec"]["templates"] if t["name"] == "iteration-block")
    steps = {s["name"]: s for row in block["steps"] for s in row}
    keys = {name: next(p["value"] for p in s["arguments"]["parameters"] if p["name"] == "dflow_key")
            for name, s in steps.items() if any(p["name"] == "dflow_key" for p in s["arguments"]["parameters"])}
    assert keys["run-explore"] == "{{inputs.parameters.iter_name}}--run-explore-{{item}}"
    assert keys["decide"] == "{{inputs.parameters.iter_name}}--decide"
    assert keys["next-iteration"] == "{{inputs.parameters.iter_name}}--next-iteration"
    nxt = steps["next-iteration"]
    assert nxt["template"] == "iteration-block"                                 # recursion
    assert nxt["when"] == "{{steps.decide.outputs.parameters.done}} == false"
    for fanout in ("run-explore", "run-label"):
        assert steps[fanout]["continueOn"]["failed"] is True
        check = steps[f"{fanout}-check-success-ratio"]["arguments"]["parameters"]
        assert {p["name"]: p["value"] for p in check}["threshold"] == "0.8"
    decide_params = {p["name"]: p["value"] for p in steps["decide"]["arguments"]["parameters"]}
    assert decide_params["max_iterations"] == "12"
    main = next(t for t in doc["spec"]["templates"] if t["name"] == "main")
    arts = {a["name"]: a for a in main["steps"][0][0]["arguments"]["artifacts"]}
    assert arts["init_data"]["s3"]["key"] == "dpa3-al/water/inputs/init_data.tgz"
    assert arts["init_models"]["s3"]["key"] == "dpa3-al/water/inputs/init_models.tgz"
