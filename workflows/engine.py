"""Engines: how the loop's OPs become dflow templates and steps, and where they run.

- :class:`LocalEngine` (``engine: local``): dflow's debug mode. The workflow runs inside the
  driver process; each step is a subprocess of this machine started through our step
  runner (:mod:`dpa3_al.workflows.runner`), which applies retries and timeouts because
  dflow ignores both in this mode. The interpreter of every step, including dflow's
  helper steps (slice bookkeeping, success-ratio checks, which dflow starts as ``python3``
  from PATH), is set explicitly. dflow's files land in ``runs/<name>/.dflow/``.
- :class:`DispatcherEngine` (``engine: dispatcher``): the local engine, except that the
  heavy steps (train, run-explore, run-label by default) are submitted as batch jobs
  through dflow's ``DispatcherExecutor`` (dpdispatcher: Slurm, PBS, LSF, ...).
- :class:`dpa3_al.workflows.argo.ArgoEngine` (``engine: argo``): the same workflow object
  for an Argo server with S3/MinIO artifacts, or rendered offline to YAML.

dflow's configuration is global to a process; one driver process runs one run, so two runs
never share it. Which engine a config names is chosen by :func:`dpa3_al.workflows.driver.make_engine`
(the argo engine builds on this module, so this module does not import it).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from copy import deepcopy
from pathlib import Path
from typing import Any

from dflow import Step, Steps, Workflow, config as dflow_config, upload_artifact
from dflow.python import PythonOPTemplate, Slices

from .config import WorkflowConfig
from .keys import base_step

__all__ = ["Engine", "LocalEngine", "DispatcherEngine", "LeanStep", "iter_steps", "runner_command"]

RUNNER_MODULE = "dpa3_al.workflows.runner"


def runner_command(python: str, retries: int, timeout: float | None, grace: float) -> list[str]:
    """The command line that starts one step through the runner (dflow appends the script)."""
    cmd = [python, "-m", RUNNER_MODULE, "--retries", str(retries), "--grace", f"{grace:g}"]
    if timeout is not None:
        cmd += ["--timeout", f"{timeout:g}"]
    return cmd + ["--", python]


_LEAN = {"active": False}


class LeanStep(Step):
    """A dflow Step whose per-slice copies do not copy the rest of the workflow.

    In debug mode a sliced step deep-copies itself once per slice (``parallel_steps``) and
    pickles each copy to a worker process. A step reaches every other step of the workflow
    through its inputs (an input is another step's output object), so each copy used to
    copy the whole workflow, growing with every step already run (seconds per fan-out).
    While such a step is running, a copy of it shares the *other* steps instead (they are
    only read, by name, to resolve inputs). It also drops its per-slice copies once its
    outputs are collected. Copies made in any other situation are ordinary deep copies.
    """

    def run(self, scope, context=None, order=None):
        self._lean_running = True
        try:
            return super().run(scope, context, order)
        finally:
            self._lean_running = False
            self.parallel_steps = []

    def __deepcopy__(self, memo):
        if _LEAN["active"]:
            return self                      # another step, reached while copying a running one
        lean = self.__dict__.get("_lean_running", False)
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        _LEAN["active"] = lean
        try:
            for name, value in self.__dict__.items():
                setattr(new, name, deepcopy(value, memo))
        finally:
            if lean:
                _LEAN["active"] = False
        return new


def iter_steps(steps: Steps, seen: set[int] | None = None):
    """Every Step inside ``steps`` and its nested Steps (recursion-safe), helper steps included."""
    seen = set() if seen is None else seen
    if id(steps) in seen:
        return
    seen.add(id(steps))
    for item in steps.steps:
        for step in item if isinstance(item, list) else [item]:
            yield step
            if isinstance(step.template, Steps):
                yield from iter_steps(step.template, seen)


class Engine:
    """Base: template and step factories shared by all engines."""

    kind = "base"
    debug_mode = False

    def __init__(self, cfg: WorkflowConfig, workdir: Path | None = None) -> None:
        self.cfg = cfg
        self.workdir = Path(workdir).resolve() if workdir is not None else None

    # -- dflow global configuration ------------------------------------------------------
    def configure(self) -> None:
        """Set dflow's global config for this engine (call once, before building)."""
        dflow_config["mode"] = "debug" if self.debug_mode else "default"

    # -- templates and steps -------------------------------------------------------------
    def template(self, step: str, op_class: type, slices: Slices | None = None) -> PythonOPTemplate:
        """A template for OP ``op_class`` used by step ``step``, with a stable name."""
        template = PythonOPTemplate(op_class, slices=slices, upload_dflow=False, **self.template_kwargs(step))
        template.name = step
        return template

    def template_kwargs(self, step: str) -> dict[str, Any]:
        raise NotImplementedError

    def task_slices(self, step: str, **kwargs: Any) -> Slices:
        """Slices of a grouped fan-out: ``group_size`` tasks per step, run one by one, each
        failure caught and counted, each task limited to ``task_timeout`` s."""
        task_timeout = self.cfg.policy(step).task_timeout
        return Slices("int('{{item}}')", group_size=self.cfg.group_size, pool_size=1,
                      pool_timeout=math.ceil(task_timeout) if task_timeout else None, **kwargs)

    def step(self, step: str, template, **kwargs: Any) -> LeanStep:
        """A Step of ``template`` (the executor of heavy steps is set by the dispatcher engine)."""
        executor = self.executor(step)
        if executor is not None:
            kwargs["executor"] = executor
        return LeanStep(step, template, **self.step_kwargs(), **kwargs)

    def step_kwargs(self) -> dict[str, Any]:
        return {}

    def executor(self, step: str):
        return None

    def input_artifact(self, name: str, paths: list[Path]):
        """The workflow's input artifact ``name`` made of local ``paths`` (None if empty)."""
        if not paths:
            return None
        return upload_artifact([str(p) for p in paths])

    def finalize(self, entry: Steps) -> None:
        """Last touches on the whole step tree (after building, before submit/render)."""

    def session(self):
        """Context in which the workflow runs (the local engines start the step preloader)."""
        return contextlib.nullcontext()

    def workflow(self, name: str, entry: Steps, workflow_id: str | None = None) -> Workflow:
        self.finalize(entry)
        return Workflow(name=name, steps=entry, id=workflow_id)


class LocalEngine(Engine):
    """dflow debug mode on this machine, with our runner for retries and timeouts."""

    kind = "local"
    debug_mode = True

    @property
    def python(self) -> str:
        return self.cfg.local.python or sys.executable

    def configure(self) -> None:
        super().configure()
        if self.workdir is None:
            raise ValueError("the local engine needs a work directory (runs/<name>/.dflow)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        dflow_config["debug_workdir"] = str(self.workdir)
        dflow_config["debug_artifact_dir"] = str(self.workdir / "artifacts")
        dflow_config["debug_pool_workers"] = self.cfg.local.parallel or None
        dflow_config["detach"] = False
        # steps of a fan-out run side by side: share the cores instead of oversubscribing them
        # (OpenMP threads of parallel torch processes stall badly on a busy machine)
        cpus = os.cpu_count() or 1
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cpus // (self.cfg.local.parallel or cpus))))

    def command(self, step: str) -> list[str]:
        policy = self.cfg.policy(step)
        return runner_command(self.python, policy.retries, policy.timeout, self.cfg.local.grace)

    def template_kwargs(self, step: str) -> dict[str, Any]:
        return {"command": self.command(step)}

    def step_kwargs(self) -> dict[str, Any]:
        return {"util_command": [self.python]}

    def session(self):
        from .zygote import preloaded

        return preloaded(self.python, self.cfg.local.preload, self.cfg.local.preload_modules)

    def finalize(self, entry: Steps) -> None:
        """dflow's helper templates (slice set-up, success-ratio checks) hard-code
        ``python3`` from PATH; run them with our interpreter instead."""
        for step in iter_steps(entry):
            template = step.template
            command = getattr(template, "command", None)
            if command in (["python3"], ["python"], ["python3.11"]):
                template.command = [self.python]


class DispatcherEngine(LocalEngine):
    """Local engine whose heavy steps go to a batch scheduler through dpdispatcher."""

    kind = "dispatcher"

    @property
    def remote_python(self) -> str:
        return self.cfg.dispatcher.python or self.python

    def template_kwargs(self, step: str) -> dict[str, Any]:
        if base_step(step) in self.cfg.dispatcher.steps:
            # the job on the compute node runs the script with plain python; retries and
            # timeouts wrap the local process that submits and watches the job
            return {"command": [self.remote_python]}
        return super().template_kwargs(step)

    def executor(self, step: str):
        if base_step(step) not in self.cfg.dispatcher.steps:
            return None
        from dflow.plugins.dispatcher import DispatcherExecutor

        disp = self.cfg.dispatcher
        machine = {"local_root": ".", **disp.machine}
        if "remote_root" not in machine:
            machine["remote_root"] = str(self.workdir / "dispatcher")
        resources = {"group_size": 1, **disp.resources}
        # dflow's generated script polls the scheduler every 30 s; use ours
        pre_script = ("import functools as _ft, dpdispatcher as _dd\n"
                      "_dd.Submission.run_submission = _ft.partialmethod("
                      f"_dd.Submission.run_submission, check_interval={disp.poll_interval!r})\n")
        return DispatcherExecutor(command=self.command(step), remote_command=[self.remote_python],
                                  machine_dict=machine, resources_dict=resources, pre_script=pre_script)

