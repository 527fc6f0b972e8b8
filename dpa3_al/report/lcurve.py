"""Learning curves of the committee members, read by their header names.

Units: RMSE as in lcurve.csv (energy eV/atom, force eV/Å, virial eV/atom).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LearningCurve", "read_lcurve", "QUANTITY_LABELS"]

SPLITS = {"trn": "train", "train": "train", "training": "train",
          "val": "validation", "valid": "validation", "validation": "validation", "tst": "validation",
          "test": "validation"}
QUANTITIES = {"e": "e", "energy": "e", "f": "f", "force": "f", "forces": "f", "v": "v", "virial": "v"}
QUANTITY_LABELS = {"e": "energy RMSE (eV/atom)", "f": "force RMSE (eV/Å)", "v": "virial RMSE (eV/atom)"}


@dataclass
class LearningCurve:
    """RMSE against step; ``series`` keys are ``"<e|f|v>/<train|validation>"``."""

    steps: np.ndarray
    series: dict[str, np.ndarray]

    def last(self, key: str) -> float:
        values = self.series.get(key)
        finite = values[np.isfinite(values)] if values is not None else np.zeros(0)
        return float(finite[-1]) if finite.size else math.nan


def read_lcurve(path: Path) -> LearningCurve:
    """Read a learning curve by its header: a first column ``step``, RMSE columns named with
    the quantity (e/f/v or energy/force/virial) and the split (trn/train or val/validation), in
    any order and spelling (``rmse_f_val``, ``f_rmse_train``...). CSV or whitespace-separated
    (deepmd-kit's ``lcurve.out``, header after ``#``); a truncated last row is ignored.

    Raises:
        ValueError: no header starting with ``step``.
    """
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise ValueError("empty file")
    split = (lambda s: next(csv.reader([s]))) if "," in lines[0] else str.split
    header = [h.strip().lower() for h in split(lines[0].lstrip("#"))]
    if not header or header[0] != "step":
        raise ValueError(f"header {header[:4]} does not start with step")
    columns: dict[str, int] = {}
    for i, name in enumerate(header):
        tokens = [t for t in re.split(r"[^a-z0-9]+", name) if t]
        quantity = next((QUANTITIES[t] for t in tokens if t in QUANTITIES), None)
        part = next((SPLITS[t] for t in tokens if t in SPLITS), None)
        if "rmse" in tokens and quantity and part:
            columns.setdefault(f"{quantity}/{part}", i)
    rows = []
    for line in lines[1:]:
        values = split(line)
        if line.lstrip().startswith("#") or len(values) != len(header):
            continue
        try:
            rows.append([float(v) for v in values])
        except ValueError:
            continue
    table = np.asarray(rows, dtype=np.float64).reshape(-1, len(header))
    return LearningCurve(steps=table[:, 0], series={k: table[:, i] for k, i in columns.items()})
