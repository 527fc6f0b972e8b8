"""Split the candidates into labeling tasks: ``func(config, selection, iteration, workdir) -> list[Path]``."""

from __future__ import annotations

from pathlib import Path
from typing import List

from dflow.python import OP, OPIO, Artifact, OPIOSign, Parameter

from ._call import call, workdir

FUNC = "dpa3_al.steps:prepare_label"


class PrepLabel(OP):
    """One folder per labeling task (a few frames each); the fan-out runs one slice per task."""

    @classmethod
    def get_input_sign(cls):
        return OPIOSign({
            "func": Parameter(str, default=FUNC), "config": Parameter(dict, default={}),
            "iteration": int, "selection": Artifact(Path),
        })

    @classmethod
    def get_output_sign(cls):
        return OPIOSign({"tasks": Artifact(List[Path]), "task_names": List[str]})

    @OP.exec_sign_check
    def execute(self, ip: OPIO) -> OPIO:
        tasks = [Path(t) for t in call(ip["func"], config=ip["config"], selection=ip["selection"],
                                       iteration=ip["iteration"], workdir=workdir("tasks"))]
        return OPIO({"tasks": tasks, "task_names": [t.name for t in tasks]})
