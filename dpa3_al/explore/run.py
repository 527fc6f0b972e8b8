"""Explore one stage: make its tasks, run them one after another, summarize (``explore.json``).

The workflow can instead call :func:`~dpa3_al.explore.tasks.make_tasks` /
:func:`~dpa3_al.explore.tasks.write_tasks` in a prep step and
:func:`~dpa3_al.explore.md.run_task` (with :func:`~dpa3_al.explore.tasks.load_task`) in sliced
run steps; the files are the same.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dpa3_al.common.typed_config import ConfigError

from .config import ExploreConfig
from .md import TaskReport, run_task
from .tasks import Task, atomic_write_json, make_tasks

log = logging.getLogger(__name__)

SUMMARY_JSON = "explore.json"


@dataclass
class ExploreReport:
    """Summary of an exploration: one entry per task plus totals."""

    stage: int
    iteration: int
    tasks: list[TaskReport] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Tasks per outcome: finished, and stopped_early:<reason>."""
        return dict(Counter(t.status if t.reason is None else f"{t.status}:{t.reason}" for t in self.tasks))

    def to_dict(self) -> dict[str, Any]:
        wall = sum(t.wall_s for t in self.tasks if not t.skipped)
        steps = sum(t.step for t in self.tasks if not t.skipped)
        return {"stage": self.stage, "iteration": self.iteration, "n_tasks": len(self.tasks),
                "counts": self.counts(), "n_frames": sum(t.n_frames for t in self.tasks),
                "wall_s": round(wall, 3), "steps_per_s": round(steps / wall, 3) if wall > 0 else None,
                "tasks": [asdict(t) for t in self.tasks]}


def stage_tasks(cfg: ExploreConfig, stage: int, *, base_dir: Path, iteration: int = 0) -> list[Task]:
    """The tasks of stage ``stage`` in ``iteration`` (see :func:`make_tasks`)."""
    if not cfg.stages:
        raise ConfigError("explore.stages", "no stages configured; add a stage with task_groups")
    if not 0 <= stage < len(cfg.stages):
        raise ConfigError("explore.stages", f"stage {stage} does not exist; the config has "
                          f"{len(cfg.stages)} stage(s), numbered from 0")
    return make_tasks(cfg.stages[stage], cfg.stop, base_dir=base_dir, stage_index=stage, iteration=iteration)


def explore(cfg: ExploreConfig, calc: Any, out_dir: Path, *, stage: int = 0, iteration: int = 0,
            base_dir: Path = Path("."), progress: bool = True) -> ExploreReport:
    """Run every MD task of one stage under ``out_dir/task-NNNNNN`` and write ``explore.json``.

    Finished tasks (from an interrupted earlier call) are skipped, so calling again resumes.

    Args:
        cfg: the exploration config.
        calc: the committee (``CommitteeCalculator``/:class:`AseCommittee`) or any ASE calculator.
        out_dir: the exploration folder.
        stage, iteration: which stage; the iteration also seeds sampling and MD.
        base_dir: folder that relative structure paths are read from.
        progress: show a progress bar on stderr.
    """
    from tqdm import tqdm

    tasks = stage_tasks(cfg, stage, base_dir=base_dir, iteration=iteration)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ExploreReport(stage=stage, iteration=iteration)
    bar = tqdm(tasks, desc="explore", unit="task", disable=not progress)
    for task in bar:
        result = run_task(task, calc, out_dir / task.name)
        report.tasks.append(result)
        if result.reason:
            log.info("%s (%s) stopped early at step %d: %s", task.name, task.group, result.step, result.detail)
        bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in sorted(report.counts().items())))
        atomic_write_json(out_dir / SUMMARY_JSON, report.to_dict())
    atomic_write_json(out_dir / SUMMARY_JSON, report.to_dict())
    return report
