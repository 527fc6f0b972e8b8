"""Stages and convergence: a small state machine over (stage, iteration in stage).

After each iteration the loop calls :func:`judge` with the iteration's outcome (accurate
ratio, and the lower trust level used, from ``selection.json``); :func:`decide` is the same as
a workflow step over files (``selection.json`` in, ``schedule.json`` out). The decision says whether
to run another iteration of the same stage (``continue``), to move to the next stage
(``next_stage``), that the exploration is over (``done``), or that the run must stop
(``stop``: the stage hit ``max_iter`` unconverged and ``fatal_at_max`` is set; the caller
raises :class:`StageNotConverged`). Decisions and states are plain records (``to_dict`` /
``from_dict``) so the loop can store them and resume.

Convergence of a stage:
- fixed levels: the accurate ratio (accurate frames / all recorded frames) >= ``conv_accuracy``;
- adaptive lower level: the level stopped moving, i.e. over the last ``level_n_checked``
  iterations (max - min) <= ``level_rtol`` x max.
An iteration with no recorded frames never converges. With an accuracy target (``target:``,
:mod:`dpa3_al.calibration`), an iteration whose levels were not calibrated against true errors
(``target.json`` beside ``selection.json`` says ``calibrated: false``) never converges either:
the accurate ratio then says nothing about the target.

With a target, the verdict is *recalibrated*: the select step placed its levels with k from
earlier iterations' labels (an earlier committee: it overestimates a committee that has since
improved), but by decide time the evaluate step has measured the committee that explored on
this iteration's own labels (``calibration.json``). :func:`decide` re-derives f_lo from those
pairs alone on the same explored deviations (:func:`dpa3_al.calibration.recalibrate`) and judges
the accurate ratio at that level; ``decide/target.json`` keeps the levels of the verdict.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, Sequence

from dpa3_al.calibration import CalibrationRecord, TargetConfig, TargetLevels, recalibrate
from dpa3_al.common.errors import UserError
from dpa3_al.common.fileio import read_json_object
from dpa3_al.explore.config import StageConfig
from dpa3_al.explore.tasks import atomic_write_json
from dpa3_al.select import SelectionReport

log = logging.getLogger(__name__)

Action = Literal["continue", "next_stage", "done", "stop"]


class StageNotConverged(UserError):
    """A stage reached max_iter without converging and ``fatal_at_max`` is set."""


@dataclass(frozen=True)
class IterationOutcome:
    """What the schedule needs from one iteration's selection."""

    accurate_ratio: float
    n_frames: int
    f_lo: float | None = None
    adaptive: bool = False
    calibrated: bool | None = None     # None: no accuracy target; else whether the levels were calibrated
    estimated_f_rmse: float | None = None   # recalibrated verdict: k (this iteration's labels) * RMS(max_devi_f)
    selected_ratio: float | None = None     # recalibrated verdict: the accurate ratio at the select step's levels

    @classmethod
    def from_selection(cls, selection: SelectionReport, target: TargetLevels | None = None) -> "IterationOutcome":
        """From a select step's result (``selection.json``, and its ``target.json`` if any)."""
        return cls(accurate_ratio=selection.ratio("accurate"), n_frames=selection.n_frames,
                   f_lo=selection.levels.f_lo, adaptive=selection.levels.adaptive,
                   calibrated=None if target is None or target.explicit else target.calibrated)


@dataclass(frozen=True)
class ScheduleState:
    """Where the schedule is: stage index, iteration within the stage, outcomes of this stage."""

    stage: int = 0
    iteration: int = 0
    history: tuple[IterationOutcome, ...] = ()
    finished: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "iteration": self.iteration, "finished": self.finished,
                "history": [asdict(h) for h in self.history]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScheduleState":
        return cls(stage=int(data["stage"]), iteration=int(data["iteration"]), finished=bool(data["finished"]),
                   history=tuple(IterationOutcome(**h) for h in data.get("history", [])))


