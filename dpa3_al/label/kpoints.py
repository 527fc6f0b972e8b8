"""Monkhorst-Pack grid sizes from a k-point spacing."""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms

__all__ = ["kpoint_grid"]


def kpoint_grid(atoms: Atoms, spacing: float) -> tuple[int, int, int]:
    """Grid size per reciprocal axis: ``max(1, ceil(2π |b_i| / spacing))``, 1 along non-periodic axes.

    ``spacing`` is in 1/Å with the 2π included, as VASP's KSPACING and ABACUS's kspacing
    (ASE's own ``kspacing`` for pw.x omits the 2π; this function does not).
    """
    recip = np.asarray(atoms.cell.reciprocal())  # rows b_i without 2π, 1/Å
    sizes = []
    for axis in range(3):
        length = float(np.linalg.norm(recip[axis]))
        if not atoms.pbc[axis] or length == 0.0:
            sizes.append(1)
        else:
            sizes.append(max(1, math.ceil(2 * math.pi * length / spacing - 1e-9)))
    return (sizes[0], sizes[1], sizes[2])
