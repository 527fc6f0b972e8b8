"""Run one MD task: ``func(config, task, models, workdir) -> None``."""

from __future__ import annotations

from ._fanout import RunTask

FUNC = "dpa3_al.steps:run_explore"


class RunExplore(RunTask):
    """MD with the committee; ``workdir`` (named after the task) receives traj.extxyz,
    model_devi.csv, md.log and status.json. Sliced over tasks, grouped by ``group_size``."""

    FUNC = FUNC
    LISTS = ("models",)
