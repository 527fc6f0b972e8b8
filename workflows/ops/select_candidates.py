"""Pick the frames to label: ``func(config, explored, models, calibration, iteration, workdir, labeled_data) -> int``."""

from __future__ import annotations

from pathlib import Path
from typing import List

from dflow.python import OP, OPIO, Artifact, OPIOSign, Parameter

from ._call import call, present, workdir

FUNC = "dpa3_al.steps:select_candidates"


class Select(OP):
    """Writes ``select/candidates.extxyz`` and ``select/selection.json``; returns the
    number of candidate frames. ``calibration``: the previous evaluate step's folder (its
    ``calibration.json`` sets the levels of a run with an accuracy target), absent at first;
    ``dataset`` and ``init_data``: what is labeled already (not picked again)."""

    @classmethod
    def get_input_sign(cls):
        return OPIOSign({
            "func": Parameter(str, default=FUNC), "config": Parameter(dict, default={}),
            "iteration": int, "explored": Artifact(List[Path]),
            "models": Artifact(List[Path], optional=True),
            "calibration": Artifact(Path, optional=True),
            "dataset": Artifact(Path, optional=True), "init_data": Artifact(List[Path], optional=True),
        })

    @classmethod
    def get_output_sign(cls):
        return OPIOSign({"result": Artifact(Path), "n_candidates": int})

    @OP.exec_sign_check
    def execute(self, ip: OPIO) -> OPIO:
        wd = workdir("select")
        n = call(ip["func"], config=ip["config"], explored=present(ip["explored"]),
                 models=present(ip["models"] or []), calibration=ip.get("calibration"), iteration=ip["iteration"],
                 workdir=wd, labeled_data=[*present(ip.get("init_data")), *present([ip.get("dataset")])])
        return OPIO({"result": wd, "n_candidates": int(n)})
