"""``state.json``: where a run is (iteration, stage, status of each step), written atomically.

One writer per run (the run's driver, or ``stop``/``download`` when no driver runs), any
number of readers. :meth:`RunState.write` and :meth:`RunState.read` are the file's writer
and reader (called through ``RunDir.write_state``/``read_state``). The file is small JSON::

    {"name": "water", "engine": "local", "workflow_id": "water", "status": "running",
     "iteration": 1, "stage": "run-label", "updated": 1767000000.0, "driver_pid": 4242,
     "steps": {"iter-000001--run-label-000003": {"phase": "Failed", "log": ".../log.txt",
               "reason": "timed out after 600 s (2 attempts)", "tasks_ok": 0, "tasks_total": 4, ...}},
     "failures": [...], "published": ["iter-000000--train-000000", ...], "message": ""}
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from dpa3_al.common.fileio import atomic_write_text

__all__ = ["StepState", "RunState", "RunStatus"]

RunStatus = Literal["submitted", "running", "succeeded", "failed", "stopped"]


@dataclass
class StepState:
    """One step of the workflow as last seen."""

    key: str
    name: str
    phase: str
    iteration: int | None = None
    index: int | None = None
    log: str | None = None
    reason: str = ""
    attempts: int | None = None
    tasks_ok: int | None = None
    tasks_total: int | None = None

    @property
    def failed(self) -> bool:
        return self.phase in ("Failed", "Error")


@dataclass
class RunState:
    """The whole run as last seen (the content of ``state.json``)."""

    name: str
    engine: str
    workflow_id: str = ""
    status: RunStatus = "submitted"
    iteration: int | None = None
    stage: str | None = None
    updated: float = field(default_factory=time.time)
    driver_pid: int | None = None
    steps: dict[str, StepState] = field(default_factory=dict)
    failures: list[StepState] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    message: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunState":
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["steps"] = {k: _step(v) for k, v in data.get("steps", {}).items()}
        data["failures"] = [_step(v) for v in data.get("failures", [])]
        return cls(**data)

    def write(self, path: Path) -> None:
        self.updated = time.time()
        atomic_write_text(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> "RunState":
        return cls.from_dict(json.loads(path.read_text()))

    def counts(self) -> dict[str, int]:
        """Number of steps per phase."""
        out: dict[str, int] = {}
        for step in self.steps.values():
            out[step.phase] = out.get(step.phase, 0) + 1
        return out


def _step(data: dict[str, Any]) -> StepState:
    known = {f.name for f in fields(StepState)}
    return StepState(**{k: v for k, v in data.items() if k in known})
