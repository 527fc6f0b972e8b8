"""Label one task: ``func(config, task, workdir) -> None``."""

from __future__ import annotations

from pathlib import Path

from dflow.python import OP, OPIO, Artifact, OPIOSign, Parameter

from ._call import call, workdir

FUNC = "dpa3_al.steps:run_label"


class RunLabel(OP):
    """Reference calculation of a task's frames; ``workdir`` (named after the task) receives
    the labeled frames and status.json (ok / failed + why per frame). Sliced, grouped."""

    @classmethod
    def get_input_sign(cls):
        return OPIOSign({
            "func": Parameter(str, default=FUNC), "config": Parameter(dict, default={}),
            "task": Artifact(Path), "task_name": str,
        })

    @classmethod
    def get_output_sign(cls):
        return OPIOSign({"result": Artifact(Path)})

    @OP.exec_sign_check
    def execute(self, ip: OPIO) -> OPIO:
        wd = workdir(ip["task_name"])
        call(ip["func"], config=ip["config"], task=ip["task"], workdir=wd)
        return OPIO({"result": wd})
