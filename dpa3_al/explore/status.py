"""An MD task's ``status.json``: the one reader and writer of that file.

Written by :func:`dpa3_al.explore.md.run_task` (``running`` at the start, then ``finished`` or
``stopped_early`` with the reason and the step); read by the re-run check, the select step and
the run report. Units: wall time s, speed MD steps/s.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dpa3_al.common.fileio import atomic_write_text, json_default, known_fields

STATUS_JSON = "status.json"
DONE_STATES = ("finished", "stopped_early")


@dataclass(frozen=True)
class TaskStatus:
    """The content of an MD task's ``status.json``.

    ``status``: ``running`` | ``finished`` | ``stopped_early``; ``reason`` (stopped early): nan,
    max_devi_f, min_distance, lost_atoms or error.
    """

    name: str | None = None
    group: str | None = None
    status: str | None = None
    reason: str | None = None
    detail: str | None = None
    step: int | None = None
    n_frames: int | None = None
    wall_s: float | None = None
    steps_per_s: float | None = None

    @property
    def done(self) -> bool:
        """The task ran to its end or stopped early (a re-run skips it)."""
        return self.status in DONE_STATES

    @property
    def outcome(self) -> str:
        """``finished``, ``running`` or ``stopped_early:<reason>`` (how select and the report count tasks)."""
        if self.status == "stopped_early":
            return f"stopped_early:{self.reason}"
        return str(self.status)

    def write(self, task_dir: Path) -> None:
        """Atomic write; fields that a ``running`` status does not know yet are left out."""
        data = {k: v for k, v in asdict(self).items() if v is not None or self.status != "running"}
        atomic_write_text(Path(task_dir) / STATUS_JSON, json.dumps(_finite(data), indent=2, default=json_default,
                                                                   allow_nan=False, ensure_ascii=False) + "\n")

    @classmethod
    def read(cls, task_dir: Path) -> "TaskStatus":
        """The status of ``task_dir``.

        Raises:
            FileNotFoundError: the task never started. ValueError: not a JSON object.
        """
        data = json.loads((Path(task_dir) / STATUS_JSON).read_text(encoding="utf-8"))
        return cls(**known_fields(cls, data))


def read_status(task_dir: Path) -> TaskStatus | None:
    """The task's status, or None when absent or unreadable (an interrupted write, a hand edit)."""
    try:
        return TaskStatus.read(task_dir)
    except (OSError, ValueError, TypeError):
        return None


def task_outcome(task_dir: Path) -> str:
    """The task's outcome; ``not_run`` when it has no readable status."""
    status = read_status(task_dir)
    return "not_run" if status is None else status.outcome


def _finite(obj: Any) -> Any:
    """NaN and infinities become null (strict JSON)."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    return obj if not isinstance(obj, dict) else {k: _finite(v) for k, v in obj.items()}