@dataclass(frozen=True)
class Decision:
    """The decision after one iteration, with its reason (stored in the run directory)."""

    stage: int
    iteration: int
    action: Action
    converged: bool
    reason: str
    accurate_ratio: float
    f_lo: float | None
    next_stage: int | None
    next_iteration: int | None
    loop_iteration: int | None = None       # the loop's iteration (set by :func:`decide`)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        loop = data.pop("loop_iteration")
        return data if loop is None else {"loop_iteration": loop, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Decision":
        data = dict(data)
        if data.get("accurate_ratio") is None:          # NaN is stored as null
            data["accurate_ratio"] = math.nan
        return cls(**data)


def _level_converged(stage: StageConfig, levels: list[float | None]) -> tuple[bool, str]:
    n = stage.level_n_checked
    recent = [v for v in levels[-n:] if v is not None]
    if len(recent) < n:
        return False, f"adaptive lower level: {len(recent)} of {n} iterations needed to judge its movement"
    top, low = max(recent), min(recent)
    spread = (top - low) / top if top > 0 else 0.0
    text = f"lower level over the last {n} iterations {[round(v, 4) for v in recent]} eV/Å moved " \
           f"{100 * spread:.1f}%"
    if spread <= stage.level_rtol:
        return True, f"{text} <= {100 * stage.level_rtol:g}% (stopped moving)"
    return False, f"{text} > {100 * stage.level_rtol:g}%"


def stage_converged(stage: StageConfig, history: Sequence[IterationOutcome]) -> tuple[bool, str]:
    """Whether the stage converged given its outcomes so far (last one = current), and why."""
    last = history[-1]
    if last.n_frames == 0 or math.isnan(last.accurate_ratio):
        return False, "no frames were recorded in this iteration"
    if last.calibrated is False:
        return False, (f"accurate ratio {last.accurate_ratio:.4f} at levels not yet calibrated against the "
                       "accuracy target (too few labeled frames): not judged")
    if last.adaptive:
        return _level_converged(stage, [h.f_lo for h in history if h.adaptive])
    ratio = last.accurate_ratio
    levels = " (levels calibrated to the accuracy target)" if last.calibrated else ""
    if last.estimated_f_rmse is not None:
        levels = (f" (levels recalibrated on this iteration's labels: estimated force RMSE of the explored frames "
                  f"{last.estimated_f_rmse:.3g} eV/Å; {last.selected_ratio:.4f} at the select step's levels)")
    if ratio >= stage.conv_accuracy:
        return True, f"accurate ratio {ratio:.4f} >= conv_accuracy {stage.conv_accuracy:g}{levels}"
    return False, f"accurate ratio {ratio:.4f} < conv_accuracy {stage.conv_accuracy:g}{levels}"


def judge(stages: Sequence[StageConfig], state: ScheduleState,
          outcome: IterationOutcome) -> tuple[Decision, ScheduleState]:
    """Judge the iteration ``state.iteration`` of stage ``state.stage`` that produced ``outcome``.

    Returns:
        the decision and the state for the next iteration (``finished`` when the exploration
        is over or must stop).
    """
    if state.finished:
        raise ValueError("the schedule is finished; no further iterations to judge")
    stage = stages[state.stage]
    history = (*state.history, outcome)
    converged, reason = stage_converged(stage, history)
    last_stage = state.stage == len(stages) - 1
    at_max = state.iteration + 1 >= stage.max_iter
    if converged:
        action: Action = "done" if last_stage else "next_stage"
    elif not at_max:
        action = "continue"
    elif stage.fatal_at_max:
        action = "stop"
        reason = f"{reason}; stage {state.stage} reached max_iter {stage.max_iter} unconverged and fatal_at_max " \
                 "is set: stopping"
    else:
        action = "done" if last_stage else "next_stage"
        reason = f"{reason}; stage {state.stage} reached max_iter {stage.max_iter} unconverged: moving on"
        log.warning("%s", reason)
    if action == "continue":
        new = replace(state, iteration=state.iteration + 1, history=history)
    elif action == "next_stage":
        new = ScheduleState(stage=state.stage + 1, iteration=0)
    else:
        new = replace(state, history=history, finished=True)
    decision = Decision(stage=state.stage, iteration=state.iteration, action=action, converged=converged,
                        reason=reason, accurate_ratio=outcome.accurate_ratio, f_lo=outcome.f_lo,
                        next_stage=None if new.finished else new.stage,
                        next_iteration=None if new.finished else new.iteration)
    return decision, new


def replay(stages: Sequence[StageConfig], outcomes: Sequence[IterationOutcome]) -> tuple[list[Decision], ScheduleState]:
    """Run :func:`judge` over a sequence of outcomes from the start (resume, tests)."""
    state = ScheduleState()
    decisions = []
    for outcome in outcomes:
        decision, state = judge(stages, state, outcome)
        decisions.append(decision)
        if state.finished:
            break
    return decisions, state


def _recalibrated(outcome: IterationOutcome, target: TargetConfig, selected: TargetLevels, calibration: Path,
                  iteration: int, workdir: Path) -> IterationOutcome:
    """``outcome`` judged at the levels this iteration's own labels give (unchanged when they give none)."""
    fresh = recalibrate(target, selected, CalibrationRecord.read(calibration).pairs, iteration)
    if fresh is None:
        return outcome
    fresh.write(workdir)
    log.info("iteration %d: verdict levels recalibrated on its own labels: f_lo %.4g eV/Å (select step: %.4g), "
             "estimated force RMSE %.3g eV/Å", iteration, fresh.f_lo, selected.f_lo, fresh.estimated_f_rmse)
    return replace(outcome, accurate_ratio=fresh.accurate_ratio(fresh.f_lo), f_lo=fresh.f_lo, calibrated=True,
                   estimated_f_rmse=fresh.estimated_f_rmse, selected_ratio=outcome.accurate_ratio)


SCHEDULE_JSON = "schedule.json"


@dataclass(frozen=True)
class ScheduleRecord:
    """The content of ``schedule.json``: the state for the next iteration and every decision so
    far (each with its loop iteration). :meth:`write` and :meth:`read` are its one writer and reader."""

    state: ScheduleState = ScheduleState()
    decisions: tuple[Decision, ...] = ()

    def write(self, folder: Path) -> Path:
        path = Path(folder) / SCHEDULE_JSON
        atomic_write_json(path, {"state": self.state.to_dict(), "decisions": [d.to_dict() for d in self.decisions]})
        return path

    @classmethod
    def read(cls, path: Path) -> "ScheduleRecord":
        """The record in ``path`` (a decide output folder or its ``schedule.json``).

        Raises:
            FileNotFoundError: no decision yet. ValueError: not a record written by :meth:`write`.
        """
        data = read_json_object(path, SCHEDULE_JSON)
        try:
            return cls(ScheduleState.from_dict(data["state"]),
                       tuple(Decision.from_dict(d) for d in data.get("decisions", [])))
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"not a schedule record ({type(err).__name__}: {err})") from None

    def latest(self, loop_iteration: int) -> Decision | None:
        """The decision taken in ``loop_iteration`` (else the last one, else None)."""
        mine = [d for d in self.decisions if d.loop_iteration == loop_iteration] or list(self.decisions[-1:])
        return mine[-1] if mine else None


