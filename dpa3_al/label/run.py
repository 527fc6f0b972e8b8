"""``run_task``: label one workflow task folder (see :mod:`dpa3_al.label.tasks`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from . import LabeledFrame, make_labeler
from .files import atomic_write_json
from .config import LabelConfig
from .tasks import read_task

__all__ = ["run_task"]


def run_task(cfg: LabelConfig, task: Path, workdir: Path) -> None:
    """Label the frames of ``task`` into ``workdir/task-NNNNNN/`` and write ``workdir/summary.json``.

    Frames that fail are records (``status.json`` per frame), not errors: the step succeeds.
    A labeler that cannot run here (``LabelerUnavailable``) does raise. Rerunning the step in
    the same ``workdir`` reuses every finished frame.
    """
    frames, info = read_task(Path(task))
    results = make_labeler(cfg).label(frames, Path(workdir), first_index=int(info["first_index"]))
    reasons = Counter(r.reason for r in results if not isinstance(r, LabeledFrame))
    atomic_write_json(Path(workdir) / "summary.json", {
        "status": "ok", "iteration": info.get("iteration"), "frames": len(results),
        "labeled": len(results) - sum(reasons.values()), "failed": dict(reasons)})
