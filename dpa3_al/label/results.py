"""What a labeler returns per frame: a :class:`LabeledFrame` or a :class:`LabelFailure`.

Units: energy eV, forces eV/Å, stress eV/Å^3 (ASE sign), virial eV (3x3, = -stress * volume).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from dpa3_al.common.errors import UserError

__all__ = [
    "FailureReason", "FAILURE_REASONS", "RETRYABLE", "LabelMeta", "LabeledFrame", "LabelFailure",
    "LabelResult", "LabelError", "LabelerUnavailable", "attach_results", "stress_matrix",
]

FailureReason = Literal["timeout", "scf_not_converged", "crash", "missing_output", "invalid_result", "unsupported"]
FAILURE_REASONS: tuple[str, ...] = ("timeout", "scf_not_converged", "crash", "missing_output",
                                    "invalid_result", "unsupported")
RETRYABLE = frozenset({"timeout", "crash", "missing_output"})
"""Reasons worth another attempt; an unconverged SCF or an unsupported frame repeats identically."""


class LabelerUnavailable(UserError):
    """The labeler cannot run here (missing program, pseudopotential, unsupported element).

    Raised by ``Labeler.check`` before any expensive work; the message says what to install or set.
    """


class LabelError(Exception):
    """One frame could not be labeled; becomes a :class:`LabelFailure` with this reason."""

    def __init__(self, reason: str, detail: str):
        if reason not in FAILURE_REASONS:
            raise ValueError(f"unknown failure reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class LabelMeta:
    """Who labeled a frame and how long it took."""

    labeler: str
    settings_hash: str
    wall_time: float = 0.0
    attempts: int = 1
    task_dir: Path | None = None


@dataclass
class LabeledFrame:
    """A frame with reference energy, forces and (periodic, when available) stress.

    ``atoms`` keeps the input frame's ``info`` (exploration provenance) and carries the
    results in a :class:`~ase.calculators.singlepoint.SinglePointCalculator`.
    """

    atoms: Atoms
    meta: LabelMeta

    @property
    def energy(self) -> float:
        """Total energy (eV); the free energy where the code distinguishes them."""
        return float(self.atoms.calc.results["energy"])

    @property
    def forces(self) -> np.ndarray:
        """(N, 3) eV/Å."""
        return np.asarray(self.atoms.calc.results["forces"], dtype=np.float64)

    @property
    def stress(self) -> np.ndarray | None:
        """(3, 3) eV/Å^3 (ASE sign: positive = tensile), or None."""
        stress = self.atoms.calc.results.get("stress")
        if stress is None or not self.atoms.pbc.all():
            return None
        return stress_matrix(stress)

    @property
    def virial(self) -> np.ndarray | None:
        """(3, 3) eV, = -stress * volume, or None for non-periodic frames / no stress."""
        stress = self.stress
        return None if stress is None else -stress * self.atoms.get_volume()


@dataclass
class LabelFailure:
    """A frame that was not labeled, with the reason and where to look."""

    reason: FailureReason
    detail: str
    workdir: Path
    atoms: Atoms | None = None
    meta: LabelMeta | None = field(default=None)


LabelResult = Union[LabeledFrame, LabelFailure]


def stress_matrix(stress: np.ndarray) -> np.ndarray:
    """(3, 3) stress from ASE's Voigt order (xx, yy, zz, yz, xz, xy) or a 3x3/9 array."""
    s = np.asarray(stress, dtype=np.float64)
    if s.shape == (6,):
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return s.reshape(3, 3)


def attach_results(atoms: Atoms, energy: float, forces: np.ndarray, stress: np.ndarray | None = None,
                   **extra: float) -> Atoms:
    """A copy of ``atoms`` (info kept) holding energy (eV), forces (eV/Å) and stress (eV/Å^3)."""
    out = atoms.copy()
    results = {"energy": float(energy), "forces": np.asarray(forces, dtype=np.float64).reshape(len(atoms), 3)}
    if stress is not None and atoms.pbc.all():
        stress = np.asarray(stress, dtype=np.float64)
        results["stress"] = stress if stress.shape == (6,) else _matrix_to_voigt(stress.reshape(3, 3))
    results.update({k: float(v) for k, v in extra.items()})
    out.calc = SinglePointCalculator(out, **results)
    return out


def _matrix_to_voigt(m: np.ndarray) -> np.ndarray:
    return np.array([m[0, 0], m[1, 1], m[2, 2], (m[1, 2] + m[2, 1]) / 2, (m[0, 2] + m[2, 0]) / 2,
                     (m[0, 1] + m[1, 0]) / 2])
