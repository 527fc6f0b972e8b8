"""Structures to label before the first training: ``func(config, workdir) -> int``."""

from __future__ import annotations

from pathlib import Path

from dflow.python import OP, OPIO, Artifact, OPIOSign, Parameter

from ._call import call, workdir

FUNC = "dpa3_al.steps:bootstrap"


class Bootstrap(OP):
    """Writes ``bootstrap/candidates.extxyz`` (perturbed starting structures), which the
    labeling steps read as if it were a selection."""

    @classmethod
    def get_input_sign(cls):
        return OPIOSign({"func": Parameter(str, default=FUNC), "config": Parameter(dict, default={})})

    @classmethod
    def get_output_sign(cls):
        return OPIOSign({"result": Artifact(Path), "n_frames": int})

    @OP.exec_sign_check
    def execute(self, ip: OPIO) -> OPIO:
        wd = workdir("bootstrap")
        n = call(ip["func"], config=ip["config"], workdir=wd)
        return OPIO({"result": wd, "n_frames": int(n)})
