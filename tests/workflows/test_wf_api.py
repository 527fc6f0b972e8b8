"""Small contracts of the workflow package: lazy imports, early errors, the OP signatures."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dpa3_al.common.errors import UserError
from dpa3_al.common.typed_config import ConfigError, from_dict
from dpa3_al.workflows import LoopSpec, Plan, StepCall, status, submit
from dpa3_al.workflows.keys import CALL_NAMES, STEP_NAMES
from dpa3_al.workflows.ops import OP_MODULES, op_class
from dpa3_al.workflows.ops._call import FunctionNotFound, present, resolve

from .wf_helpers import toy_plan


def test_package_and_runner_do_not_import_dflow():
    code = ("import sys, dpa3_al.workflows as w, dpa3_al.workflows.runner, dpa3_al.workflows.keys; "
            "w.WorkflowConfig; assert 'dflow' not in sys.modules, 'dflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_step_has_an_op_with_func_and_config_parameters():
    assert set(OP_MODULES) == set(CALL_NAMES)
    for name in CALL_NAMES:
        sign = op_class(name).get_input_sign()
        module, _, function = sign["func"].default.partition(":")
        assert module.startswith("dpa3_al.") and function, (name, sign["func"].default)
        assert sign["config"].default == {}


#: the keywords each OP passes to its function (docs/workflows.md, "What each real OP calls")
OP_CALLS = {
    "train": ("config", "data", "init_model", "member", "iteration", "workdir"),
    "prep-explore": ("config", "schedule", "iteration", "workdir"),
    "run-explore": ("config", "task", "models", "workdir"),
    "select": ("config", "explored", "models", "iteration", "workdir"),
    "bootstrap": ("config", "workdir"),
    "prep-label": ("config", "selection", "iteration", "workdir"),
    "run-label": ("config", "task", "workdir"),
    "collect": ("config", "dataset", "labeled", "iteration", "workdir"),
    "decide": ("config", "schedule", "selection", "dataset", "iteration", "workdir"),
}


def test_ops_pass_the_documented_keywords_and_real_functions_accept_them():
    import inspect

    from .wf_toy import bootstrap, collect, decide, prep_explore, prep_label, run_explore, run_label, select, train

    toys = dict(zip(STEP_NAMES, (train, prep_explore, run_explore, select, prep_label, run_label, collect, decide)))
    toys["bootstrap"] = bootstrap
    for name, keywords in OP_CALLS.items():
        source = inspect.getsource(op_class(name).execute)
        for keyword in keywords:
            assert f"{keyword}=" in source, f"OP {name} does not pass {keyword}="
        inspect.signature(toys[name]).bind(**dict.fromkeys(keywords))
        try:
            real = resolve(op_class(name).get_input_sign()["func"].default)
        except FunctionNotFound:
            continue                  # that room has not written it yet
        inspect.signature(real).bind(**dict.fromkeys(keywords))


def test_resolve_names_what_is_missing():
    assert resolve("os.path:join") is __import__("os").path.join
    assert resolve("os.path.join") is __import__("os").path.join
    with pytest.raises(FunctionNotFound, match="cannot import no_such_module"):
        resolve("no_such_module:f")
    with pytest.raises(FunctionNotFound, match="has no attribute 'nope'"):
        resolve("os.path:nope")
    assert present([None, "a", None, "b"]) == [__import__("pathlib").Path("a"), __import__("pathlib").Path("b")]
    assert present(None) == []


def test_submit_refuses_a_step_function_that_cannot_be_found(tmp_path, toy_env):  # noqa: ARG001
    toy = toy_plan()
    calls = {**toy.loop.calls, "select": StepCall(func="dpa3_al.no_such_module:select")}
    plan = Plan(workflow=toy.workflow, loop=LoopSpec(calls=calls))
    with pytest.raises(ConfigError, match=r"calls\.select\.func: module 'dpa3_al.no_such_module'"):
        submit(tmp_path / "runs", "bad", plan)
    assert not (tmp_path / "runs" / "bad").exists()


def test_loop_spec_rejects_unknown_steps():
    with pytest.raises(ConfigError, match=r"loop\.calls\.label: unknown step"):
        from_dict(Plan, {"loop": {"calls": {"label": {"func": "x:y"}}}})


def test_status_of_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        status(tmp_path)
