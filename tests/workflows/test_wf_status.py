"""What `dpa3-al status` and `list` say about a run directory (issue 20, defects 3 and 7).

Run directories are written by hand through each file's own writer (RunState, SelectionReport,
the label and MD task status records), so every case is exact and fast.
"""

from __future__ import annotations

from pathlib import Path

from dpa3_al.cli import main
from dpa3_al.explore.status import TaskStatus
from dpa3_al.label.taskdir import LabelStatus
from dpa3_al.select import Levels, SelectionReport
from dpa3_al.workflows.keys import step_key
from dpa3_al.workflows.state import RunState, StepState


def _run(tmp_path: Path, name: str = "water", status: str = "succeeded", steps=()) -> Path:
    root = tmp_path / "runs" / name
    root.mkdir(parents=True)
    state = RunState(name=name, engine="local", workflow_id=name, status=status, iteration=0, stage="decide",
                     attempt=1, steps={s.key: s for s in steps})
    state.write(root / "state.json")
    return root


def _selection(root: Path, counts: dict[str, int]) -> None:
    report = SelectionReport(levels=Levels(0.1, 0.3, None, None), per_group={}, tasks={},
                             counts={"accurate": 0, "candidate": 0, "failed": 0, "failed_nan": 0, **counts})
    report.write(root / "iter-000000" / "select")


def _status(capsys, root: Path) -> tuple[int, list[str]]:
    code = main(["status", str(root)])
    return code, capsys.readouterr().out.splitlines()


def test_an_iteration_that_recorded_no_frames(tmp_path, capsys):
    """Was: a TypeError (an iteration whose exploration recorded no frames)."""
    root = _run(tmp_path)
    _selection(root, {})
    code, lines = _status(capsys, root)
    assert code == 0
    assert "  iteration 0 exploration: 0 frames; no frames recorded; trust levels f_lo 0.1 f_hi 0.3 eV/Å; " \
           "selected 0" in lines


def test_dataset_commits_without_frames_or_unreadable_are_skipped(tmp_path, capsys):
    root = _run(tmp_path)
    index = _mkdir(root / "iter-000000" / "dataset" / "index")
    (root / "dataset").symlink_to(Path("iter-000000") / "dataset")
    (index / "add-000001.json").write_text('{"frames": [{"row": 0}, {"row": 1}], "failures": []}')
    (index / "add-000002.json").write_text('{"frames": null, "failures": [{"reason": "timeout"}]}')
    (index / "add-000003.json").write_text('[1, 2')
    (index / "add-000004.json").write_text('[]')
    code, lines = _status(capsys, root)
    assert code == 0 and f"  dataset: 2 labeled frames ({root / 'dataset'})" in lines


def test_label_failures_and_early_stops_make_succeeded_with_failures(tmp_path, capsys):
    """Was: 'succeeded' for a run where 6 of 8 labels failed; they were only in the report."""
    group = StepState(key=step_key(0, "run-label", 1), name="run-label", phase="Succeeded", iteration=0, index=1,
                      tasks_ok=1, tasks_total=2)
    root = _run(tmp_path, steps=[group])
    _selection(root, {"accurate": 10, "candidate": 8})
    label = root / "iter-000000" / "label"
    for k in range(8):
        ok = k < 2
        LabelStatus("ok" if ok else "failed", reason=None if ok else ("scf_not_converged" if k < 6 else "timeout"),
                    detail=None if ok else "x").write(_mkdir(label / "task-000001" / f"task-{k:06d}"))
    explore = root / "iter-000000" / "explore"
    TaskStatus(name="task-000000", status="finished").write(_mkdir(explore / "task-000000"))
    TaskStatus(name="task-000001", status="stopped_early", reason="max_devi_f").write(_mkdir(explore / "task-000001"))

    code, lines = _status(capsys, root)
    assert code == 0
    assert lines[0] == "run water (local): succeeded with failures; iteration 0, step decide"
    assert ("  iteration 0: 6 of 8 labels failed (scf_not_converged 4, timeout 2); 1 of 2 MD tasks stopped "
            "early (max_devi_f 1); run-label: 1 of 2 tasks failed (tolerated)") in lines

    assert main(["list", "--runs", str(tmp_path / "runs")]) == 0
    assert "succeeded with failures" in capsys.readouterr().out


def test_a_clean_run_is_plainly_succeeded(tmp_path, capsys):
    root = _run(tmp_path)
    _selection(root, {"accurate": 10})
    LabelStatus("ok").write(_mkdir(root / "iter-000000" / "label" / "task-000000"))
    code, lines = _status(capsys, root)
    assert code == 0 and lines[0] == "run water (local): succeeded; iteration 0, step decide"
    assert not [line for line in lines if "failed" in line and "failed 0.00" not in line]


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
