"""The task grid: task groups expand to configurations x temperatures x pressures.

One task is one MD run in its own folder ``task-NNNNNN`` (numbered across the stage, in
group -> configuration -> temperature -> pressure order). A task's seed is derived from
(group seed, iteration, task index), so the same config and iteration give the same tasks;
``n_sample`` draws a different subset of configurations in each iteration.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from dpa3_al.common.errors import InputError
from dpa3_al.common.fileio import atomic_write_text, json_default

from .config import NPT_ENSEMBLES, ExploreConfig, StageConfig, StopConfig, TaskGroupConfig
from .configurations import Configuration, build_pool, sample
from .status import read_status

TASK_JSON = "task.json"
CONF_FILE = "conf.extxyz"


@dataclass(frozen=True)
class MDSettings:
    """Integrator settings of one task (units: K, bar, fs, 1/fs)."""

    ensemble: str
    temperature: float
    pressure: float | None
    timestep: float
    steps: int
    traj_freq: int
    friction: float
    tau_t: float
    tau_p: float


@dataclass(frozen=True)
class Task:
    """One MD task: a starting structure, MD settings, stop criteria and provenance."""

    name: str
    index: int
    group: str
    stage: int
    iteration: int
    conf_label: str
    seed: int
    md: MDSettings
    stop: StopConfig
    atoms: Atoms

    def to_json(self) -> dict[str, Any]:
        """Everything but the structure (which goes to ``conf.extxyz``)."""
        return {"name": self.name, "index": self.index, "group": self.group, "stage": self.stage,
                "iteration": self.iteration, "conf_label": self.conf_label, "seed": self.seed,
                "natoms": len(self.atoms), "formula": self.atoms.get_chemical_formula(),
                "md": asdict(self.md), "stop": asdict(self.stop)}

    @classmethod
    def from_json(cls, data: dict[str, Any], atoms: Atoms) -> "Task":
        return cls(name=data["name"], index=data["index"], group=data["group"], stage=data["stage"],
                   iteration=data["iteration"], conf_label=data["conf_label"], seed=data["seed"],
                   md=MDSettings(**data["md"]), stop=StopConfig(**data["stop"]), atoms=atoms)


def task_name(index: int) -> str:
    return f"task-{index:06d}"


def derive_seed(*parts: int) -> int:
    """A 32-bit seed from integers (stable across platforms and Python versions)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _settings(group: TaskGroupConfig, temp: float, press: float | None) -> MDSettings:
    return MDSettings(ensemble=group.ensemble, temperature=float(temp), pressure=press,
                      timestep=group.timestep, steps=group.steps, traj_freq=group.traj_freq,
                      friction=group.friction, tau_t=group.tau_t, tau_p=group.tau_p)


def _check_conf(conf: Configuration, group: TaskGroupConfig, name: str) -> None:
    if group.ensemble in NPT_ENSEMBLES and not (conf.atoms.pbc.all() and conf.atoms.cell.rank == 3):
        raise InputError(f"task group {name!r}: ensemble {group.ensemble} needs a periodic 3D cell, "
                         f"but configuration {conf.label!r} has pbc={conf.atoms.pbc.tolist()}; "
                         "use nvt-langevin/nvt-nhc/nve for molecules and slabs")


def group_configurations(group: TaskGroupConfig, base_dir: Path, iteration: int) -> list[Configuration]:
    """The configurations a group uses in ``iteration`` (the pool, sampled by ``n_sample``)."""
    pool = build_pool(group.configurations, base_dir, group.seed)
    rng = np.random.default_rng(np.random.SeedSequence([group.seed, iteration, 0]))
    return [pool[i] for i in sample(len(pool), group.n_sample, rng)]


