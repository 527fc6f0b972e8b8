"""Converged or go on: ``func(config, schedule, selection, dataset, iteration, workdir[, evaluation]) -> bool``."""

from __future__ import annotations

import shutil
from pathlib import Path

from dflow.python import OP, OPIO, Artifact, OPIOSign, Parameter

from ..keys import iteration_name
from ._call import call, workdir

FUNC = "dpa3_al.steps:decide"
STATE_FILE = "schedule.json"


class Decide(OP):
    """The function returns True to stop and writes ``workdir/schedule.json`` (the schedule
    state the next iteration's prep-explore reads). The loop also stops at max_iterations.
    The function is given the evaluate step's folder (``evaluation``) when it takes that argument.
    The evaluate step's files (``evaluation``: test.json, calibration.json) are copied beside
    schedule.json, so the iteration's verdict and the measurements behind it are published together."""

    @classmethod
    def get_input_sign(cls):
        return OPIOSign({
            "func": Parameter(str, default=FUNC), "config": Parameter(dict, default={}),
            "iteration": int, "max_iterations": int,
            "schedule": Artifact(Path, optional=True), "selection": Artifact(Path),
            "dataset": Artifact(Path), "evaluation": Artifact(Path, optional=True),
        })

    @classmethod
    def get_output_sign(cls):
        return OPIOSign({"done": bool, "next_iteration": int, "next_iter_name": str,
                         "schedule": Artifact(Path), "result": Artifact(Path)})

    @OP.exec_sign_check
    def execute(self, ip: OPIO) -> OPIO:
        wd, it = workdir("decide"), int(ip["iteration"])
        done = call(ip["func"], config=ip["config"], schedule=ip["schedule"], selection=ip["selection"],
                    dataset=ip["dataset"], iteration=it, workdir=wd, optional={"evaluation": ip.get("evaluation")})
        _keep_evaluation(ip.get("evaluation"), wd)
        if not (wd / STATE_FILE).is_file():
            raise FileNotFoundError(f"{ip['func']} did not write {wd / STATE_FILE} (the schedule state)")
        return OPIO({"done": bool(done) or it + 1 >= ip["max_iterations"], "next_iteration": it + 1,
                     "next_iter_name": iteration_name(it + 1), "schedule": wd / STATE_FILE, "result": wd})


def _keep_evaluation(evaluation: Path | None, wd: Path) -> None:
    """Copy the evaluate step's JSON files into the decide folder (published as iter-N/decide/)."""
    if evaluation is None or not Path(evaluation).is_dir():
        return
    for src in sorted(Path(evaluation).glob("*.json")):
        shutil.copy2(src, wd / src.name)