def decide(stages: Sequence[StageConfig], schedule: Path | None, selection: Path, iteration: int,
           workdir: Path, target: TargetConfig | None = None, calibration: Path | None = None) -> bool:
    """The decide step: judge this iteration and write ``workdir/schedule.json``.

    Args:
        stages: the exploration stages (convergence criteria, max_iter).
        schedule: the previous ``schedule.json`` or its folder (None in the first iteration).
        selection: the select step's folder (or its ``selection.json``).
        iteration: the loop iteration, stored with the decision.
        workdir: where ``schedule.json`` goes.
        target: the run's accuracy target, if any; with ``calibration`` (the evaluate step's
            ``calibration.json`` or its folder, holding this iteration's pairs) the verdict is
            recalibrated on this iteration's labels and its levels written to ``workdir/target.json``.
    Returns:
        True when the exploration is over (last stage converged or finished its max_iter).
    Raises:
        StageNotConverged: a stage reached max_iter unconverged with ``fatal_at_max`` (after
            writing ``schedule.json``, so the decision and its reason are kept).
    """
    previous = None if schedule is None else Path(schedule)
    previous = previous / SCHEDULE_JSON if previous is not None and previous.is_dir() else previous
    record = ScheduleRecord.read(previous) if previous is not None and previous.is_file() else ScheduleRecord()
    folder = Path(selection) if Path(selection).is_dir() else Path(selection).parent
    selected = TargetLevels.read(folder)
    outcome = IterationOutcome.from_selection(SelectionReport.read(Path(selection)), selected)
    if target is not None and selected is not None and calibration is not None:
        outcome = _recalibrated(outcome, target, selected, calibration, iteration, Path(workdir))
    decision, state = judge(stages, record.state, outcome)
    decision = replace(decision, loop_iteration=iteration)
    ScheduleRecord(state, (*record.decisions, decision)).write(Path(workdir))
    log.info("iteration %d, stage %d: %s (%s)", iteration, decision.stage, decision.action, decision.reason)
    if decision.action == "stop":
        raise StageNotConverged(decision.reason)
    return state.finished
