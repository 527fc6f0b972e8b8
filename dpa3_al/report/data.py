"""The run's files as the report's data model: :func:`load_run` reads a run directory.

Each file is read through the reader of the module that owns its contract: ``selection.json``
(:class:`dpa3_al.select.SelectionReport`), ``schedule.json``
(:class:`dpa3_al.schedule.ScheduleRecord`), an MD task's ``status.json``
(:class:`dpa3_al.explore.status.TaskStatus`), a label task's ``status.json``
(:class:`dpa3_al.label.taskdir.LabelStatus`), learning curves (:mod:`.lcurve`); the committee
size and each stage's ``conv_accuracy`` come from the run's frozen ``config.yaml``
(:func:`read_run_settings`). Nothing is written, and the dataset is never opened through
``LabeledDataset`` (which may repair files). Whatever is missing or unreadable becomes a note.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from dpa3_al.calibration import CalibrationPair, CalibrationRecord, TargetLevels
from dpa3_al.common.errors import UserError
from dpa3_al.evaluation import FinalChoice, read_test
from dpa3_al.explore.status import TaskStatus
from dpa3_al.label.taskdir import LabelStatus
from dpa3_al.schedule import Decision, ScheduleRecord
from dpa3_al.select import SelectionReport

from .lcurve import LearningCurve, read_lcurve

__all__ = ["MemberData", "LabelData", "DatasetData", "IterationData", "RunData", "RunSettings", "load_run",
           "read_run_settings"]

ITER_RE = re.compile(r"^iter-(\d{6})$")
MEMBER_RE = re.compile(r"^member-(\d+)$")
T = TypeVar("T")


@dataclass
class MemberData:
    name: str
    model: str | None = None
    curve: LearningCurve | None = None
    summary: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class LabelData:
    """Finished label tasks of one iteration: ``ok`` frames and failures by reason."""

    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        return sum(self.failed.values())


@dataclass
class DatasetData:
    """One iteration's dataset snapshot (from its commit files)."""

    frames: int
    systems: dict[str, int]
    added: int                      # frames this iteration added
    failures: dict[str, int]        # failure records (all iterations) by reason


@dataclass
class IterationData:
    index: int
    exists: bool = True
    stage: int | None = None
    members: list[MemberData] = field(default_factory=list)
    n_tasks: int = 0
    task_outcomes: dict[str, int] = field(default_factory=dict)
    devi_f: np.ndarray = field(default_factory=lambda: np.zeros(0))
    devi_v: np.ndarray = field(default_factory=lambda: np.zeros(0))
    selection: SelectionReport | None = None
    label: LabelData | None = None
    dataset: DatasetData | None = None
    decision: Decision | None = None
    test: dict[str, Any] | None = None                  # decide/test.json (the evaluate step's)
    calibration: list[CalibrationPair] = field(default_factory=list)   # this iteration's pairs
    target: TargetLevels | None = None                  # select/target.json (runs with a target)
    failed_steps: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"iter-{self.index:06d}"

    def count(self, name: str) -> int | None:
        return None if self.selection is None else int(self.selection.counts.get(name, 0))

    def ratio(self, name: str) -> float:
        return math.nan if self.selection is None else self.selection.ratio(name)

    def stopped_early(self) -> dict[str, int]:
        return {k.split(":", 1)[1]: v for k, v in self.task_outcomes.items() if k.startswith("stopped_early:")}


