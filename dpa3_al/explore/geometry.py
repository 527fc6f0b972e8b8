"""Geometry checks shared by MD early stop and selection filters (Å, degrees).

Neighbour search uses vesin (O(N), periodic, triclinic and mixed boundary conditions).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import covalent_radii


def _pairs(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list (i, j, distance) within ``cutoff`` Å."""
    import vesin

    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = atoms.cell.array if pbc.any() else np.zeros((3, 3))
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, d = nl.compute(atoms.positions, cell, pbc.tolist() if pbc.any() else False, "ijd")
    return i.astype(np.int64), j.astype(np.int64), d


def min_distance_ratio(atoms: Atoms, threshold: float) -> tuple[float, tuple[int, int] | None]:
    """The smallest r_ij / (R_i + R_j) (covalent radii R) if it is below ``threshold``.

    Returns:
        (ratio, (i, j)) of the closest pair relative to their radii, or (inf, None) when no
        pair is closer than ``threshold`` times its radii sum.
    """
    if len(atoms) < 1:
        return float("inf"), None
    radii = covalent_radii[atoms.numbers]
    i, j, d = _pairs(atoms, threshold * 2.0 * float(radii.max()))
    if len(i) == 0:
        return float("inf"), None
    ratio = d / (radii[i] + radii[j])
    k = int(np.argmin(ratio))
    if ratio[k] >= threshold:
        return float("inf"), None
    return float(ratio[k]), (int(i[k]), int(j[k]))


def lost_atoms(atoms: Atoms, distance: float) -> np.ndarray:
    """Indices of atoms with no neighbour (other atom or periodic image) within ``distance`` Å."""
    if len(atoms) < 2 and not np.asarray(atoms.pbc).any():
        return np.array([], dtype=np.int64)
    i, _, _ = _pairs(atoms, distance)
    has = np.zeros(len(atoms), dtype=bool)
    has[i] = True
    return np.flatnonzero(~has)


def cell_angles(cell: np.ndarray) -> np.ndarray:
    """The three cell angles alpha, beta, gamma in degrees (row vectors a, b, c)."""
    a, b, c = np.asarray(cell, dtype=np.float64)

    def angle(u: np.ndarray, v: np.ndarray) -> float:
        cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
        return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))

    return np.array([angle(b, c), angle(a, c), angle(a, b)])


def cell_widths(cell: np.ndarray) -> np.ndarray:
    """Perpendicular widths of the cell (distance between opposite faces), Å."""
    cell = np.asarray(cell, dtype=np.float64)
    volume = abs(np.linalg.det(cell))
    areas = [np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)]
    return np.array([volume / area if area > 0 else 0.0 for area in areas])
