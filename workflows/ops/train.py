"""Train committee members: one per step, ``func(config, data, init_model, member, iteration, workdir) -> Path``,
or a stack of them in one process, ``stack_func(config, data, init_models, members, iteration, workdirs) -> [Path]``."""

from __future__ import annotations

from pathlib import Path
from typing import List

from dflow.python import OP, OPIO, Artifact, OPIOSign, Parameter

from ._call import call, present, workdir

FUNC = "dpa3_al.steps:train_member"
STACK_FUNC = "dpa3_al.steps:train_stack"


class Train(OP):
    """Train (or continue training) members ``member`` .. ``member + stack - 1``; sliced over stacks.

    With ``stack`` 1 (or a custom ``func`` without a stack function) each member is one call of
    ``func``; otherwise ``stack_func`` trains the members together (model/train/stacked.py).
    Outputs are lists in member order: the models and the members' folders (``member-NNN``)."""

    @classmethod
    def get_input_sign(cls):
        return OPIOSign({
            "func": Parameter(str, default=FUNC), "stack_func": Parameter(str, default=STACK_FUNC),
            "config": Parameter(dict, default={}),
            "member": int, "stack": Parameter(int, default=1), "n_models": Parameter(int, default=0),
            "iteration": int,
            "init_data": Artifact(List[Path], optional=True),
            "dataset": Artifact(Path, optional=True),
            "init_models": Artifact(List[Path], optional=True),
        })

    @classmethod
    def get_output_sign(cls):
        return OPIOSign({"model": Artifact(List[Path]), "member_dir": Artifact(List[Path])})

    @OP.exec_sign_check
    def execute(self, ip: OPIO) -> OPIO:
        first, stack = int(ip["member"]), max(1, int(ip["stack"]))
        last = min(first + stack, int(ip["n_models"]) or first + stack)
        members = list(range(first, last))
        dirs = [workdir(f"member-{m:03d}") for m in members]
        data = [*present(ip["init_data"]), *present([ip["dataset"]])]
        models = present(ip["init_models"])
        starts = [models[m % len(models)] if models else None for m in members]
        if len(members) > 1 and (ip["func"] == FUNC or ip["stack_func"] != STACK_FUNC):
            out = call(ip["stack_func"], config=ip["config"], data=data, init_models=starts, members=members,
                       iteration=ip["iteration"], workdirs=dirs)
        else:
            out = [call(ip["func"], config=ip["config"], data=data, init_model=start, member=m,
                        iteration=ip["iteration"], workdir=wd) for m, start, wd in zip(members, starts, dirs)]
        return OPIO({"model": [Path(p) for p in out], "member_dir": dirs})
