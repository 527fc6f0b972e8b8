"""Exploration: MD task grids driven by a model committee, with per-frame model deviation.

Main entry points::

    from dpa3_al.explore import ExploreConfig, make_tasks, run_task, explore, AseCommittee

- :class:`ExploreConfig` (the ``explore:`` config section: stages, task groups, stop criteria);
- :func:`make_tasks` / :func:`write_tasks` / :func:`load_task`: the task grid and task folders;
- :func:`run_task`: one MD task in one folder (traj.extxyz, model_devi.csv, md.log, status.json);
- :func:`explore`: all tasks of one stage, with a summary ``explore.json``;
- :class:`AseCommittee`: a committee of plain ASE calculators with the CommitteeCalculator API.
"""

from .committee import AseCommittee
from .config import (ConfigurationSpec, ExploreConfig, LatticeSpec, PerturbSpec, StageConfig, StopConfig,
                     SubstituteSpec, TaskGroupConfig)
from .md import TaskReport, run_task
from .run import ExploreReport, explore
from .tasks import Task, load_task, make_tasks, task_dirs, write_tasks

__all__ = [
    "AseCommittee", "ConfigurationSpec", "ExploreConfig", "LatticeSpec", "PerturbSpec", "StageConfig",
    "StopConfig", "SubstituteSpec", "TaskGroupConfig", "TaskReport", "run_task", "ExploreReport", "explore",
    "Task", "load_task", "make_tasks", "task_dirs", "write_tasks",
]
