"""Contracts of the workflow package: lazy imports, early errors, and each OP's behaviour.

The OPs are executed in-process (``Op().execute(OPIO({...}))``, the way dflow runs them in a
step) with a fake step function (:mod:`.wf_spy`) passed through their ``func`` parameter:
each test checks the keywords the OP calls its function with (the contract of
docs/workflows.md, "What each real OP calls") and the outputs it packs from the reply.
The wiring test builds the real loop and checks each step against its OP's signature.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from dflow.python import OPIO, Artifact, PythonOPTemplate

from dpa3_al.common.errors import UserError
from dpa3_al.common.typed_config import ConfigError, from_dict
from dpa3_al.workflows import LoopSpec, Plan, StepCall, status, submit
from dpa3_al.workflows.keys import CALL_NAMES
from dpa3_al.workflows.ops import OP_MODULES, op_class
from dpa3_al.workflows.ops._call import FunctionNotFound, present, resolve

from . import wf_spy
from .wf_helpers import toy_plan

#: the keywords each OP passes to its function (docs/workflows.md, "What each real OP calls")
OP_CALLS = {
    "train": ("config", "data", "init_model", "member", "iteration", "workdir"),
    "prep-explore": ("config", "schedule", "iteration", "workdir"),
    "run-explore": ("config", "task", "models", "workdir"),
    "select": ("config", "explored", "models", "calibration", "iteration", "workdir", "labeled_data"),
    "bootstrap": ("config", "workdir"),
    "prep-label": ("config", "selection", "iteration", "workdir"),
    "run-label": ("config", "task", "workdir"),
    "collect": ("config", "dataset", "labeled", "iteration", "workdir"),
    "evaluate": ("config", "models", "selection", "labeled", "dataset", "init_data", "test_data", "calibration",
                 "iteration", "final", "workdir"),
    "decide": ("config", "schedule", "selection", "dataset", "iteration", "workdir", "evaluation"),
}
CONFIG = {"temps": [300.0, 600.0], "nested": {"k": 1}}


def test_package_and_runner_do_not_import_dflow():
    code = ("import sys, dpa3_al.workflows as w, dpa3_al.workflows.runner, dpa3_al.workflows.keys; "
            "w.WorkflowConfig, w.Plan, w.LoopSpec, w.RunState, w.RunDir; "
            "assert 'dflow' not in sys.modules, 'dflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- every OP imports, and its real function takes the documented keywords ---------------
@pytest.mark.parametrize("name", CALL_NAMES)
def test_op_module_imports_and_its_real_function_accepts_the_documented_keywords(name):
    module, cls = OP_MODULES[name]
    op = getattr(importlib.import_module(module), cls)      # an import error fails here
    real = resolve(op.get_input_sign()["func"].default)      # FunctionNotFound fails here
    inspect.signature(real).bind(**dict.fromkeys(OP_CALLS[name]))


# -- the loop wires each OP's declared inputs, and consumes only declared outputs ---------
@pytest.fixture(scope="module")
def loop_steps():
    """The OP steps of the real loop (with bootstrap), built for Argo offline (no server)."""
    from dpa3_al.workflows.argo import ArgoEngine
    from dpa3_al.workflows.engine import iter_steps
    from dpa3_al.workflows.loop import build_entry

    plan = from_dict(Plan, {"workflow": {"engine": "argo"},
                            "loop": {"n_models": 2, "bootstrap": True, "init_data": ["d"], "init_models": ["m"]}})
    engine = ArgoEngine(plan.workflow, offline=True)
    engine.configure()
    entry = build_entry(engine, plan.loop)
    return [s for s in iter_steps(entry) if isinstance(s.template, PythonOPTemplate)]


def _required(sign) -> set[str]:
    return {k for k, v in sign.items()
            if not hasattr(v, "default") and not (isinstance(v, Artifact) and v.optional)}


def test_every_op_is_a_step_of_the_loop(loop_steps):
    used = {s.template.op_class for s in loop_steps}
    assert used == {op_class(name) for name in CALL_NAMES}


def test_loop_wires_only_declared_inputs_and_every_required_one(loop_steps):
    for step in loop_steps:
        sign = step.template.op_class.get_input_sign()
        wired = {k for k in step.inputs.parameters if not k.startswith("dflow_")} | set(step.inputs.artifacts)
        assert wired <= set(sign), f"{step.name} wires undeclared inputs {sorted(wired - set(sign))}"
        assert _required(sign) <= wired, f"{step.name} leaves {sorted(_required(sign) - wired)} unwired"


def test_loop_consumes_only_declared_outputs(loop_steps):
    ops = {s.name: s.template.op_class for s in loop_steps}
    consumed = 0
    for step in loop_steps:
        sources = [a.source for a in step.inputs.artifacts.values()] + \
                  [p.value for p in step.inputs.parameters.values()]
        for src in sources:
            producer = getattr(getattr(src, "step", None), "name", None)
            if producer in ops and not src.name.startswith("dflow_"):
                assert src.name in ops[producer].get_output_sign(), (step.name, producer, src.name)
                consumed += 1
    assert consumed >= 10        # the loop does chain its steps through their outputs


# -- each OP executed directly with the fake function ------------------------------------
def _paths(tmp: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        (tmp / name).mkdir(parents=True, exist_ok=True)
        out.append(tmp / name)
    return out


def _tasks(kwargs):
    return [str(kwargs["workdir"] / f"task-{k:06d}") for k in range(3)]


def _schedule(kwargs):
    (kwargs["workdir"] / "schedule.json").write_text("{}")
    return False


def _case(name, inputs, expect, reply, outputs):
    return pytest.param(name, inputs, expect, reply, outputs, id=name)


# (step, OP inputs besides func/config, expected call keywords besides config, reply, outputs);
# paths are relative to the test's tmp folder (the OP's working folder)
CASES = [
    _case("train", {"member": 3, "iteration": 2, "init_data": ["a", None, "b"], "dataset": "ds",
                    "init_models": ["m0", "m1"]},
          {"data": ["a", "b", "ds"], "init_model": "m1", "member": 3, "iteration": 2, "workdir": "member-003"},
          lambda kw: kw["workdir"] / "model.pt", {"model": ["member-003/model.pt"], "member_dir": ["member-003"]}),
    _case("prep-explore", {"iteration": 1, "schedule": "sched.json"},
          {"schedule": "sched.json", "iteration": 1, "workdir": "tasks"},
          _tasks, {"tasks": ["tasks/task-000000", "tasks/task-000001", "tasks/task-000002"],
                   "task_names": ["task-000000", "task-000001", "task-000002"]}),
    _case("run-explore", {"task": "t7", "task_name": "task-000007", "models": ["m0", None, "m2"]},
          {"task": "t7", "models": ["m0", "m2"], "workdir": "task-000007"},
          lambda kw: None, {"result": "task-000007"}),
    _case("select", {"iteration": 4, "explored": ["e0", None, "e2"], "models": None, "calibration": "ev",
                     "dataset": "ds", "init_data": ["a", None]},
          {"explored": ["e0", "e2"], "models": [], "calibration": "ev", "iteration": 4, "workdir": "select",
           "labeled_data": [Path("a"), Path("ds")]},
          lambda kw: 5, {"result": "select", "n_candidates": 5}),
    _case("bootstrap", {}, {"workdir": "bootstrap"}, lambda kw: 3, {"result": "bootstrap", "n_frames": 3}),
    _case("prep-label", {"iteration": 0, "selection": "sel"},
          {"selection": "sel", "iteration": 0, "workdir": "tasks"},
          _tasks, {"tasks": ["tasks/task-000000", "tasks/task-000001", "tasks/task-000002"],
                   "task_names": ["task-000000", "task-000001", "task-000002"]}),
    _case("run-label", {"task": "t2", "task_name": "task-000002"}, {"task": "t2", "workdir": "task-000002"},
          lambda kw: None, {"result": "task-000002"}),
    _case("collect", {"iteration": 2, "dataset": None, "labeled": ["l0", None, "l2"]},
          {"dataset": None, "labeled": ["l0", "l2"], "iteration": 2, "workdir": "dataset"},
          lambda kw: str(kw["workdir"] / "root"), {"dataset": "dataset/root"}),
    _case("evaluate", {"iteration": 2, "models": ["m0", None, "m2"], "selection": "sel", "labeled": ["l0", None],
                       "dataset": "ds", "init_data": ["a"], "test_data": ["b"], "calibration": "ev"},
          {"models": ["m0", "m2"], "selection": "sel", "labeled": ["l0"], "dataset": "ds", "init_data": ["a"],
           "test_data": ["b"], "calibration": "ev", "iteration": 2, "final": False, "workdir": "evaluate"},
          lambda kw: kw["workdir"], {"result": "evaluate"}),
    _case("decide", {"iteration": 2, "max_iterations": 10, "schedule": None, "selection": "sel", "dataset": "ds",
                     "evaluation": "ev"},
          {"schedule": None, "selection": "sel", "dataset": "ds", "iteration": 2, "workdir": "decide",
           "evaluation": "ev"},
          _schedule, {"done": False, "next_iteration": 3, "next_iter_name": "iter-000003",
                      "schedule": "decide/schedule.json", "result": "decide"}),
]
ARTIFACT_NAMES = ("init_data", "dataset", "init_models", "schedule", "task", "models", "explored",
                  "selection", "labeled", "calibration", "test_data", "evaluation")
PATH_KEYWORDS = (*ARTIFACT_NAMES, "data", "init_model", "workdir")     # call keywords holding paths


def _as_paths(value):
    """Artifact names of the table -> Paths (lists keep their None holes)."""
    if isinstance(value, list):
        return [None if v is None else Path(v) for v in value]
    return None if value is None else Path(value)


def _execute(name: str, inputs: dict, monkeypatch, reply):
    wf_spy.CALLS.clear()
    monkeypatch.setattr(wf_spy, "reply", reply)
    ins = {k: _as_paths(v) if k in ARTIFACT_NAMES else v for k, v in inputs.items()}
    return op_class(name)().execute(OPIO({"func": wf_spy.FUNC, "config": CONFIG, **ins}))


@pytest.mark.parametrize("name, inputs, expect, reply, outputs", CASES)
def test_op_calls_its_function_with_the_documented_keywords_and_packs_the_reply(
        name, inputs, expect, reply, outputs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _paths(tmp_path, "a", "b", "ds", "m0", "m1", "m2", "t7", "t2", "e0", "e2", "sel", "l0", "l2", "ev")
    (tmp_path / "sched.json").write_text("{}")
    out = _execute(name, inputs, monkeypatch, reply)
    assert len(wf_spy.CALLS) == 1, "the OP must call its function exactly once"
    call = wf_spy.CALLS[0]
    assert sorted(call["kwargs"]) == sorted(OP_CALLS[name])
    got = {k: v for k, v in call["kwargs"].items() if k != "config"}
    assert got == {k: _as_paths(v) if k in PATH_KEYWORDS else v for k, v in expect.items()}
    assert call["kwargs"]["config"] == CONFIG
    assert call["workdir_existed"], "the OP makes the working folder before calling"
    sign = op_class(name).get_output_sign()
    assert dict(out) == {k: _as_paths(v) if isinstance(sign[k], Artifact) else v for k, v in outputs.items()}


def test_train_without_initial_models_or_dataset_trains_from_scratch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    _execute("train", {"member": 0, "iteration": 0, "init_data": ["a"], "dataset": None, "init_models": None},
             monkeypatch, lambda kw: kw["workdir"] / "model.pt")
    kwargs = wf_spy.CALLS[0]["kwargs"]
    assert kwargs["init_model"] is None and kwargs["data"] == [Path("a")]


def test_train_a_stack_calls_the_stack_function_once_or_a_custom_function_per_member(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _paths(tmp_path, "a", "m0", "m1", "m2")
    common = {"iteration": 1, "init_data": ["a"], "dataset": None, "init_models": ["m0", "m1", "m2"],
              "stack": 2, "n_models": 3}
    # a custom func without a stack function: called once per member of the stack, in member order
    out = _execute("train", {**common, "member": 0}, monkeypatch, lambda kw: kw["workdir"] / "model.pt")
    assert [c["kwargs"]["member"] for c in wf_spy.CALLS] == [0, 1]
    assert [c["kwargs"]["init_model"] for c in wf_spy.CALLS] == [Path("m0"), Path("m1")]
    assert out["model"] == [Path("member-000/model.pt"), Path("member-001/model.pt")]
    assert out["member_dir"] == [Path("member-000"), Path("member-001")]
    # the stack function: one call for the whole stack; the last stack holds what is left (member 2)
    out = _execute("train", {**common, "member": 0, "stack_func": wf_spy.FUNC}, monkeypatch,
                   lambda kw: [w / "model.pt" for w in kw["workdirs"]])
    (call,) = wf_spy.CALLS
    assert call["kwargs"]["members"] == [0, 1] and call["kwargs"]["init_models"] == [Path("m0"), Path("m1")]
    assert call["kwargs"]["workdirs"] == [Path("member-000"), Path("member-001")]
    assert out["model"] == [Path("member-000/model.pt"), Path("member-001/model.pt")]
    out = _execute("train", {**common, "member": 2}, monkeypatch, lambda kw: kw["workdir"] / "model.pt")
    assert [c["kwargs"]["member"] for c in wf_spy.CALLS] == [2] and out["member_dir"] == [Path("member-002")]


def test_decide_stops_at_max_iterations_whatever_the_function_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _execute("decide", {"iteration": 4, "max_iterations": 5, "selection": "sel", "dataset": "ds"},
                   monkeypatch, _schedule)
    assert out["done"] is True and out["next_iteration"] == 5


def test_decide_refuses_a_function_that_wrote_no_schedule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"wf_spy:record did not write decide/schedule\.json"):
        _execute("decide", {"iteration": 0, "max_iterations": 5, "selection": "sel", "dataset": "ds"},
                 monkeypatch, lambda kw: False)


def test_optional_keywords_reach_only_functions_that_take_them():
    from dpa3_al.workflows.ops._call import call

    got = {}
    wf_spy.old_contract = lambda config, workdir: got.setdefault("old", (config, workdir))
    wf_spy.new_contract = lambda config, workdir, evaluation=None: got.setdefault("new", evaluation)
    wf_spy.any_contract = lambda **kw: got.setdefault("any", sorted(kw))
    try:
        for name in ("old_contract", "new_contract", "any_contract"):
            call(f"{wf_spy.__name__}:{name}", optional={"evaluation": "ev"}, config={}, workdir="w")
    finally:
        del wf_spy.old_contract, wf_spy.new_contract, wf_spy.any_contract
    assert got == {"old": ({}, "w"), "new": "ev", "any": ["config", "evaluation", "workdir"]}


def test_op_retried_in_the_same_folder_reuses_its_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):          # a retried step runs again where the first attempt ran
        _execute("run-label", {"task": "t", "task_name": "task-000001"}, monkeypatch, lambda kw: None)
    assert wf_spy.CALLS[0]["kwargs"]["workdir"] == Path("task-000001")


# -- function lookup and early errors ---------------------------------------------------
def test_resolve_names_what_is_missing():
    assert resolve("os.path:join") is __import__("os").path.join
    assert resolve("os.path.join") is __import__("os").path.join
    with pytest.raises(FunctionNotFound, match="cannot import no_such_module"):
        resolve("no_such_module:f")
    with pytest.raises(FunctionNotFound, match="has no attribute 'nope'"):
        resolve("os.path:nope")
    with pytest.raises(FunctionNotFound, match="is not callable"):
        resolve("os:sep")
    assert present([None, "a", None, "b"]) == [Path("a"), Path("b")]
    assert present(None) == []


def test_op_with_a_function_that_cannot_be_found_fails_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FunctionNotFound, match="no_such_module"):
        op_class("bootstrap")().execute(OPIO({"func": "no_such_module:f", "config": {}}))


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
