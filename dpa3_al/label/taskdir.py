"""One frame's work directory: ``task-NNNNNN/`` with its inputs, outputs and status.

Layout::

    task-000005/
      input.extxyz      the frame as given (written first)
      ...               the labeler's own inputs and outputs (pw.x, OUTCAR, worker.log, ...)
      attempt-1/        files of an earlier attempt, when a retry happened
      result.extxyz     the labeled frame (ok only), written atomically
      status.json       {"status": "ok" | "failed", "reason", "detail", ...}, written last

``status.json`` is the commit marker: a task without it was interrupted and is redone;
a task with it is finished and is reused by a later run over the same frames and settings.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from dpa3_al.common.fileio import known_fields

from .files import atomic_write_json, atomic_write_with, frame_fingerprint, read_json
from .results import LabeledFrame, LabelFailure, LabelMeta, LabelResult, attach_results

log = logging.getLogger(__name__)

__all__ = ["task_dir_name", "prepare_task", "write_result", "read_finished", "archive_attempt", "load_result",
           "LabelStatus"]

STATUS = "status.json"
RESULT = "result.extxyz"
INPUT = "input.extxyz"


@dataclass(frozen=True)
class LabelStatus:
    """The content of a frame's ``status.json`` (its one writer and reader are here).

    ``status``: ``ok`` or ``failed`` (then ``reason``/``detail``); ``fingerprint`` names the
    frame and ``settings_hash`` the settings it was labeled with; ``wall_time`` s.
    """

    status: str
    reason: str | None = None
    detail: str | None = None
    fingerprint: str | None = None
    time: str | None = None
    labeler: str | None = None
    settings_hash: str | None = None
    wall_time: float | None = None
    attempts: int | None = None

    def write(self, task_dir: Path) -> None:
        """Atomic, sorted keys; a ``reason``/``detail`` only for failures."""
        data = asdict(self)
        if self.status == "ok":
            data.pop("reason")
            data.pop("detail")
        atomic_write_json(Path(task_dir) / STATUS, data)

    @classmethod
    def read(cls, task_dir: Path) -> "LabelStatus":
        """Raises FileNotFoundError (not finished) or ValueError (not a status object)."""
        data = known_fields(cls, read_json(Path(task_dir) / STATUS))
        try:
            return cls(**data)
        except TypeError as err:
            raise ValueError(f"not a label status ({err})") from None


def task_dir_name(index: int) -> str:
    return f"task-{index:06d}"


def prepare_task(task_dir: Path, atoms: Atoms) -> None:
    """Create the task directory and record the input frame.

    Files left by an interrupted or outdated run are moved to ``stale-N/`` first, so that no
    old output can be mistaken for the new one.
    """
    import ase.io

    task_dir.mkdir(parents=True, exist_ok=True)
    leftovers = [p for p in task_dir.iterdir() if p.name != INPUT and not p.name.startswith(("attempt-", "stale-"))]
    if leftovers:
        number = 1 + sum(1 for p in task_dir.iterdir() if p.name.startswith("stale-"))
        _move_into(leftovers, task_dir / f"stale-{number}")
    atomic_write_with(task_dir / INPUT, lambda tmp: ase.io.write(tmp, _plain(atoms), format="extxyz"))


def archive_attempt(task_dir: Path, attempt: int) -> None:
    """Move the files of a failed attempt into ``attempt-N/`` before a retry."""
    files = [p for p in task_dir.iterdir()
             if p.name not in (INPUT, STATUS) and not p.name.startswith(("attempt-", "stale-"))]
    _move_into(files, task_dir / f"attempt-{attempt}")


def _move_into(paths: list[Path], dest: Path) -> None:
    dest.mkdir(exist_ok=True)
    for path in paths:
        shutil.move(str(path), dest / path.name)


def write_result(task_dir: Path, result: LabelResult, fingerprint: str) -> None:
    """Persist ``result`` atomically: the labeled frame first, then ``status.json``."""
    import ase.io

    meta = result.meta
    common = dict(fingerprint=fingerprint, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  labeler=meta.labeler if meta else None, settings_hash=meta.settings_hash if meta else None,
                  wall_time=meta.wall_time if meta else None, attempts=meta.attempts if meta else None)
    if isinstance(result, LabeledFrame):
        out = _plain(result.atoms)
        out.calc = SinglePointCalculator(out, **result.atoms.calc.results)
        atomic_write_with(task_dir / RESULT, lambda tmp: ase.io.write(tmp, out, format="extxyz"))
        status = LabelStatus("ok", **common)
    else:
        status = LabelStatus("failed", reason=result.reason, detail=result.detail, **common)
    status.write(task_dir)


def read_finished(task_dir: Path, atoms: Atoms, settings_hash: str | None, *,
                  verify: bool = True) -> LabelResult | None:
    """The stored result of a finished task for this frame and settings, else None.

    With ``verify``, a task written for another frame or other settings is stale: it is
    ignored (its files are moved aside when the frame is labeled again), with a warning.
    """
    import ase.io

    try:
        status = LabelStatus.read(task_dir)
    except (OSError, ValueError):
        return None
    stale = status.fingerprint != frame_fingerprint(atoms) or status.settings_hash != settings_hash
    if verify and stale:
        log.warning("%s holds a result for another frame or other settings; labeling again", task_dir)
        return None
    meta = LabelMeta(labeler=status.labeler, settings_hash=status.settings_hash,
                     wall_time=float(status.wall_time or 0.0), attempts=int(status.attempts or 1), task_dir=task_dir)
    if status.status == "ok":
        try:
            stored = ase.io.read(task_dir / RESULT, format="extxyz")
        except Exception:  # noqa: BLE001 - an unreadable result is redone, never trusted
            return None
        res = stored.calc.results
        return LabeledFrame(attach_results(atoms, res["energy"], res["forces"], res.get("stress")), meta)
    return LabelFailure(status.reason or "crash", status.detail or "", task_dir, atoms, meta)


def _plain(atoms: Atoms) -> Atoms:
    """A copy without calculator, with JSON-friendly info only (extxyz can't hold everything)."""
    out = atoms.copy()
    out.calc = None
    out.info = {k: v for k, v in atoms.info.items() if isinstance(v, (str, int, float, bool))}
    return out


def load_result(task_dir: Path) -> LabelResult | None:
    """The finished result stored in ``task_dir`` (input frame + status + labels), else None."""
    import ase.io

    if not (task_dir / STATUS).is_file() or not (task_dir / INPUT).is_file():
        return None
    atoms = ase.io.read(task_dir / INPUT, format="extxyz")
    atoms.calc = None
    return read_finished(task_dir, atoms, None, verify=False)
