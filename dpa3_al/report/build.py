"""The run report: ``report/report.md`` and a self-contained ``report/report.html`` with plots.

:func:`build_report` reads a run directory (``runs/<name>/``, docs/workflows.md) and writes,
per iteration, the committee's learning curves (``train/member-*/lcurve.csv``, convergence
from ``train_summary.json``), the histogram of ``max_devi_f`` over every recorded frame
(``explore/task-*/model_devi.csv``) with the trust levels of ``select/selection.json``, the
accurate / candidate / failed counts and ratios, what was selected and labeled
(``label/**/task-*/status.json``), the failures by reason (labels; MD tasks stopped early),
the dataset (``dataset/index/add-*.json``) and the stage decision (``decide/schedule.json``);
then the same across iterations and per stage, and the run's status (``state.json``).

It only reads the run directory (never opens the dataset through ``LabeledDataset``, which
may repair files) and writes under ``out_dir``, each file atomically; the same run gives the
same files (no time stamps of its own). Whatever is missing (an iteration still running, a
failed member, no virial deviations, an empty selection) is reported as missing.

Units: force deviations eV/Å; energy and virial deviations eV/atom; RMSE as in lcurve.csv
(energy eV/atom, force eV/Å, virial eV/atom).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpa3_al.common.errors import UserError
from dpa3_al.report_plots import (Bullets, Heading, LearningCurve, Para, Table, counts_text, fmt, iteration_figures,
                                  overview_figures, place, read_lcurve, to_html, to_markdown)

log = logging.getLogger(__name__)

__all__ = ["build_report", "load_run", "write_report", "build_document", "read_lcurve", "LearningCurve", "RunData",
           "IterationData"]

ITER_RE = re.compile(r"^iter-(\d{6})$")
MEMBER_RE = re.compile(r"^member-(\d+)$")
PLOT_RE = re.compile(r"^(overview-[a-z]+|iter-\d{6}-(lcurve|devi-[fv]))\.png$")   # the report's own PNG names
CLASSES = ("accurate", "candidate", "failed")


# ----------------------------------------------------------------------------- data
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
    selection: dict[str, Any] | None = None
    label: LabelData | None = None
    dataset: DatasetData | None = None
    decision: dict[str, Any] | None = None
    failed_steps: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"iter-{self.index:06d}"

    def count(self, name: str) -> int | None:
        return None if self.selection is None else int(self.selection.get("counts", {}).get(name, 0))

    def ratio(self, name: str) -> float:
        value = None if self.selection is None else self.selection.get("ratios", {}).get(name)
        return math.nan if value is None else float(value)

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


def _task_outcome(status: dict[str, Any] | None) -> str:
    if status is None:
        return "not_run"
    if status.get("status") == "stopped_early":
        return f"stopped_early:{status.get('reason')}"
    return str(status.get("status"))


def _load_explore(it: IterationData, folder: Path) -> None:
    from dpa3_al.explore.deviation import read_model_devi

    tasks = sorted(p for p in (folder / "explore").glob("task-*") if (p / "task.json").is_file())
    outcomes: Counter[str] = Counter()
    devi_f, devi_v = [], []
    for task in tasks:
        outcomes[_task_outcome(_json(task / "status.json", it.notes))] += 1
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
        if it.selection is not None and it.selection.get("n_selected", 0) and it.decision is None:
            it.notes.append("label: no finished label task yet")
        return
    label = LabelData()
    failed: Counter[str] = Counter()
    for path in statuses:
        status = _json(path, it.notes) or {}
        if status.get("status") == "ok":
            label.ok += 1
        elif status.get("status") == "failed":
            failed[str(status.get("reason") or "unknown")] += 1
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
    record = _json(folder / "decide" / "schedule.json", it.notes)
    if not record:
        return
    decisions = record.get("decisions", [])
    mine = [d for d in decisions if d.get("loop_iteration") == it.index] or decisions[-1:]
    if mine:
        it.decision = mine[-1]
        it.stage = it.decision.get("stage", it.stage)


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
    it.selection = _json(folder / "select" / "selection.json", it.notes)
    if it.selection is None:
        it.notes.append("select: no selection.json yet")
    _load_label(it, folder)
    it.dataset = _load_dataset(folder / "dataset", index, cache, it.notes)
    if it.dataset is None:
        it.notes.append("dataset: not collected yet")
    if it.decision is None:
        it.notes.append("decide: no schedule.json yet")
    return it


def _run_settings(root: Path, notes: list[str]) -> tuple[int | None, dict[int, float]]:
    """Committee size (plan.json) and each stage's conv_accuracy (config.yaml, else plan.json)."""
    from dpa3_al.explore.config import StageConfig

    plan = _json(root / "plan.json", notes) or {}
    loop = plan.get("loop", {})
    n_models = loop.get("n_models")
    explore = None
    try:
        import yaml

        config = yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8")) or {}
        explore = config.get("explore") if isinstance(config, dict) else None
    except (OSError, ValueError) as err:
        if (root / "config.yaml").exists():
            notes.append(f"config.yaml unreadable ({err})")
    if not isinstance(explore, dict):
        decide = (loop.get("calls", {}).get("decide") or {}).get("config") or {}
        explore = decide.get("explore", decide) if isinstance(decide, dict) else {}
    default = StageConfig.__dataclass_fields__["conv_accuracy"].default
    stages = explore.get("stages") if isinstance(explore, dict) else None
    thresholds = {i: float(s.get("conv_accuracy", default)) for i, s in enumerate(stages or [])
                  if isinstance(s, dict)}
    return (int(n_models) if n_models else None), thresholds


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
    n_models, thresholds = _run_settings(root, notes)
    steps = (state or {}).get("steps", {})
    current = (state or {}).get("iteration")
    last = max([*indices, *([current] if isinstance(current, int) else [])], default=-1)
    cache: dict[tuple, tuple] = {}
    iterations = [_load_iteration(root, i, n_models, steps, cache) for i in range(last + 1)]
    name = str((state or {}).get("name") or root.resolve().name)
    return RunData(root, name, state, iterations, n_models, thresholds, notes)


