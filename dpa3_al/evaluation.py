"""What the committee gets right, measured each iteration (the evaluate step).

- **Test set** (``test_data:`` of the run config, labeled systems as ``init_data``): every member
  and the committee mean (the average of the members' predictions), as rows of
  ``report/learning_curve.csv``: energy RMSE per atom (eV/atom), force RMSE over components
  (eV/Å), the 99th percentile of the per-atom force error norm |F_pred - F_ref| (eV/Å), virial
  RMSE per atom (eV/atom; None when no test frame has a virial). Written as ``test.json``.
- **Calibration**: each frame labeled this iteration, with the ``max_devi_f`` it was selected
  with (``selection.json``'s record of the same candidate index) and the committee mean's true
  error on it (:class:`~dpa3_al.calibration.CalibrationPair`), appended to ``calibration.json``.
- **Final model** (after the last iteration): the member with the lowest validation force RMSE
  (``train_summary.json``), copied to ``model.pt``, the whole committee to ``committee/``,
  ``final.json`` saying which and why.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dpa3_al.calibration import CalibrationPair
from dpa3_al.common.fileio import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["TEST_JSON", "FINAL_JSON", "MEAN", "committee_errors", "error_row", "calibration_pairs", "count_frames",
           "write_test", "read_test", "FinalChoice", "pick_final"]

TEST_JSON = "test.json"
FINAL_JSON = "final.json"
MEAN = "mean"
COLUMNS = ("test_e_rmse", "test_f_rmse", "test_f_p99", "test_v_rmse")


def error_row(e: tuple[np.ndarray, np.ndarray], f: tuple[np.ndarray, np.ndarray],
              v: tuple[np.ndarray, np.ndarray] | None) -> dict[str, float | None]:
    """Errors of predictions vs references: ``e`` energy per atom (frames), ``f`` force components
    (atoms x 3, flattened), ``v`` virial per atom components or None."""
    de = np.asarray(e[1]) - np.asarray(e[0])
    df = (np.asarray(f[1]) - np.asarray(f[0])).reshape(-1, 3)
    row: dict[str, float | None] = {
        "test_e_rmse": float(np.sqrt(np.mean(de ** 2))) if de.size else None,
        "test_f_rmse": float(np.sqrt(np.mean(df ** 2))) if df.size else None,
        "test_f_p99": float(np.percentile(np.linalg.norm(df, axis=1), 99)) if df.size else None,
        "test_v_rmse": None}
    if v is not None and len(v[0]):
        dv = np.asarray(v[1]) - np.asarray(v[0])
        row["test_v_rmse"] = float(np.sqrt(np.mean(dv ** 2)))
    return row


def _pairs_of(model, systems) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from dpa3_al.model.train.evaluate import evaluate_systems

    out: dict[str, list] = {"e": [[], []], "f": [[], []], "v": [[], []]}
    for res in evaluate_systems(model, systems):
        for k, (ref, pred) in res.pairs.items():
            out[k][0].append(ref)
            out[k][1].append(pred)
    return {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in out.items() if v[0]}


def committee_errors(models: Sequence[Path], test_data: Sequence[Path]) -> list[dict[str, Any]]:
    """One row per member (``member`` = its index) and one for the committee mean (``"mean"``)."""
    from dpa3_al.model import load_model
    from dpa3_al.model.train.data import load_systems

    systems = load_systems([Path(p) for p in test_data])
    per_member = [_pairs_of(load_model(str(m)), systems) for m in models]
    rows = [{"member": str(i), **error_row(p["e"], p["f"], p.get("v"))} for i, p in enumerate(per_member)]
    if per_member:
        mean = {k: (per_member[0][k][0], np.mean([p[k][1] for p in per_member], axis=0)) for k in per_member[0]}
        rows.append({"member": MEAN, **error_row(mean["e"], mean["f"], mean.get("v"))})
    return rows


def count_frames(paths: Sequence[Path]) -> int:
    """Labeled frames in ``paths`` (deepmd npy folders searched recursively, extxyz files); a
    folder with no system yet counts 0."""
    from dpa3_al.model.train.data import load_systems

    usable = [Path(p) for p in paths if Path(p).is_file() or any(Path(p).rglob("type.raw"))]
    return sum(s.n_frames for s in load_systems(usable)) if usable else 0


def write_test(folder: Path, iteration: int | str, labels: int, rows: list[dict[str, Any]]) -> Path:
    path = Path(folder) / TEST_JSON
    data = {"iteration": iteration, "labels": labels, "units": {"e": "eV/atom", "f": "eV/Å", "v": "eV/atom"},
            "rows": rows}
    return atomic_write_text(path, json.dumps(data, indent=1))


def read_test(path: Path) -> dict[str, Any] | None:
    """``test.json`` of a folder (or the file); None when absent or unreadable."""
    path = Path(path)
    path = path / TEST_JSON if path.is_dir() else path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("rows"), list) else None


def _labeled_frames(labeled: Sequence[Path]) -> list[tuple[int, Any]]:
    """(candidate index, LabeledFrame) of every finished label below ``labeled``."""
    from dpa3_al.label.results import LabeledFrame
    from dpa3_al.label.taskdir import load_result

    found = {}
    for folder in labeled:
        for task_dir in sorted(Path(folder).rglob("task-*")):
            if not (task_dir.is_dir() and task_dir.name[5:].isdigit()):
                continue
            result = load_result(task_dir)
            if isinstance(result, LabeledFrame):
                found[int(task_dir.name[5:])] = result
    return sorted(found.items())


def calibration_pairs(models: Sequence[Path], selected: Sequence[dict[str, Any]], labeled: Sequence[Path],
                      iteration: int, odds: Callable[[dict[str, Any]], float] | None = None) -> list[CalibrationPair]:
    """The committee mean's true error on each frame labeled this iteration, beside the
    ``max_devi_f`` the frame was selected with (``selected``: selection.json's records, in
    candidate order, which is the label tasks' index) and the odds it had to be selected
    (``odds(record)``: :meth:`~dpa3_al.select.SelectionReport.selection_odds`; 1 without)."""

    from dpa3_al.model import CommitteeCalculator

    frames = [(i, lab) for i, lab in _labeled_frames(labeled) if i < len(selected)]
    if not frames or not models:
        return []
    committee = CommitteeCalculator([str(m) for m in models])
    pairs = []
    for index, lab in frames:
        res = committee.evaluate_all(lab.atoms)
        diff = res["forces_comm"].mean(axis=0) - lab.forces
        devi = selected[index].get("max_devi_f")
        pairs.append(CalibrationPair(
            iteration=iteration, frame=str(selected[index].get("frame", index)),
            max_devi_f=math.nan if devi is None else float(devi),
            true_f_rmse=float(np.sqrt(np.mean(diff ** 2))), true_f_max=float(np.linalg.norm(diff, axis=1).max()),
            weight=1.0 if odds is None else odds(selected[index])))
    return pairs


def _validation_f(member_dir: Path) -> float:
    try:
        errors = json.loads((member_dir / "train_summary.json").read_text())["errors"]
    except (OSError, ValueError, KeyError, TypeError):
        return math.nan
    for split in ("validation", "train"):
        value = (errors.get(split) or {}).get("f")
        if value is not None and math.isfinite(value):
            return float(value)
    return math.nan


@dataclass(frozen=True)
class FinalChoice:
    """``final/final.json``: the run's final model and why it was chosen (paths relative to ``final/``)."""

    model: str                     # "model.pt"
    member: int                    # the committee member copied to model.pt
    reason: str
    committee: list[str] = field(default_factory=list)               # "committee/member-NNN.pt", ...
    validation_f_rmse: dict[str, float | None] = field(default_factory=dict)   # member -> eV/Å (None: unknown)

    def write(self, folder: Path) -> Path:
        return atomic_write_text(Path(folder) / FINAL_JSON, json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, folder: Path) -> "FinalChoice | None":
        """The choice in ``folder/final.json``; None when absent or unreadable (a run still going)."""
        try:
            data = json.loads((Path(folder) / FINAL_JSON).read_text(encoding="utf-8"))
            return cls(model=str(data["model"]), member=int(data["member"]), reason=str(data["reason"]),
                       committee=list(data.get("committee") or []),
                       validation_f_rmse=dict(data.get("validation_f_rmse") or {}))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def pick_final(member_dirs: Sequence[Path], workdir: Path) -> dict[str, Any]:
    """Copy the committee to ``workdir/committee/member-NNN.pt`` and its best member (lowest
    validation force RMSE, else training RMSE, else member 0) to ``workdir/model.pt``; write
    ``final.json``. Returns its content."""
    workdir = Path(workdir)
    (workdir / "committee").mkdir(parents=True, exist_ok=True)
    errors = {}
    for k, member in enumerate(member_dirs):
        shutil.copy2(Path(member) / "model.pt", workdir / "committee" / f"member-{k:03d}.pt")
        errors[k] = _validation_f(Path(member))
    finite = {k: v for k, v in errors.items() if math.isfinite(v)}
    best = min(finite, key=finite.get) if finite else 0
    shutil.copy2(workdir / "committee" / f"member-{best:03d}.pt", workdir / "model.pt")
    why = (f"lowest validation force RMSE {finite[best]:.4g} eV/Å of {len(errors)} members" if finite
           else "no member reported a validation error: member 0")
    choice = FinalChoice("model.pt", best, why, sorted(f"committee/{p.name}" for p in (workdir / "committee").glob("*.pt")),
                         {str(k): (v if math.isfinite(v) else None) for k, v in errors.items()})
    choice.write(workdir)
    return asdict(choice)
