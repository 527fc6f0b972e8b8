"""``state.json``: where a run is (iteration, stage, status of each step), written atomically.

One writer per run (the run's driver, or ``stop``/``download`` when no driver runs), any
number of readers. :meth:`RunState.write` and :meth:`RunState.read` are the file's writer
and reader (called through ``RunDir.write_state``/``read_state``). The file is small JSON::

    {"name": "water", "engine": "local", "workflow_id": "water", "status": "running",
     "iteration": 1, "stage": "run-label", "updated": 1767000000.0, "driver_pid": 4242, "attempt": 2,
     "steps": {"iter-000001--run-label-000003": {"phase": "Failed", "log": ".../log.txt",
               "reason": "timed out after 600 s (2 attempts)", "tasks_ok": 0, "tasks_total": 4, ...}},
     "failures": [...], "published": ["iter-000000--train-000000", ...], "message": ""}

``attempt`` counts the drivers a run has had (1 after submit, +1 per resume): ``submit`` and
``resume`` return once the new driver has written its attempt and pid (the handshake), so a
``wait`` that follows never reads the previous driver's final status. An unreadable file
raises :class:`CorruptState` (a one-line error naming the file and what to do).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from dpa3_al.common.errors import UserError
from dpa3_al.common.fileio import atomic_write_text, known_fields

__all__ = ["StepState", "RunState", "RunStatus", "CorruptState", "STATUSES"]

RunStatus = Literal["submitted", "running", "succeeded", "failed", "stopped"]
STATUSES = ("submitted", "running", "succeeded", "failed", "stopped")


class CorruptState(UserError):
    """``state.json`` exists but cannot be read as a run state."""

    def __init__(self, path: Path, why: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: unreadable run state ({why}); 'dpa3-al resume {self.path.parent}' "
                         "rebuilds it from the workflow's own records (local engines), or delete the run folder")


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
    attempt: int = 0
    steps: dict[str, StepState] = field(default_factory=dict)
    failures: list[StepState] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    message: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunState":
        data = known_fields(cls, data)
        data["steps"] = {k: _step(v) for k, v in data.get("steps", {}).items()}
        data["failures"] = [_step(v) for v in data.get("failures", [])]
        return cls(**data)

    def write(self, path: Path) -> None:
        self.updated = time.time()
        atomic_write_text(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> "RunState":
        """The state in ``path``; :class:`CorruptState` when it is not one (truncated, not JSON,
        wrong types), FileNotFoundError when it is missing."""
        try:
            data = json.loads(Path(path).read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as err:
            raise CorruptState(path, f"{type(err).__name__}: {err}") from None
        try:
            state = cls.from_dict(data)
            _check_types(state)
        except (AttributeError, TypeError, ValueError) as err:
            raise CorruptState(path, f"not a run state: {err}") from None
        return state

    def counts(self) -> dict[str, int]:
        """Number of steps per phase."""
        out: dict[str, int] = {}
        for step in self.steps.values():
            out[step.phase] = out.get(step.phase, 0) + 1
        return out


def _check_types(state: RunState) -> None:
    if not isinstance(state.name, str) or state.status not in STATUSES:
        raise ValueError(f"name {state.name!r}, status {state.status!r}")
    for value, what in ((state.iteration, "iteration"), (state.driver_pid, "driver_pid")):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{what} {value!r} is not an integer")
    if not isinstance(state.attempt, int) or not isinstance(state.updated, (int, float)):
        raise ValueError(f"attempt {state.attempt!r}, updated {state.updated!r}")
    if not isinstance(state.published, list) or not isinstance(state.message, str):
        raise ValueError("published must be a list and message a string")


def _step(data: dict[str, Any]) -> StepState:
    return StepState(**known_fields(StepState, data))
