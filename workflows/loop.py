"""The concurrent-learning loop as recursive dflow Steps.

One *iteration block* (a dflow ``Steps`` template) per pass::

    train (sliced: one step per committee member, or per stack of members)
      -> prep-explore -> run-explore (sliced over MD tasks, grouped by group_size)
      -> select -> prep-label -> run-label (sliced over label tasks, grouped)
      -> collect -> evaluate (test set, calibration of the deviation) -> decide
      -> next-iteration: the block calls itself, when decide says "not done"
      -> final-train (sliced over members: the committee on every label) -> final-evaluate
         (the final model), when decide says "done"

Every step has a stable key from :func:`~dpa3_al.workflows.keys.step_key`
(``iter-000003--run-explore-000017``; for a grouped fan-out the index is the group's).
The fan-outs tolerate failed tasks down to ``continue_on_success_ratio``.

What each step computes is a function named by import path
(:class:`~dpa3_al.workflows.spec.StepCall`); the defaults are the project's real functions
(see docs/workflows.md), tests inject toys.
"""

from __future__ import annotations

from dflow import InputArtifact, InputParameter, Inputs, Steps, argo_len, argo_sequence
from dflow.python import Slices

from .engine import Engine, LeanStep
from .keys import iteration_name, step_key
from .ops import op_class
from .spec import LoopSpec

__all__ = ["build_workflow", "build_block", "build_entry", "ITER", "INDEX"]

ITER = "{{inputs.parameters.iter_name}}"   # the iteration part of keys inside the block
INDEX = "{{item}}"                         # the fan-out index (formatted %06d by the sequence)
SEQ_FORMAT = "%06d"


def _key(name: str, index: str | None = None) -> str:
    return step_key(ITER, name, index)


def _simple(engine: Engine, spec: LoopSpec, name: str, parameters: dict, artifacts: dict,
            iteration: int | str = ITER, when: str | None = None) -> LeanStep:
    template = engine.template(name, op_class(name))
    return engine.step(name, template, parameters={**spec.call_params(name), **parameters},
                       artifacts=artifacts, key=step_key(iteration, name), **({"when": when} if when else {}))


def _fanout(engine: Engine, spec: LoopSpec, name: str, prep: LeanStep, parameters: dict, artifacts: dict,
            iteration: int | str = ITER) -> LeanStep:
    """A grouped fan-out over the tasks written by step ``prep``."""
    slices = engine.task_slices(name, input_parameter=["task_name"], input_artifact=["task"],
                                output_artifact=["result"])
    template = engine.template(name, op_class(name), slices=slices)
    names = prep.outputs.parameters["task_names"]
    return engine.step(
        name, template,
        parameters={**spec.call_params(name), **parameters, "task_name": names},
        artifacts={**artifacts, "task": prep.outputs.artifacts["tasks"]},
        with_sequence=argo_sequence(argo_len(names), format=SEQ_FORMAT),
        key=step_key(iteration, name, INDEX),
        continue_on_success_ratio=engine.cfg.continue_on_success_ratio,
    )


def _bootstrap(engine: Engine, spec: LoopSpec, main: Steps) -> LeanStep:
    """Steps of iteration 0 before training: perturbed starting structures -> labels -> dataset."""
    it = {"iteration": 0}
    boot = _simple(engine, spec, "bootstrap", {}, {}, iteration=0)
    prep = _simple(engine, spec, "bootstrap-prep-label", it, {"selection": boot.outputs.artifacts["result"]},
                   iteration=0)
    run = _fanout(engine, spec, "bootstrap-run-label", prep, {}, {}, iteration=0)
    collect = _simple(engine, spec, "bootstrap-collect", it, {"dataset": None, "labeled": run.outputs.artifacts["result"]},
                      iteration=0)
    for step in (boot, prep, run, collect):
        main.add(step)
    return collect


def _train(engine: Engine, spec: LoopSpec, block: Steps, name: str = "train", init_models=None, dataset=None,
           when: str | None = None, iteration=None) -> LeanStep:
    """The committee's training, one slice per member, or per stack of ``spec.stack`` members
    (``final-train``: on every label, after the last decide, as the training an iteration after
    the last would start with). Each slice outputs lists (its members' models and folders),
    which dflow joins in slice order: member order."""
    slices = Slices("int('{{item}}')", input_parameter=["member"], output_artifact=["model", "member_dir"])
    template = engine.template(name, op_class(name), slices=slices)
    ins = block.inputs
    leaders = list(range(0, spec.n_models, spec.stack))
    return engine.step(
        name, template,
        parameters={**spec.call_params(name), "member": leaders, "stack": spec.stack, "n_models": spec.n_models,
                    "iteration": ins.parameters["iteration"] if iteration is None else iteration},
        artifacts={"init_data": ins.artifacts["init_data"],
                   "init_models": ins.artifacts["init_models"] if init_models is None else init_models,
                   "dataset": ins.artifacts["dataset"] if dataset is None else dataset},
        with_sequence=argo_sequence(len(leaders), format=SEQ_FORMAT),
        key=_key(name, INDEX), **({"when": when} if when else {}),
    )


