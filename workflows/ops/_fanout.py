"""What the fan-out OPs share: writing one folder per task, and running one task.

``PrepTasks`` (prep-explore, prep-label) calls ``func(config, <SOURCE>, iteration, workdir)`` and
returns the task folders it made; ``RunTask`` (run-explore, run-label) calls
``func(config, task, workdir, **lists)`` in a folder named after the task. A subclass names its
function (``FUNC``) and the inputs that differ: ``SOURCE`` (what the tasks are made from) or
``LISTS`` (list artifacts passed on, items of failed tasks dropped).
"""

from __future__ import annotations

from pathlib import Path
from typing import List

from dflow.python import OP, OPIO, Artifact, OPIOSign, Parameter

from ._call import call, present, workdir


class PrepTasks(OP):
    """Make one folder per task of a fan-out; the fan-out runs one slice per task."""

    FUNC = ""
    SOURCE = ""                   # the input artifact the tasks are made from
    SOURCE_OPTIONAL = False

    @classmethod
    def get_input_sign(cls):
        return OPIOSign({
            "func": Parameter(str, default=cls.FUNC), "config": Parameter(dict, default={}),
            "iteration": int, cls.SOURCE: Artifact(Path, optional=cls.SOURCE_OPTIONAL),
        })

    @classmethod
    def get_output_sign(cls):
        return OPIOSign({"tasks": Artifact(List[Path]), "task_names": List[str]})

    @OP.exec_sign_check
    def execute(self, ip: OPIO) -> OPIO:
        source = {self.SOURCE: ip[self.SOURCE]}
        tasks = [Path(t) for t in call(ip["func"], config=ip["config"], iteration=ip["iteration"],
                                       workdir=workdir("tasks"), **source)]
        return OPIO({"tasks": tasks, "task_names": [t.name for t in tasks]})


class RunTask(OP):
    """Run one task of a fan-out; its folder (named after the task) is the result."""

    FUNC = ""
    LISTS: tuple[str, ...] = ()   # list artifacts passed to the function

    @classmethod
    def get_input_sign(cls):
        return OPIOSign({
            "func": Parameter(str, default=cls.FUNC), "config": Parameter(dict, default={}),
            "task": Artifact(Path), "task_name": str, **{name: Artifact(List[Path]) for name in cls.LISTS},
        })

    @classmethod
    def get_output_sign(cls):
        return OPIOSign({"result": Artifact(Path)})

    @OP.exec_sign_check
    def execute(self, ip: OPIO) -> OPIO:
        wd = workdir(ip["task_name"])
        lists = {name: present(ip[name]) for name in self.LISTS}
        call(ip["func"], config=ip["config"], task=ip["task"], workdir=wd, **lists)
        return OPIO({"result": wd})
