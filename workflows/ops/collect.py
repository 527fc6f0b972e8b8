"""Add the new labels to the dataset: ``func(config, dataset, labeled, iteration, workdir) -> Path``."""

from __future__ import annotations

from pathlib import Path
from typing import List

from dflow.python import OP, OPIO, Artifact, OPIOSign, Parameter

from ._call import call, present, workdir

FUNC = "dpa3_al.steps:collect"


class Collect(OP):
    """Returns the new dataset root (inside ``workdir``); the previous one is an input and
    must not be modified (copy or hard-link it)."""

    @classmethod
    def get_input_sign(cls):
        return OPIOSign({
            "func": Parameter(str, default=FUNC), "config": Parameter(dict, default={}),
            "iteration": int, "dataset": Artifact(Path, optional=True),
            "labeled": Artifact(List[Path], optional=True),
        })

    @classmethod
    def get_output_sign(cls):
        return OPIOSign({"dataset": Artifact(Path)})

    @OP.exec_sign_check
    def execute(self, ip: OPIO) -> OPIO:
        root = call(ip["func"], config=ip["config"], dataset=ip["dataset"],
                    labeled=present(ip["labeled"]),
                    iteration=ip["iteration"], workdir=workdir("dataset"))
        return OPIO({"dataset": Path(root)})