# ----------------------------------------------------------------------------- document
def _phase(run: RunData, it: IterationData) -> str:
    if it.decision is not None:
        return "complete"
    if it.index == run.iterations[-1].index and run.status in ("running", "submitted"):
        return "in progress"
    return "missing" if not it.exists else f"incomplete (run {run.status})"


def _overview_rows(run: RunData) -> list[tuple[str, ...]]:
    rows = []
    for it in run.iterations:
        sel, lab, ds, dec = it.selection or {}, it.label, it.dataset, it.decision or {}
        lv = sel.get("levels") or {}
        rows.append((str(it.index), fmt(it.stage), fmt(it.n_tasks if it.exists else None),
                     fmt(sel.get("n_frames")), *(fmt(it.count(c)) for c in CLASSES),
                     fmt(it.ratio("accurate")), f"{fmt(lv.get('f_lo'), 4)} / {fmt(lv.get('f_hi'), 4)}",
                     fmt(sel.get("n_selected")), fmt(lab.ok if lab else None),
                     fmt(lab.n_failed if lab else None), fmt(ds.frames if ds else None),
                     str(dec.get("action", _phase(run, it)))))
    return rows


def _status_blocks(run: RunData) -> list[Any]:
    state = run.state or {}
    items = [f"status: {run.status}"]
    if state.get("iteration") is not None:
        items.append(f"last step seen: {state.get('stage')} of iteration {state.get('iteration')}")
    if state.get("updated"):
        import datetime

        when = datetime.datetime.fromtimestamp(float(state["updated"]), datetime.timezone.utc)
        items.append(f"state.json updated {when:%Y-%m-%d %H:%M:%S} UTC")
    if state.get("message"):
        items.append(f"message: {state['message']}")
    blocks: list[Any] = [Heading(2, "Status", "status"), Bullets(tuple(items + run.notes))]
    failures = state.get("failures") or []
    if failures:
        blocks += [Para("Failed steps:"), Table(("step", "phase", "reason", "log"), tuple(
            (str(f.get("key")), str(f.get("phase")), str(f.get("reason") or "-"), str(f.get("log") or "-"))
            for f in failures))]
    return blocks


def _stage_rows(run: RunData) -> list[tuple[str, ...]]:
    rows = []
    for stage in sorted({it.stage for it in run.iterations if it.stage is not None}):
        its = [it for it in run.iterations if it.stage == stage]
        judged = [it for it in its if it.decision is not None]
        dec = judged[-1].decision if judged else {}
        rows.append((str(stage), ", ".join(str(it.index) for it in its), fmt(its[-1].ratio("accurate")),
                     fmt(run.conv_accuracy.get(stage)), str(dec.get("action", "not judged yet")),
                     fmt(dec.get("converged")), str(dec.get("reason", "-"))))
    return rows


