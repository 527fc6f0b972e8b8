"""Step keys and the ``workflow:`` config section."""

from __future__ import annotations

import pytest

from dpa3_al.common.typed_config import ConfigError, from_dict, to_dict
from dpa3_al.workflows import WorkflowConfig
from dpa3_al.workflows.keys import StepKey, iteration_name, parse_step_key, step_key


def test_step_key_format_and_round_trip():
    assert step_key(3, "run-explore", 17) == "iter-000003--run-explore-000017"
    assert step_key(0, "select") == "iter-000000--select"
    for key in (StepKey(3, "run-explore", 17), StepKey(12, "decide"), StepKey(0, "next-iteration")):
        assert parse_step_key(str(key)) == key
    assert step_key("{{inputs.parameters.iter_name}}", "run-label", "{{item}}") == \
        "{{inputs.parameters.iter_name}}--run-label-{{item}}"
    assert iteration_name(7) == "iter-000007"


@pytest.mark.parametrize("key", [None, "", "smoke-train-init-artifact-ab12c", "iter-3--train", "iter-000003-train"])
def test_parse_step_key_rejects_foreign_keys(key):
    assert parse_step_key(key) is None


@pytest.mark.parametrize("name", ["Run", "run--explore", "run_explore", "-run", "7run"])
def test_step_key_rejects_bad_names(name):
    with pytest.raises(ValueError, match="step name"):
        step_key(1, name)


def test_step_key_rejects_out_of_range():
    with pytest.raises(ValueError):
        step_key(1_000_000, "train")
    with pytest.raises(ValueError):
        step_key(1, "train", -1)


def test_step_policies_override_the_run_wide_settings_key_by_key():
    cfg = from_dict(WorkflowConfig, {"retries": 2, "timeout": 60,
                                     "steps": {"run-label": {"retries": 0, "task_timeout": 9.5}}})
    assert cfg.policy("train").retries == 2 and cfg.policy("train").timeout == 60
    label = cfg.policy("run-label")
    assert (label.retries, label.timeout, label.task_timeout) == (0, 60, 9.5)
    assert cfg.policy("bootstrap-run-label") == label          # the bootstrap copy of a step shares its policy
    again = from_dict(WorkflowConfig, to_dict(cfg))
    assert again == cfg


@pytest.mark.parametrize("data, path", [
    ({"engine": "k8s"}, "engine"),
    ({"group_size": 0}, "group_size"),
    ({"continue_on_success_ratio": 1.5}, "continue_on_success_ratio"),
    ({"timeout": -1}, "timeout"),
    ({"retries": "two"}, "retries"),
    ({"steps": {"labels": {"retries": 1}}}, "steps.labels"),
    ({"steps": {"train": {"task_timeout": 5}}}, "steps.train.task_timeout"),
    ({"steps": {"train": {"retry": 1}}}, "steps.train.retry"),
    ({"local": {"parallel": -2}}, "local.parallel"),
    ({"argo": {"s3": {"bucket": 3}}}, "argo.s3.bucket"),
    ({"dispatcher": {"machine": {"batch_type": "Slurmm", "context_type": "LocalContext"}}},
     "dispatcher.machine.batch_type"),
    ({"dispatcher": {"machine": {"batch_type": "Slurm"}}}, "dispatcher.machine.context_type"),
    ({"dispatcher": {"steps": ["train", "labels"]}}, "dispatcher.steps[1]"),
    ({"enigne": "local"}, "enigne"),
])
def test_workflow_config_errors_name_the_key(data, path):
    with pytest.raises(ConfigError) as err:
        from_dict(WorkflowConfig, data, path="workflow", source="run.yaml")
    message = str(err.value)
    assert message.startswith(f"run.yaml: workflow.{path}:"), message
    assert "\n" not in message
