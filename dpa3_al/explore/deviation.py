"""Committee deviation of MD frames and the ``model_devi.csv`` file.

The formulas live in :func:`dpa3_al.model.model_deviation` (deepmd-kit's definitions: force
deviations in eV/Å, energy and virial deviations in eV/atom); this module only asks the
committee for them and stores them, one CSV row per recorded frame, in deepmd-kit's
``model_devi.out`` column order.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from dpa3_al.model.ensemble import DEVI_KEYS

DEVI_COLUMNS = ("step", *DEVI_KEYS)
NAN_DEVI = {k: float("nan") for k in DEVI_KEYS}


def committee_mode(calc: Any) -> str:
    """How deviations are obtained from ``calc``.

    Returns:
        ``"mean"``: every calculate() evaluates all models and leaves the deviations in
        ``calc.results`` (drive="mean"); ``"drive"``: one model drives, ``calc.evaluate_all``
        gives the committee on demand; ``"none"``: a plain calculator (deviations are NaN).
    """
    if getattr(calc, "drive", None) == "mean":
        return "mean"
    if callable(getattr(calc, "evaluate_all", None)):
        return "drive"
    return "none"


def frame_deviation(calc: Any, atoms: Atoms, mode: str) -> dict[str, float]:
    """The seven deviation values of the current frame (see :data:`DEVI_KEYS`)."""
    if mode == "mean":
        atoms.get_forces()  # cached for the current positions; computes all models otherwise
        results = calc.results
    elif mode == "drive":
        results = calc.evaluate_all(atoms)
    else:
        return dict(NAN_DEVI)
    return {k: float(results.get(k, math.nan)) for k in DEVI_KEYS}


class DeviCsvWriter:
    """Append rows to ``model_devi.csv``, flushed after each row (a killed task leaves whole rows)."""

    def __init__(self, path: Path):
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self._fh = open(path, "a", newline="")
        if new:
            self._fh.write(",".join(DEVI_COLUMNS) + "\n")
            self._fh.flush()

    def write(self, step: int, devi: dict[str, float]) -> None:
        row = [str(int(step))] + [repr(float(devi[k])) for k in DEVI_KEYS]
        self._fh.write(",".join(row) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_model_devi(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``model_devi.csv``.

    Returns:
        (steps (n,) int64, devi (n, 7) float64 in :data:`DEVI_KEYS` order). A truncated last
        line (a killed task) is ignored; NaN values are kept.
    """
    steps, rows = [], []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return np.zeros(0, dtype=np.int64), np.zeros((0, len(DEVI_KEYS)))
        if tuple(header) != DEVI_COLUMNS:
            raise ValueError(f"{path}: columns {header} are not {list(DEVI_COLUMNS)}")
        for row in reader:
            if len(row) != len(DEVI_COLUMNS):
                break
            try:
                values = [float(x) for x in row[1:]]
                step = int(row[0])
            except ValueError:
                break
            steps.append(step)
            rows.append(values)
    return np.asarray(steps, dtype=np.int64), np.asarray(rows, dtype=np.float64).reshape(-1, len(DEVI_KEYS))