def _train_blocks(it: IterationData, figs: dict[str, Any], images: dict[str, bytes]) -> list[Any]:
    rows = []
    for m in it.members:
        c, s = m.curve, m.summary or {}
        last = lambda key: fmt(c.last(key) if c else None, 5)  # noqa: E731
        conv = "-" if not s else ("yes" if s.get("converged") else "no") + \
            (f": {s['reason']}" if s.get("reason") else "")
        rows.append((m.name, m.model or "missing", fmt(int(c.steps[-1]) if c and c.steps.size else None),
                     last("e/train"), last("e/validation"), last("f/train"), last("f/validation"), conv,
                     "; ".join(m.notes) or "-"))
    blocks: list[Any] = [Heading(3, "Training"), Table(
        ("member", "model", "last step", "E RMSE train (eV/atom)", "E RMSE val (eV/atom)", "F RMSE train (eV/Å)",
         "F RMSE val (eV/Å)", "converged (train_summary.json)", "notes"), tuple(rows))] if rows else []
    return blocks + place({k: v for k, v in figs.items() if k.endswith("lcurve.png")}, images,
                           "no learning curve with RMSE values")


def _explore_blocks(it: IterationData, figs: dict[str, Any], images: dict[str, bytes]) -> list[Any]:
    blocks: list[Any] = [Heading(3, "Exploration"), Para(
        f"{it.n_tasks} MD tasks ({counts_text(it.task_outcomes)}); {it.devi_f.size} recorded frames.")]
    stopped = it.stopped_early()
    if stopped:
        blocks.append(Table(("stopped early: reason", "MD tasks"), tuple((k, str(v)) for k, v in stopped.items())))
    if not np.isfinite(it.devi_v).any():
        blocks.append(Para("No virial deviations recorded (max_devi_v is NaN: non-periodic frames, "
                           "or the committee gave no virial)."))
    if it.selection is None:
        blocks.append(Para("Trust levels unknown: no selection.json yet."))
    return blocks + place({k: v for k, v in figs.items() if "-devi-" in k}, images, "no finite deviation recorded")


def _selection_blocks(it: IterationData) -> list[Any]:
    sel = it.selection
    if sel is None:
        return [Heading(3, "Selection"), Para("Missing: select/selection.json does not exist yet.")]
    n, lv = int(sel.get("n_frames", 0)), sel.get("levels") or {}
    rows = [(c, fmt(it.count(c)), fmt(it.ratio(c))) for c in CLASSES]
    rows.append(("total", fmt(n), fmt(1.0 if n else None)))
    levels = f"f_lo {fmt(lv.get('f_lo'))}, f_hi {fmt(lv.get('f_hi'))} eV/Å" + \
        (f"; v_lo {fmt(lv.get('v_lo'))}, v_hi {fmt(lv.get('v_hi'))} eV/atom" if lv.get("v_hi") is not None else "") + \
        (" (adaptive lower level)" if lv.get("adaptive") else "")
    removed = {k: v.get("count", 0) for k, v in (sel.get("filters") or {}).items() if v.get("count")}
    blocks = [Heading(3, "Selection"), Table(("class", "frames", "ratio"), tuple(rows)), Para(
        f"Trust levels: {levels}. NaN deviations (failed): {sel.get('counts', {}).get('failed_nan', 0)}. "
        f"Filters removed: {counts_text(removed)}. Selected {sel.get('n_selected', 0)} of "
        f"{it.count('candidate')} candidates (strategy {sel.get('strategy')}, max_select {sel.get('max_select')}).")]
    groups = sel.get("per_group") or {}
    if len(groups) > 1:
        blocks.append(Table(("task group", "tasks", *CLASSES), tuple(
            (g, fmt(c.get("tasks")), *(fmt(c.get(k)) for k in CLASSES)) for g, c in groups.items())))
    if n == 0:
        blocks.append(Para("Empty selection: no frame was recorded in this iteration."))
    return blocks


def _label_dataset_blocks(it: IterationData) -> list[Any]:
    selected = (it.selection or {}).get("n_selected")
    blocks: list[Any] = [Heading(3, "Labeling and dataset")]
    if it.label is None:
        blocks.append(Para(f"Labeling: no finished label task ({fmt(selected)} frames selected)."))
    else:
        lab = it.label
        pending = None if selected is None else max(int(selected) - lab.ok - lab.n_failed, 0)
        blocks.append(Table(("selected", "labeled", "label failed", "not finished"),
                            ((fmt(selected), str(lab.ok), str(lab.n_failed), fmt(pending)),)))
        if lab.failed:
            blocks.append(Table(("label failure reason", "frames"), tuple((k, str(v)) for k, v in lab.failed.items())))
    ds = it.dataset
    if ds is None:
        blocks.append(Para("Dataset: missing (collect has not published dataset/ for this iteration)."))
    else:
        blocks.append(Para(f"Dataset after this iteration: {ds.frames} frames in {len(ds.systems)} system(s), "
                           f"{ds.added} added by this iteration; failure records: {counts_text(ds.failures)}."))
        if ds.systems:
            blocks.append(Table(("system", "frames"), tuple((k, str(v)) for k, v in ds.systems.items())))
    return blocks


