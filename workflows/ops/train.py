"""Train one committee member: ``func(config, data, init_model, member, iteration, workdir) -> Path``."""

from __future__ import annotations

from pathlib import Path
from typing import List

from dflow.python import OP, OPIO, Artifact, OPIOSign, Parameter

from ._call import call, present, workdir

FUNC = "dpa3_al.steps:train_member"


class Train(OP):
    """Train (or continue training) committee member ``member``; sliced over members."""

    @classmethod
    def get_input_sign(cls):
        return OPIOSign({
            "func": Parameter(str, default=FUNC), "config": Parameter(dict, default={}),
            "member": int, "iteration": int,
            "init_data": Artifact(List[Path], optional=True),
            "dataset": Artifact(Path, optional=True),
            "init_models": Artifact(List[Path], optional=True),
        })

    @classmethod
    def get_output_sign(cls):
        return OPIOSign({"model": Artifact(Path), "member_dir": Artifact(Path)})

    @OP.exec_sign_check
    def execute(self, ip: OPIO) -> OPIO:
        member = int(ip["member"])
        wd = workdir(f"member-{member:03d}")
        data = [*present(ip["init_data"]), *present([ip["dataset"]])]
        models = present(ip["init_models"])
        init_model = models[member % len(models)] if models else None
        model = call(ip["func"], config=ip["config"], data=data, init_model=init_model,
                     member=member, iteration=ip["iteration"], workdir=wd)
        return OPIO({"model": Path(model), "member_dir": wd})