@dataclass
class RunData:
    root: Path
    name: str
    state: dict[str, Any] | None
    iterations: list[IterationData]
    n_models: int | None = None
    conv_accuracy: dict[int, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    final: FinalChoice | None = None             # final/final.json: the final model
    final_test: dict[str, Any] | None = None     # final/test.json: the final committee on the test set

    @property
    def status(self) -> str:
        return str((self.state or {}).get("status", "unknown (no state.json)"))


# ----------------------------------------------------------------------------- reading
def _json(path: Path, notes: list[str] | None = None) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None (a note says why when the file exists but is unusable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return data
        err: Exception = ValueError(f"a JSON {type(data).__name__}, not an object")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        err = error
    if notes is not None:
        notes.append(f"{path.name} unreadable ({err})")
    return None


def _read(reader: Callable[[Path], T], path: Path, notes: list[str]) -> T | None:
    """``reader(path)``, or None: silently when the file does not exist, with a note when it is unusable."""
    try:
        return reader(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        notes.append(f"{path.name} unreadable ({err})")
        return None


def _model_file(member_dir: Path) -> Path | None:
    if (member_dir / "model.pt").is_file():
        return member_dir / "model.pt"
    others = sorted(p for p in member_dir.glob("*.pt") if p.name not in ("checkpoint.pt", "best.pt"))
    return others[0] if others else None


def _load_member(member_dir: Path) -> MemberData:
    member = MemberData(member_dir.name)
    model = _model_file(member_dir)
    member.model = model.name if model else None
    if model is None:
        member.notes.append("no model file (training failed or still running)")
    curve_file = next((member_dir / n for n in ("lcurve.csv", "lcurve.out") if (member_dir / n).is_file()), None)
    if curve_file is None:
        member.notes.append("no lcurve.csv")
    else:
        try:
            member.curve = read_lcurve(curve_file)
            if not member.curve.series:
                member.notes.append(f"{curve_file.name} has no RMSE columns")
            elif member.curve.steps.size == 0:
                member.notes.append(f"{curve_file.name} has no rows yet")
        except (OSError, ValueError) as err:
            member.notes.append(f"{curve_file.name} unreadable ({err})")
    member.summary = _json(member_dir / "train_summary.json", member.notes)
    return member


def _load_train(it: IterationData, folder: Path, n_models: int | None) -> None:
    found = {int(m.group(1)): p for p in sorted((folder / "train").glob("member-*"))
             if p.is_dir() and (m := MEMBER_RE.match(p.name))}
    width = len(next(iter(found.values())).name) - len("member-") if found else 3
    expected = set(range(n_models)) if n_models else set()
    for index in sorted(expected | set(found)):
        if index in found:
            it.members.append(_load_member(found[index]))
        else:
            it.members.append(MemberData(f"member-{index:0{width}d}", notes=["missing: no folder in train/"]))
    if not it.members:
        it.notes.append("train: no committee member folders yet")


def _load_explore(it: IterationData, folder: Path) -> None:
    from dpa3_al.explore.deviation import read_model_devi

    tasks = sorted(p for p in (folder / "explore").glob("task-*") if (p / "task.json").is_file())
    outcomes: Counter[str] = Counter()
    devi_f, devi_v = [], []
    for task in tasks:
        status = _read(lambda p: TaskStatus.read(p.parent), task / "status.json", it.notes)
        outcomes["not_run" if status is None else status.outcome] += 1
        if it.stage is None:
            it.stage = (_json(task / "task.json") or {}).get("stage")
        if not (task / "model_devi.csv").is_file():
            continue
        try:
            _, devi = read_model_devi(task / "model_devi.csv")
        except (OSError, ValueError) as err:
            it.notes.append(f"explore: {task.name}/model_devi.csv unreadable ({err})")
            continue
        devi_f.append(devi[:, 3])
        devi_v.append(devi[:, 0])
    it.n_tasks, it.task_outcomes = len(tasks), dict(sorted(outcomes.items()))
    if devi_f:
        it.devi_f, it.devi_v = np.concatenate(devi_f), np.concatenate(devi_v)
    if not tasks:
        it.notes.append("explore: no task folders yet")


def _load_label(it: IterationData, folder: Path) -> None:
    root = folder / "label"
    statuses = sorted({*root.glob("task-*/status.json"), *root.glob("*/task-*/status.json")})
    if not statuses:
        if it.selection is not None and it.selection.n_selected and it.decision is None:
            it.notes.append("label: no finished label task yet")
        return
    label = LabelData()
    failed: Counter[str] = Counter()
    for path in statuses:
        status = _read(lambda p: LabelStatus.read(p.parent), path, it.notes)
        if status is not None and status.status == "ok":
            label.ok += 1
        elif status is not None and status.status == "failed":
            failed[str(status.reason or "unknown")] += 1
    label.failed = dict(sorted(failed.items()))
    it.label = label


def _commit(path: Path, cache: dict[tuple, tuple], notes: list[str]) -> tuple:
    """(systems, iterations, failure reasons) of one dataset commit file. Each iteration's dataset
    holds hard links or copies of the earlier commits, so each is parsed once (keyed by name,
    size and modification time)."""
    stat = path.stat()
    key = (path.name, stat.st_size, stat.st_mtime_ns)
    if key not in cache:
        commit = _json(path, notes) or {}
        frames = [r for r in commit.get("frames", []) if isinstance(r, dict)]
        cache[key] = ([str(r.get("system")) for r in frames], [r.get("iteration") for r in frames],
                      [str(r.get("reason")) for r in commit.get("failures", []) if isinstance(r, dict)])
    return cache[key]


def _load_dataset(root: Path, index: int, cache: dict[tuple, tuple], notes: list[str]) -> DatasetData | None:
    if not (root / "index").is_dir():
        return None
    systems: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    added = 0
    for path in sorted((root / "index").glob("add-*.json")):
        names, iterations, reasons = _commit(path, cache, notes)
        systems.update(names)
        failures.update(reasons)
        added += sum(i == index for i in iterations)
    return DatasetData(sum(systems.values()), dict(sorted(systems.items())), added, dict(sorted(failures.items())))


def _load_decision(it: IterationData, folder: Path) -> None:
    record = _read(ScheduleRecord.read, folder / "decide" / "schedule.json", it.notes)
    it.decision = record.latest(it.index) if record is not None else None
    if it.decision is not None:
        it.stage = it.decision.stage


def _load_iteration(root: Path, index: int, n_models: int | None, steps: dict[str, Any],
                    cache: dict[tuple, tuple]) -> IterationData:
    it = IterationData(index)
    folder = root / it.name
    it.failed_steps = [s for s in steps.values() if isinstance(s, dict) and s.get("iteration") == index
                       and s.get("phase") in ("Failed", "Error")]
    if not folder.is_dir():
        it.exists = False
        it.notes.append(f"{it.name}/ is missing: no step of this iteration has published anything (yet)")
        return it
    _load_decision(it, folder)
    _load_train(it, folder, n_models)
    _load_explore(it, folder)
    it.selection = _read(SelectionReport.read, folder / "select" / "selection.json", it.notes)
    if it.selection is None:
        it.notes.append("select: no selection.json yet")
    _load_label(it, folder)
    it.dataset = _load_dataset(folder / "dataset", index, cache, it.notes)
    if it.dataset is None:
        it.notes.append("dataset: not collected yet")
    if it.decision is None:
        it.notes.append("decide: no schedule.json yet")
    _load_accuracy(it, folder)
    return it


def _load_accuracy(it: IterationData, folder: Path) -> None:
    """The evaluate step's test.json and calibration.json (beside schedule.json) and target.json."""
    it.test = read_test(folder / "decide")
    record = _read(CalibrationRecord.read, folder / "decide" / "calibration.json", it.notes)
    it.calibration = record.iteration(it.index) if record is not None else []
    it.target = _read(TargetLevels.read, folder / "select", it.notes)


@dataclass(frozen=True)
class RunSettings:
    """What the report needs from the run's config: the committee size and each stage's
    ``conv_accuracy`` (None / empty when the run has no ``config.yaml``)."""

    committee: int | None = None
    conv_accuracy: dict[int, float] = field(default_factory=dict)


def read_run_settings(root: Path, notes: list[str]) -> RunSettings:
    """The settings in ``root/config.yaml`` (the resolved run config that ``dpa3-al submit``
    freezes there), through the owning sections' typed configs: ``train`` (TrainConfig:
    ``training.numb_models``) and ``explore`` (ExploreConfig: the stages). A section that is
    absent gives nothing; one that is unreadable gives a note."""
    import yaml

    from dpa3_al.common.typed_config import from_dict
    from dpa3_al.explore.config import ExploreConfig
    from dpa3_al.model.train.config import TrainConfig

    path = root / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(config, dict):
            raise ValueError(f"a YAML {type(config).__name__}, not a mapping")
        train = config.get("train")
        committee = None if train is None else TrainConfig.from_dict(train).training.numb_models
        explore = from_dict(ExploreConfig, config.get("explore") or {}, path="explore")
    except FileNotFoundError:
        return RunSettings()
    except (OSError, ValueError) as err:
        notes.append(f"config.yaml unreadable ({err})")
        return RunSettings()
    return RunSettings(committee, {i: float(s.conv_accuracy) for i, s in enumerate(explore.stages)})


def load_run(run_dir: Path) -> RunData:
    """Everything the report shows, read from ``run_dir`` (nothing is written).

    Raises:
        UserError: ``run_dir`` holds neither ``state.json`` nor ``iter-*`` folders.
    """
    root = Path(run_dir)
    indices = sorted(int(m.group(1)) for p in root.glob("iter-*") if p.is_dir() and (m := ITER_RE.match(p.name)))
    if not root.is_dir() or (not (root / "state.json").is_file() and not indices):
        raise UserError(f"{root} is not a run directory (no state.json and no iter-NNNNNN/ folders); "
                        "give the folder `dpa3-al submit` created, e.g. runs/<name>")
    notes: list[str] = []
    state = _json(root / "state.json", notes)
    if state is None:
        notes.append("state.json missing: the run's status is unknown")
    settings = read_run_settings(root, notes)
    n_models, thresholds = settings.committee, settings.conv_accuracy
    steps = (state or {}).get("steps", {})
    current = (state or {}).get("iteration")
    last = max([*indices, *([current] if isinstance(current, int) else [])], default=-1)
    cache: dict[tuple, tuple] = {}
    iterations = [_load_iteration(root, i, n_models, steps, cache) for i in range(last + 1)]
    name = str((state or {}).get("name") or root.resolve().name)
    final = FinalChoice.read(root / "final")
    return RunData(root, name, state, iterations, n_models, thresholds, notes, final, read_test(root / "final"))