def _final(engine: Engine, spec: LoopSpec, block: Steps, train: LeanStep, collect: LeanStep,
           decide: LeanStep) -> list[LeanStep]:
    """After the last iteration: the committee continues on every label, then the final model."""
    ins, out = block.inputs, decide.outputs
    when = "%s == true" % out.parameters["done"]
    dataset = collect.outputs.artifacts["dataset"]
    final_train = _train(engine, spec, block, "final-train", train.outputs.artifacts["model"], dataset, when,
                         iteration=out.parameters["next_iteration"])
    final_eval = _simple(engine, spec, "final-evaluate", {"iteration": ins.parameters["iteration"], "final": True},
                         {"models": final_train.outputs.artifacts["member_dir"], "dataset": dataset,
                          "init_data": ins.artifacts["init_data"], "test_data": ins.artifacts["test_data"]},
                         when=when)
    return [final_train, final_eval]


def build_block(engine: Engine, spec: LoopSpec) -> Steps:
    """The recursive iteration block."""
    block = Steps(name="iteration-block", inputs=Inputs(
        parameters={"iteration": InputParameter(type=int), "iter_name": InputParameter(type=str)},
        artifacts={name: InputArtifact(optional=True)
                   for name in ("init_data", "init_models", "dataset", "schedule", "test_data", "calibration")}))
    ins = block.inputs
    it = {"iteration": ins.parameters["iteration"]}
    train = _train(engine, spec, block)
    prep_explore = _simple(engine, spec, "prep-explore", it, {"schedule": ins.artifacts["schedule"]})
    run_explore = _fanout(engine, spec, "run-explore", prep_explore, {},
                          {"models": train.outputs.artifacts["model"]})
    select = _simple(engine, spec, "select", it, {"explored": run_explore.outputs.artifacts["result"],
                                                   "models": train.outputs.artifacts["model"],
                                                   "calibration": ins.artifacts["calibration"],
                                                   "dataset": ins.artifacts["dataset"],
                                                   "init_data": ins.artifacts["init_data"]})
    prep_label = _simple(engine, spec, "prep-label", it, {"selection": select.outputs.artifacts["result"]})
    run_label = _fanout(engine, spec, "run-label", prep_label, {}, {})
    collect = _simple(engine, spec, "collect", it, {"dataset": ins.artifacts["dataset"],
                                                     "labeled": run_label.outputs.artifacts["result"]})
    evaluate = _simple(engine, spec, "evaluate", it, {
        "models": train.outputs.artifacts["model"], "selection": select.outputs.artifacts["result"],
        "labeled": run_label.outputs.artifacts["result"], "dataset": ins.artifacts["dataset"],
        "init_data": ins.artifacts["init_data"], "test_data": ins.artifacts["test_data"],
        "calibration": ins.artifacts["calibration"]})
    decide = _simple(engine, spec, "decide", {**it, "max_iterations": engine.cfg.max_iterations},
                     {"schedule": ins.artifacts["schedule"], "selection": select.outputs.artifacts["result"],
                      "dataset": collect.outputs.artifacts["dataset"],
                      "evaluation": evaluate.outputs.artifacts["result"]})
    for step in (train, prep_explore, run_explore, select, prep_label, run_label, collect, evaluate, decide):
        block.add(step)
    out = decide.outputs
    if engine.cfg.final_training:
        for step in _final(engine, spec, block, train, collect, decide):
            block.add(step)
    block.add(LeanStep(
        "next-iteration", block,
        parameters={"iteration": out.parameters["next_iteration"], "iter_name": out.parameters["next_iter_name"]},
        artifacts={"init_data": ins.artifacts["init_data"], "init_models": train.outputs.artifacts["model"],
                   "dataset": collect.outputs.artifacts["dataset"], "schedule": out.artifacts["schedule"],
                   "test_data": ins.artifacts["test_data"], "calibration": evaluate.outputs.artifacts["result"]},
        when="%s == false" % out.parameters["done"],
        key=_key("next-iteration"),
    ))
    return block


def build_entry(engine: Engine, spec: LoopSpec) -> Steps:
    """The workflow's entry point: (bootstrap labeling, then) iteration 0 of the block."""
    main = Steps(name="main")
    dataset = _bootstrap(engine, spec, main).outputs.artifacts["dataset"] if spec.bootstrap else None
    main.add(LeanStep(
        "iteration", build_block(engine, spec),
        parameters={"iteration": 0, "iter_name": iteration_name(0)},
        artifacts={"init_data": engine.input_artifact("init_data", list(spec.init_data)),
                   "init_models": engine.input_artifact("init_models", list(spec.init_models)),
                   "dataset": dataset, "schedule": None, "calibration": None,
                   "test_data": engine.input_artifact("test_data", list(spec.test_data))},
        key=step_key(0, "iteration"),
    ))
    return main


def build_workflow(engine: Engine, spec: LoopSpec, name: str, workflow_id: str | None = None):
    """The whole workflow (``engine.configure()`` must have been called)."""
    return engine.workflow(name, build_entry(engine, spec), workflow_id)
