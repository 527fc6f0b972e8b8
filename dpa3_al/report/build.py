"""The run report: ``report/report.md`` and a self-contained ``report/report.html`` with plots.

:func:`build_report` reads a run directory (``runs/<name>/``, docs/workflows.md; see
:mod:`.data`) and writes, per iteration, the committee's learning curves, the histogram of
``max_devi_f`` over every recorded frame with the trust levels of the selection, the accurate /
candidate / failed counts and ratios, what was selected and labeled, the failures by reason
(labels; MD tasks stopped early), the dataset and the stage decision; then the same across
iterations and per stage, and the run's status (``state.json``).

It writes under ``out_dir`` only, each file atomically; the same run gives the same files (no
time stamps of its own). Whatever is missing (an iteration still running, a failed member, no
virial deviations, an empty selection) is reported as missing.

Units: force deviations eV/Å; energy and virial deviations eV/atom; RMSE as in lcurve.csv
(energy eV/atom, force eV/Å, virial eV/atom).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from dpa3_al.common.fileio import atomic_write_bytes

from .accuracy import LEARNING_CURVE_CSV, accuracy_blocks, learning_curve_csv
from .data import IterationData, RunData, load_run
from .document import Bullets, Heading, Para, Table, counts_text, fmt, place, to_html, to_markdown
from .plots import iteration_figures, overview_figures

log = logging.getLogger(__name__)

__all__ = ["build_report", "write_report", "build_document"]

PLOT_RE = re.compile(r"^(overview-[a-z]+|accuracy-[a-z-]+|iter-\d{6}-(lcurve|devi-[fv]))\.png$")   # the report's own PNG names
CLASSES = ("accurate", "candidate", "failed")


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
        sel, lab, ds, dec = it.selection, it.label, it.dataset, it.decision
        lv = sel.levels if sel else None
        rows.append((str(it.index), fmt(it.stage), fmt(it.n_tasks if it.exists else None),
                     fmt(sel.n_frames if sel else None), *(fmt(it.count(c)) for c in CLASSES),
                     fmt(it.ratio("accurate")), f"{fmt(lv.f_lo if lv else None, 4)} / {fmt(lv.f_hi if lv else None, 4)}",
                     fmt(sel.n_selected if sel else None), fmt(lab.ok if lab else None),
                     fmt(lab.n_failed if lab else None), fmt(ds.frames if ds else None),
                     dec.action if dec else _phase(run, it)))
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
        dec = judged[-1].decision if judged else None
        rows.append((str(stage), ", ".join(str(it.index) for it in its), fmt(its[-1].ratio("accurate")),
                     fmt(run.conv_accuracy.get(stage)), dec.action if dec else "not judged yet",
                     fmt(dec.converged if dec else None), dec.reason if dec else "-"))
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


#: a fixed trust band that holds at least this share of the explored frames as candidates selects
#: little better than random among them (docs/al-benchmark.md: 82-100 % with an under-trained committee)
NONDISCRIMINATING_SHARE = 0.8


def band_hint(it: IterationData) -> str | None:
    """What to change when a fixed trust band calls nearly every explored frame a candidate (from
    iteration 1 on, with a deviation-driven strategy and no target), else None."""
    sel = it.selection
    if sel is None or it.index < 1 or it.target is not None or sel.levels.adaptive or sel.strategy == "random":
        return None
    share = it.ratio("candidate")
    if not share >= NONDISCRIMINATING_SHARE:
        return None
    return (f"The trust band does not discriminate: {share:.0%} of the explored frames are candidates "
            f"(f_lo {fmt(sel.levels.f_lo)} eV/Å), so the selection is little better than a random pick among them. "
            "Either the committee is under-trained (its members disagree everywhere; on the public benchmark, "
            "docs/al-benchmark.md, more training steps per iteration made the band discriminate and the "
            "selection pay): raise train.training.numb_steps or max_time; or f_lo is below the accuracy this "
            "model reaches: raise it, or state the accuracy you want (target: {f_rmse: ...}).")


def _selection_blocks(it: IterationData) -> list[Any]:
    sel = it.selection
    if sel is None:
        return [Heading(3, "Selection"), Para("Missing: select/selection.json does not exist yet.")]
    n, lv = sel.n_frames, sel.levels
    rows = [(c, fmt(it.count(c)), fmt(it.ratio(c))) for c in CLASSES]
    rows.append(("total", fmt(n), fmt(1.0 if n else None)))
    levels = f"f_lo {fmt(lv.f_lo)}, f_hi {fmt(lv.f_hi)} eV/Å" + \
        (f"; v_lo {fmt(lv.v_lo)}, v_hi {fmt(lv.v_hi)} eV/atom" if lv.v_hi is not None else "") + \
        (" (adaptive lower level)" if lv.adaptive else "")
    removed = {k: v.get("count", 0) for k, v in sel.filters.items() if v.get("count")}
    blocks = [Heading(3, "Selection"), Table(("class", "frames", "ratio"), tuple(rows)), Para(
        f"Trust levels: {levels}. NaN deviations (failed): {sel.counts.get('failed_nan', 0)}. "
        f"Filters removed: {counts_text(removed)}. Selected {sel.n_selected} of "
        f"{it.count('candidate')} candidates (strategy {sel.strategy}, max_select {sel.max_select}).")]
    groups = sel.per_group
    if len(groups) > 1:
        blocks.append(Table(("task group", "tasks", *CLASSES), tuple(
            (g, fmt(c.get("tasks")), *(fmt(c.get(k)) for k in CLASSES)) for g, c in groups.items())))
    if n == 0:
        blocks.append(Para("Empty selection: no frame was recorded in this iteration."))
    hint = band_hint(it)
    if hint:
        blocks.append(Para(hint))
    return blocks


def _label_dataset_blocks(it: IterationData) -> list[Any]:
    selected = it.selection.n_selected if it.selection else None
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
                       f"{dec.action} (stage {dec.stage}, iteration {dec.iteration} of the "
                       f"stage; converged: {fmt(dec.converged)}): {dec.reason}"))
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
    blocks += accuracy_blocks(run, images)
    for it in run.iterations:
        blocks += _iteration_blocks(run, it, images)
    return blocks, images


# ----------------------------------------------------------------------------- writing
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
    curve = learning_curve_csv(run)
    if curve is not None:
        atomic_write_bytes(out_dir / LEARNING_CURVE_CSV, curve.encode("utf-8"))
    else:
        (out_dir / LEARNING_CURVE_CSV).unlink(missing_ok=True)
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
