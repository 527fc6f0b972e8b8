"""Label one task: ``func(config, task, workdir) -> None``."""

from __future__ import annotations

from ._fanout import RunTask

FUNC = "dpa3_al.steps:run_label"


class RunLabel(RunTask):
    """Reference calculation of a task's frames; ``workdir`` (named after the task) receives
    the labeled frames and status.json (ok / failed + why per frame). Sliced, grouped."""

    FUNC = FUNC
