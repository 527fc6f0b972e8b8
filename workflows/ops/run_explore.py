"""Run one MD task: ``func(config, task, models, workdir) -> None``."""

from __future__ import annotations

from pathlib import Path
from typing import List

from dflow.python import OP, OPIO, Artifact, OPIOSign, Parameter

from ._call import call, present, workdir

FUNC = "dpa3_al.steps:run_explore"


class RunExplore(OP):
    """MD with the committee; ``workdir`` (named after the task) receives traj.extxyz,
    model_devi.csv, md.log and status.json. Sliced over tasks, grouped by ``group_size``."""

    @classmethod
    def get_input_sign(cls):
        return OPIOSign({
            "func": Parameter(str, default=FUNC), "config": Parameter(dict, default={}),
            "task": Artifact(Path), "task_name": str, "models": Artifact(List[Path]),
        })

    @classmethod
    def get_output_sign(cls):
        return OPIOSign({"result": Artifact(Path)})

    @OP.exec_sign_check
    def execute(self, ip: OPIO) -> OPIO:
        wd = workdir(ip["task_name"])
        call(ip["func"], config=ip["config"], task=ip["task"], models=present(ip["models"]), workdir=wd)
        return OPIO({"result": wd})