def make_tasks(stage: StageConfig, stop: StopConfig, *, base_dir: Path = Path("."), stage_index: int = 0,
               iteration: int = 0) -> list[Task]:
    """Expand every task group of ``stage`` into tasks (deterministic for given seeds and iteration).

    Args:
        stage: the stage's task groups.
        stop: early-stop criteria copied into every task.
        base_dir: directory that relative ``file:`` paths are read from (the config file's folder).
        stage_index, iteration: recorded in the tasks; ``iteration`` also seeds sampling and MD.
    """
    tasks: list[Task] = []
    for g, group in enumerate(stage.task_groups):
        name = stage.group_name(g)
        for conf in group_configurations(group, base_dir, iteration):
            _check_conf(conf, group, name)
            for temp in group.temps:
                for press in group.pressures():
                    index = len(tasks)
                    tasks.append(Task(name=task_name(index), index=index, group=name, stage=stage_index,
                                      iteration=iteration, conf_label=conf.label,
                                      seed=derive_seed(group.seed, iteration, index, 1),
                                      md=_settings(group, temp, press), stop=stop, atoms=conf.atoms.copy()))
    return tasks


def atomic_write_json(path: Path, data: Any) -> None:
    """Atomic JSON write; NaN and infinities become null (strict JSON)."""
    atomic_write_text(path, json.dumps(_finite(data), indent=2, default=json_default, allow_nan=False,
                                        ensure_ascii=False) + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) or isinstance(obj, np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_task(task: Task, task_dir: Path) -> None:
    """Write ``task.json`` and ``conf.extxyz`` (atomic; rewriting the same task is harmless)."""
    import io

    import ase.io

    buf = io.StringIO()
    ase.io.write(buf, task.atoms, format="extxyz")
    atomic_write_text(task_dir / CONF_FILE, buf.getvalue())
    atomic_write_json(task_dir / TASK_JSON, task.to_json())


def load_task(task_dir: Path) -> Task:
    """Read a task written by :func:`write_task`."""
    import ase.io

    try:
        data = json.loads((task_dir / TASK_JSON).read_text(encoding="utf-8"))
        atoms = ase.io.read(task_dir / CONF_FILE, format="extxyz")
    except (OSError, ValueError) as err:
        raise InputError(f"{task_dir} is not a readable MD task folder ({err}); expected {TASK_JSON} "
                         f"and {CONF_FILE} written by `dpa3-al explore`") from None
    return Task.from_json(data, atoms)


def write_tasks(tasks: list[Task], out_dir: Path) -> list[Path]:
    """One folder per task under ``out_dir`` (finished ones are left as they are); returns the folders."""
    dirs = []
    for task in tasks:
        task_dir = out_dir / task.name
        if not is_done(task_dir):
            write_task(task, task_dir)
        dirs.append(task_dir)
    return dirs


def is_done(task_dir: Path) -> bool:
    """True when the task ran to its end or stopped early (a re-run skips it)."""
    status = read_status(task_dir)
    return status is not None and status.done


def task_dirs(root: Path) -> list[Path]:
    """The task folders under ``root`` (``task-*`` with a task.json), sorted by name."""
    return sorted(p for p in root.glob("task-*") if (p / TASK_JSON).is_file())


def write_stage_tasks(cfg: ExploreConfig, stage: int, iteration: int, base_dir: Path, workdir: Path) -> list[Path]:
    """The task folders of ``iteration`` in stage ``stage`` under ``workdir`` (the prep-explore step).

    Args:
        cfg: the exploration section. stage: the stage the schedule is in.
        iteration: the loop iteration (seeds the sampling and the MD).
        base_dir: where relative structure files are read from. workdir: where ``task-NNNNNN`` go.
    Returns:
        the task folders, in task order.
    """
    if not 0 <= stage < len(cfg.stages):
        raise InputError(f"explore.stages has {len(cfg.stages)} stage(s) but the schedule asks for stage {stage}; "
                         "add stages to the config or start a new run")
    tasks = make_tasks(cfg.stages[stage], cfg.stop, base_dir=base_dir, stage_index=stage, iteration=iteration)
    return write_tasks(tasks, Path(workdir))
