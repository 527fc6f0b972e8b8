"""Write the MD tasks of one iteration: ``func(config, schedule, iteration, workdir) -> list[Path]``."""

from __future__ import annotations

from pathlib import Path
from typing import List

from dflow.python import OP, OPIO, Artifact, OPIOSign, Parameter

from ._call import call, workdir

FUNC = "dpa3_al.steps:prepare_explore"


class PrepExplore(OP):
    """Make one folder per MD task (``task.json``); the fan-out runs one slice per task."""

    @classmethod
    def get_input_sign(cls):
        return OPIOSign({
            "func": Parameter(str, default=FUNC), "config": Parameter(dict, default={}),
            "iteration": int, "schedule": Artifact(Path, optional=True),
        })

    @classmethod
    def get_output_sign(cls):
        return OPIOSign({"tasks": Artifact(List[Path]), "task_names": List[str]})

    @OP.exec_sign_check
    def execute(self, ip: OPIO) -> OPIO:
        tasks = [Path(t) for t in call(ip["func"], config=ip["config"], schedule=ip["schedule"],
                                       iteration=ip["iteration"], workdir=workdir("tasks"))]
        return OPIO({"tasks": tasks, "task_names": [t.name for t in tasks]})