def _iteration_blocks(run: RunData, it: IterationData, images: dict[str, bytes]) -> list[Any]:
    stage = "" if it.stage is None else f", stage {it.stage}"
    blocks: list[Any] = [Heading(2, f"Iteration {it.index}{stage}: {_phase(run, it)}", it.name)]
    if it.notes:
        blocks += [Para("Missing or incomplete:"), Bullets(tuple(it.notes))]
    if it.failed_steps:
        blocks += [Para("Failed steps:"), Bullets(tuple(f"{s.get('key')}: {s.get('reason') or s.get('phase')} "
                                                        f"(log: {s.get('log') or '-'})" for s in it.failed_steps))]
    if not it.exists:
        return blocks
    figs = iteration_figures(it)
    blocks += _train_blocks(it, figs, images) + _explore_blocks(it, figs, images) + _selection_blocks(it)
    blocks += _label_dataset_blocks(it)
    dec = it.decision
    blocks.append(Heading(3, "Decision"))
    blocks.append(Para("Not judged yet (no decide/schedule.json)." if dec is None else
                       f"{dec.get('action')} (stage {dec.get('stage')}, iteration {dec.get('iteration')} of the "
                       f"stage; converged: {fmt(dec.get('converged'))}): {dec.get('reason')}"))
    return blocks


def build_document(run: RunData) -> tuple[list[Any], dict[str, bytes]]:
    """The report's blocks and the PNG images they show (file name -> bytes)."""
    images: dict[str, bytes] = {}
    done = sum(it.decision is not None for it in run.iterations)
    blocks: list[Any] = [Heading(1, f"dpa3-al run report: {run.name}"), Para(
        f"Run directory {run.root.resolve()}: {len(run.iterations)} iterations ({done} complete), "
        f"status {run.status}. Units: force deviations eV/Å; energy and virial deviations eV/atom.")]
    blocks += _status_blocks(run)
    blocks += [Heading(2, "Across iterations", "overview"), Table(
        ("iteration", "stage", "MD tasks", "frames", *CLASSES, "accurate ratio", "f_lo / f_hi (eV/Å)", "selected",
         "labeled", "label failed", "dataset frames", "decision"), tuple(_overview_rows(run)))]
    blocks += place(overview_figures(run.iterations, run.conv_accuracy), images, "nothing to plot (no data yet, "
                    "or all zero)")
    stage_rows = _stage_rows(run)
    blocks += [Heading(2, "Stages", "stages")] + ([Table(
        ("stage", "iterations", "last accurate ratio", "conv_accuracy", "decision", "converged", "reason"),
        tuple(stage_rows))] if stage_rows else [Para("No stage known yet.")])
    for it in run.iterations:
        blocks += _iteration_blocks(run, it, images)
    return blocks, images


# ----------------------------------------------------------------------------- writing
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temporary file in the same folder (usual permissions), then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_report(run: RunData, out_dir: Path) -> Path:
    """Write the plots, ``report.md`` and ``report.html`` of ``run`` into ``out_dir``; PNG files of
    an earlier report that this one no longer draws are removed. Returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks, images = build_document(run)
    for name, data in images.items():
        atomic_write_bytes(out_dir / name, data)
    for stale in out_dir.glob("*.png"):
        if PLOT_RE.match(stale.name) and stale.name not in images:
            stale.unlink(missing_ok=True)
    atomic_write_bytes(out_dir / "report.md", to_markdown(blocks).encode("utf-8"))
    atomic_write_bytes(out_dir / "report.html", to_html(blocks, images, f"dpa3-al run {run.name}").encode("utf-8"))
    log.debug("report of %s: %s (%d plots)", run.root, out_dir, len(images))
    return out_dir


def build_report(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Read the run directory and write its report (default ``run_dir/report``); returns the
    report folder (``report.md``, ``report.html``, ``*.png``). Safe to run again at any time,
    also while the run goes on: it shows what exists and says what is missing."""
    run = load_run(Path(run_dir))
    return write_report(run, Path(out_dir) if out_dir is not None else Path(run_dir) / "report")
