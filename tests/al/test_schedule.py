"""Stage convergence decisions on scripted accurate ratios and lower-level histories."""

from __future__ import annotations

import json

import pytest

from dpa3_al.explore.config import StageConfig
from dpa3_al.schedule import (Decision, IterationOutcome, ScheduleRecord, ScheduleState, StageNotConverged, judge,
                              replay, stage_converged)
from dpa3_al.select import Levels, SelectionReport
from dpa3_al.steps import decide
from dpa3_al.common.typed_config import from_dict

GROUP = {"configurations": [{"lattice": {"symbols": "Cu"}}]}


def stages(*specs: dict) -> list[StageConfig]:
    return [from_dict(StageConfig, {"task_groups": [GROUP], **s}) for s in specs]


def ratios(*values: float) -> list[IterationOutcome]:
    return [IterationOutcome(accurate_ratio=v, n_frames=100) for v in values]


def test_converges_on_accurate_ratio_then_moves_to_next_stage():
    plan = stages({"conv_accuracy": 0.9, "max_iter": 5}, {"conv_accuracy": 0.8, "max_iter": 5})
    decisions, state = replay(plan, ratios(0.5, 0.85, 0.9, 0.6, 0.81))
    assert [d.action for d in decisions] == ["continue", "continue", "next_stage", "continue", "done"]
    assert [(d.stage, d.iteration) for d in decisions] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert decisions[2].converged and "0.9000 >= conv_accuracy 0.9" in decisions[2].reason
    assert (decisions[2].next_stage, decisions[2].next_iteration) == (1, 0)
    assert not decisions[0].converged and "< conv_accuracy" in decisions[0].reason
    assert state.finished and decisions[-1].next_stage is None


def test_max_iter_moves_on_with_a_warning_or_stops_when_fatal(caplog):
    plan = stages({"max_iter": 2}, {"max_iter": 1})
    decisions, state = replay(plan, ratios(0.1, 0.2, 0.3))
    assert [d.action for d in decisions] == ["continue", "next_stage", "done"]
    assert not decisions[1].converged and "reached max_iter 2 unconverged: moving on" in decisions[1].reason
    assert "moving on" in caplog.text
    assert state.finished
    fatal = stages({"max_iter": 2, "fatal_at_max": True}, {})
    decisions, state = replay(fatal, ratios(0.1, 0.2, 0.95))
    assert [d.action for d in decisions] == ["continue", "stop"]  # the third outcome is never judged
    assert "fatal_at_max" in decisions[-1].reason and state.finished
    assert issubclass(StageNotConverged, Exception)


def test_adaptive_mode_converges_when_the_lower_level_stops_moving():
    plan = stages({"max_iter": 10, "level_n_checked": 3, "level_rtol": 0.05})
    levels = [0.30, 0.20, 0.15, 0.12, 0.118, 0.117]
    outcomes = [IterationOutcome(accurate_ratio=0.5, n_frames=50, f_lo=v, adaptive=True) for v in levels]
    decisions, state = replay(plan, outcomes)
    assert [d.action for d in decisions] == ["continue"] * 5 + ["done"]
    assert "1 of 3 iterations" in decisions[0].reason
    assert "stopped moving" in decisions[-1].reason and decisions[-1].f_lo == 0.117
    # an accurate ratio of 1.0 does not end an adaptive stage whose level still moves
    moving = [IterationOutcome(1.0, 50, f_lo=v, adaptive=True) for v in (0.3, 0.2, 0.1)]
    assert not stage_converged(plan[0], moving)[0]


def test_iteration_without_frames_never_converges():
    plan = stages({"max_iter": 3, "conv_accuracy": 0.5})
    decision, _ = judge(plan, ScheduleState(), IterationOutcome(accurate_ratio=float("nan"), n_frames=0))
    assert decision.action == "continue" and "no frames" in decision.reason


def test_records_serialize_and_resume():
    plan = stages({"max_iter": 4}, {"max_iter": 4})
    decisions, state = replay(plan, ratios(0.2, 0.95, 0.3))
    assert (state.stage, state.iteration) == (1, 1)
    stored = json.loads(json.dumps({"state": state.to_dict(), "decisions": [d.to_dict() for d in decisions]}))
    resumed = ScheduleState.from_dict(stored["state"])
    assert resumed == state
    assert [Decision.from_dict(d) for d in stored["decisions"]] == decisions
    decision, after = judge(plan, resumed, ratios(0.99)[0])
    assert decision.action == "done" and after.finished
    with pytest.raises(ValueError):
        judge(plan, after, ratios(0.5)[0])


def _selection(accurate: int, candidate: int, failed: int, f_lo: float = 0.05, adaptive: bool = False):
    return SelectionReport(levels=Levels(f_lo, 0.15, adaptive=adaptive), per_group={}, tasks={},
                           counts={"accurate": accurate, "candidate": candidate, "failed": failed, "failed_nan": 0})


def test_outcome_from_selection_json_read_back(tmp_path):
    _selection(30, 8, 2, f_lo=0.07, adaptive=True).write(tmp_path)
    assert IterationOutcome.from_selection(SelectionReport.read(tmp_path)) == IterationOutcome(0.75, 40, 0.07, True)
    _selection(0, 0, 0).write(tmp_path)
    empty = IterationOutcome.from_selection(SelectionReport.read(tmp_path / "selection.json"))
    assert empty.n_frames == 0 and empty.accurate_ratio != empty.accurate_ratio  # NaN (stored as null)


def _write_selection(path, accurate: float, n: int = 100):
    path.mkdir(parents=True, exist_ok=True)
    _selection(round(accurate * n), n - round(accurate * n), 0).write(path)
    return path


def test_decide_step_reads_selection_and_chains_schedule_files(tmp_path):
    explore = {"stages": [{"task_groups": [GROUP], "max_iter": 2}, {"task_groups": [GROUP], "max_iter": 3,
                                                                    "fatal_at_max": True}]}
    config = {"explore": explore, "base_dir": str(tmp_path)}
    previous = None
    done = []
    for it, acc in enumerate([0.3, 0.95, 0.2, 0.4]):
        wd = tmp_path / f"decide-{it}"
        done.append(decide(config, previous, _write_selection(tmp_path / f"sel-{it}", acc), None, it, wd))
        previous = wd / "schedule.json"
    assert done == [False, False, False, False]
    record = json.loads(previous.read_text())
    assert [d["action"] for d in record["decisions"]] == ["continue", "next_stage", "continue", "continue"]
    assert [d["loop_iteration"] for d in record["decisions"]] == [0, 1, 2, 3]
    assert record["state"]["stage"] == 1 and record["state"]["iteration"] == 2
    typed = ScheduleRecord.read(previous.parent)           # the one reader: the same record, typed
    assert typed.state == ScheduleState(stage=1, iteration=2, history=typed.state.history)
    assert typed.latest(1).action == "next_stage" and typed.latest(3).loop_iteration == 3
    # the third iteration of stage 1 is its max_iter and the stage is fatal: stop, recorded first
    with pytest.raises(StageNotConverged, match="fatal_at_max"):
        decide(explore, previous, _write_selection(tmp_path / "sel-4", 0.5) / "selection.json", None, 4,
               tmp_path / "decide-4")
    last = json.loads((tmp_path / "decide-4" / "schedule.json").read_text())
    assert last["decisions"][-1]["action"] == "stop" and last["state"]["finished"]
