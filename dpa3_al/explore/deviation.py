"""Committee deviation of MD frames, ``model_devi.csv`` and deepmd-kit's ``model_devi.out``.

The formulas live in :func:`dpa3_al.model.model_deviation` (deepmd-kit's definitions: force
deviations in eV/Å, energy and virial deviations in eV/atom); this module only asks the
committee for them and stores them, one row per recorded frame, twice:

- ``model_devi.csv`` (ours, full precision), columns ``step,max_devi_v,...,devi_e``;
- ``model_devi.out`` beside it, in deepmd-kit's format, for dpgen2 users' scripts: the header
  ``#       step         max_devi_v ... devi_e`` and fixed-width columns (step ``%12d``, each
  value ``%19.6e``) as ``dp model-devi`` and deepmd-kit's LAMMPS ``pair_style deepmd`` write it.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from dpa3_al.model.ensemble import DEVI_KEYS
from dpa3_al.model.interop.deepmd_formats import format_model_devi_rows, model_devi_header

DEVI_COLUMNS = ("step", *DEVI_KEYS)
OUT_FILE = "model_devi.out"
OUT_HEADER = model_devi_header(devi_e=True)   # dp model-devi's eight columns (LAMMPS writes seven)
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


def out_row(step: int, devi: dict[str, float]) -> str:
    """One ``model_devi.out`` line (deepmd-kit's widths: ``%12d`` then ``%19.6e`` per value)."""
    return format_model_devi_rows([step], [devi], devi_e=True).rstrip("\n")


class DeviCsvWriter:
    """Append rows to ``model_devi.csv`` and the same rows to ``model_devi.out`` beside it, both
    flushed after each row (a killed task leaves whole rows). A new (or emptied) CSV starts a new
    ``model_devi.out`` too, so the two files always hold the same frames."""

    def __init__(self, path: Path, deepmd_out: bool = True):
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self._fh = open(path, "a", newline="")
        # an engine whose MD code writes model_devi.out itself (LAMMPS) passes deepmd_out=False
        self._out = open(path.with_name(OUT_FILE), "w" if new else "a") if deepmd_out else None
        if new:
            self._fh.write(",".join(DEVI_COLUMNS) + "\n")
            self._fh.flush()
            self._write_out(OUT_HEADER)

    def _write_out(self, line: str) -> None:
        if self._out is not None:
            self._out.write(line + "\n")
            self._out.flush()

    def write(self, step: int, devi: dict[str, float]) -> None:
        row = [str(int(step))] + [repr(float(devi[k])) for k in DEVI_KEYS]
        self._fh.write(",".join(row) + "\n")
        self._fh.flush()
        self._write_out(out_row(step, devi))

    def close(self) -> None:
        self._fh.close()
        if self._out is not None:
            self._out.close()


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
