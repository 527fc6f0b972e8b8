"""The concurrent-learning workflow on dflow (``dpa3_al.workflows``).

Public surface (imported lazily: ``import dpa3_al.workflows`` does not import dflow, so a
step process or the step runner starts fast)::

    from dpa3_al.workflows import WorkflowConfig, LoopSpec, StepCall, Plan
    from dpa3_al.workflows import submit, resume, stop, status, render, step_key

- ``WorkflowConfig``: the ``workflow:`` section of a run config (engine, group_size,
  continue_on_success_ratio, retries, timeouts, local/argo/dispatcher settings).
- ``LoopSpec`` / ``StepCall``: which function each step calls, committee size, inputs.
- ``submit(parent, name, Plan(...), config)`` -> ``runs/<name>/``; ``resume``, ``stop``,
  ``status``; ``render(plan)`` -> Argo Workflow YAML.
- ``step_key(3, "run-explore", 17)`` -> ``"iter-000003--run-explore-000017"``.

See docs/workflows.md.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "WorkflowConfig": ".config",
    "StepPolicy": ".config",
    "step_key": ".keys",
    "parse_step_key": ".keys",
    "StepKey": ".keys",
    "LoopSpec": ".spec",
    "StepCall": ".spec",
    "Plan": ".spec",
    "submit": ".driver",
    "resume": ".driver",
    "stop": ".driver",
    "status": ".driver",
    "wait": ".driver",
    "render": ".driver",
    "RunDir": ".rundir",
    "RunState": ".state",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'dpa3_al.workflows' has no attribute {name!r}")


__all__ = sorted(_LAZY)
