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
An iteration with no recorded frames never converges.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, Sequence

from dpa3_al.explore.config import StageConfig
from dpa3_al.common.errors import UserError

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

    @classmethod
    def from_selection(cls, selection: dict[str, Any]) -> "IterationOutcome":
        """From the content of ``selection.json``."""
        levels = selection.get("levels", {})
        ratio = selection.get("ratios", {}).get("accurate")
        return cls(accurate_ratio=math.nan if ratio is None else float(ratio), n_frames=int(selection["n_frames"]),
                   f_lo=levels.get("f_lo"), adaptive=bool(levels.get("adaptive", False)))


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Decision":
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
    if last.adaptive:
        return _level_converged(stage, [h.f_lo for h in history if h.adaptive])
    ratio = last.accurate_ratio
    if ratio >= stage.conv_accuracy:
        return True, f"accurate ratio {ratio:.4f} >= conv_accuracy {stage.conv_accuracy:g}"
    return False, f"accurate ratio {ratio:.4f} < conv_accuracy {stage.conv_accuracy:g}"


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


SCHEDULE_JSON = "schedule.json"


def decide(config: dict[str, Any], schedule: Path | None, selection: Path, dataset: Path | None, iteration: int,
           workdir: Path) -> bool:
    """Workflow step (decide): judge this iteration and write ``workdir/schedule.json``.

    Args:
        config: the ``explore`` section (or a dict holding it under ``explore``): its stages.
        schedule: the previous ``schedule.json`` (None in the first iteration).
        selection: the select step's folder (or its ``selection.json``).
        dataset: the labeled dataset (not used by the decision).
        iteration: the loop iteration, stored with the decision.
        workdir: where ``schedule.json`` goes: ``{"state": ..., "decisions": [...]}``, each decision
            with its loop iteration.
    Returns:
        True when the exploration is over (last stage converged or finished its max_iter).
    Raises:
        StageNotConverged: a stage reached max_iter unconverged with ``fatal_at_max`` (after
            writing ``schedule.json``, so the decision and its reason are kept).
    """
    import json

    from dpa3_al.explore.config import ExploreConfig
    from dpa3_al.explore.tasks import atomic_write_json, section
    from dpa3_al.common.typed_config import from_dict

    data, _ = section(config, "explore")
    stages = from_dict(ExploreConfig, data, path="explore").stages
    record: dict[str, Any] = {"state": ScheduleState().to_dict(), "decisions": []}
    if schedule is not None and Path(schedule).is_file():
        record = json.loads(Path(schedule).read_text(encoding="utf-8"))
    sel_path = Path(selection)
    sel_path = sel_path / "selection.json" if sel_path.is_dir() else sel_path
    outcome = IterationOutcome.from_selection(json.loads(sel_path.read_text(encoding="utf-8")))
    decision, state = judge(stages, ScheduleState.from_dict(record["state"]), outcome)
    record = {"state": state.to_dict(), "decisions": [*record["decisions"], {"loop_iteration": iteration,
                                                                            **decision.to_dict()}]}
    atomic_write_json(Path(workdir) / SCHEDULE_JSON, record)
    log.info("iteration %d, stage %d: %s (%s)", iteration, decision.stage, decision.action, decision.reason)
    if decision.action == "stop":
        raise StageNotConverged(decision.reason)
    return state.finished
