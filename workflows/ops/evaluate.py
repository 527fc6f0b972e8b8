"""Measure the committee: ``func(config, models, selection, labeled, dataset, init_data, test_data,
calibration, iteration, final, workdir) -> Path``."""

from __future__ import annotations

from pathlib import Path
from typing import List

from dflow.python import OP, OPIO, Artifact, OPIOSign, Parameter

from ._call import call, present, workdir

FUNC = "dpa3_al.steps:evaluate"


class Evaluate(OP):
    """The committee on the test set and on this iteration's new labels (``evaluate/test.json``,
    ``evaluate/calibration.json``); with ``final``, the final committee's member folders in
    ``models`` and the final model chosen (``final/``)."""

    @classmethod
    def get_input_sign(cls):
        return OPIOSign({
            "func": Parameter(str, default=FUNC), "config": Parameter(dict, default={}),
            "iteration": int, "final": Parameter(bool, default=False),
            "models": Artifact(List[Path]),
            "selection": Artifact(Path, optional=True), "labeled": Artifact(List[Path], optional=True),
            "dataset": Artifact(Path, optional=True), "init_data": Artifact(List[Path], optional=True),
            "test_data": Artifact(List[Path], optional=True), "calibration": Artifact(Path, optional=True),
        })

    @classmethod
    def get_output_sign(cls):
        return OPIOSign({"result": Artifact(Path)})

    @OP.exec_sign_check
    def execute(self, ip: OPIO) -> OPIO:
        final = bool(ip.get("final", False))
        wd = workdir("final" if final else "evaluate")
        out = call(ip["func"], config=ip["config"], models=present(ip["models"]), selection=ip.get("selection"),
                   labeled=present(ip.get("labeled")), dataset=ip.get("dataset"),
                   init_data=present(ip.get("init_data")), test_data=present(ip.get("test_data")),
                   calibration=ip.get("calibration"),
                   iteration=int(ip["iteration"]), final=final, workdir=wd)
        return OPIO({"result": Path(out)})
