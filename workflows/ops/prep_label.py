"""Split the candidates into labeling tasks: ``func(config, selection, iteration, workdir) -> list[Path]``."""

from __future__ import annotations

from ._fanout import PrepTasks

FUNC = "dpa3_al.steps:prepare_label"


class PrepLabel(PrepTasks):
    """One folder per labeling task (a few frames each); the fan-out runs one slice per task."""

    FUNC = FUNC
    SOURCE = "selection"
