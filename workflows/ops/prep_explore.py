"""Write the MD tasks of one iteration: ``func(config, schedule, iteration, workdir) -> list[Path]``."""

from __future__ import annotations

from ._fanout import PrepTasks

FUNC = "dpa3_al.steps:prepare_explore"


class PrepExplore(PrepTasks):
    """Make one folder per MD task (``task.json``); the fan-out runs one slice per task."""

    FUNC = FUNC
    SOURCE = "schedule"
    SOURCE_OPTIONAL = True
