"""What a run is made of, as plain data: the step functions (:class:`StepCall`), the loop
(:class:`LoopSpec`) and the whole ``plan.json`` of a run directory (:class:`Plan`).

``plan.json`` is written once, when a run is submitted, and read by every driver of the run
(the first one and each resume) and by ``dpa3-al download``; :meth:`Plan.write` and
:meth:`Plan.read` are its only writer and reader. The file is the typed config as JSON
(:func:`~dpa3_al.common.typed_config.to_dict`)::

    {"workflow": {"engine": "local", "group_size": 1, ...},
     "loop": {"n_models": 4, "init_data": [...], "init_models": [], "bootstrap": false,
              "calls": {"train": {"func": "", "config": {...}}, ...}}}

No dflow here: the CLI reads plans without paying for dflow's import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpa3_al.common.fileio import atomic_write_text
from dpa3_al.common.typed_config import ConfigError, field, from_dict, to_dict

from .config import WorkflowConfig
from .keys import CALL_NAMES, base_step

__all__ = ["StepCall", "LoopSpec", "Plan"]


@dataclass(frozen=True)
class StepCall:
    """The function one step calls, and the config it passes as ``config=``."""

    func: str = field("", doc="import path 'package.module:function'; empty = the project's function")
    config: dict[str, Any] = field(default_factory=dict, doc="JSON-able settings passed as config=")


@dataclass(frozen=True)
class LoopSpec:
    """Everything the loop needs besides the engine: functions, committee size, inputs."""

    n_models: int = field(4, doc="committee size (train fans out over members)", ge=1)
    stack: int = field(1, doc="members per train step, trained as one stacked model (train.training.stack)", ge=1)
    init_data: list[Path] = field(default_factory=list, doc="labeled systems the first training reads")
    init_models: list[Path] = field(default_factory=list, doc="checkpoints to start from (member i takes "
                                    "init_models[i % len]); empty = train from scratch")
    calls: dict[str, StepCall] = field(default_factory=dict, doc="per-step function and config, by step name")
    bootstrap: bool = field(False, doc="label perturbed starting structures before iteration 0 (runs "
                            "without initial data); steps bootstrap, bootstrap-prep-label, ...")
    test_data: list[Path] = field(default_factory=list, doc="labeled systems the evaluate step tests every "
                                  "iteration's committee on (report/learning_curve.csv)")

    def __post_init__(self) -> None:
        for name in self.calls:
            if name not in CALL_NAMES:
                raise ConfigError(f"calls.{name}", f"unknown step; use one of {', '.join(CALL_NAMES)}")

    def call_params(self, step: str) -> dict[str, Any]:
        """``func``/``config`` parameters of a step (``func`` omitted = the OP's default);
        the bootstrap labeling steps use the settings of the labeling steps they mirror."""
        call = self.calls.get(base_step(step), StepCall())
        params: dict[str, Any] = {"config": dict(call.config)}
        if call.func:
            params["func"] = call.func
        return params



@dataclass(frozen=True)
class Plan:
    """What a driver needs to build the workflow (``plan.json`` of a run)."""

    workflow: WorkflowConfig = field(default_factory=WorkflowConfig, doc="engine and failure handling")
    loop: LoopSpec = field(default_factory=LoopSpec, doc="functions, committee size, inputs")

    def to_json(self) -> str:
        return json.dumps(to_dict(self), indent=1)

    def write(self, path: Path) -> None:
        """Write ``path`` (``runs/<name>/plan.json``) atomically."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> "Plan":
        """The plan in ``path``; a malformed file raises ConfigError naming the file and key.

        Plans written by earlier versions kept ``final_training`` under ``loop``; it lives in ``workflow``
        only (one source), and an old plan's value is moved there so its run still resumes."""
        data = json.loads(Path(path).read_text())
        if isinstance(data, dict) and isinstance(data.get("loop"), dict) and "final_training" in data["loop"]:
            old = data["loop"].pop("final_training")
            workflow = data.setdefault("workflow", {})
            if isinstance(workflow, dict):
                workflow.setdefault("final_training", old)
        return from_dict(cls, data, source=str(path))
