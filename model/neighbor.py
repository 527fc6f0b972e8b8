"""Neighbour search: all pairs (i, j, S) with |x_j + S·cell - x_i| <= cutoff.

``S`` is an integer cell shift (row vector, so the image of j is x_j + S @ cell). Periodic
images of i itself are neighbours of i (S != 0); i is never its own neighbour with S = 0.
Cells smaller than the cutoff (several images of one atom) and triclinic cells are handled.

:func:`neighbor_pairs` uses vesin's cell list (O(N)); :func:`brute_force_pairs` is the
O(N^2 x images) definition kept for tests.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pairs:
    """Directed neighbour pairs of one frame. Arrays of length n_pairs."""

    i: np.ndarray          # (P,) int64 centre atom
    j: np.ndarray          # (P,) int64 neighbour atom (its owner: ghosts are never materialised)
    shift: np.ndarray      # (P, 3) int64 cell shift of j's image
    distance: np.ndarray   # (P,) float64 |r_ij| in Å


def _safe_cell(cell: np.ndarray | None, pbc: np.ndarray, positions: np.ndarray, cutoff: float) -> np.ndarray:
    """A cell usable by the search: non-periodic directions get a vector spanning the system."""
    cell = np.zeros((3, 3)) if cell is None else np.array(cell, dtype=np.float64)
    if pbc.all():
        return cell
    span = (np.ptp(positions, axis=0).max() if len(positions) else 0.0) + 2.0 * cutoff + 1.0
    for k in range(3):
        if not pbc[k] and np.linalg.norm(cell[k]) < 1e-12:
            cell[k] = 0.0
            # a vector orthogonal to the periodic ones (or the k-th axis when none is periodic)
            others = [cell[m] for m in range(3) if m != k and np.linalg.norm(cell[m]) > 1e-12]
            v = np.cross(*others) if len(others) == 2 else np.eye(3)[k]
            cell[k] = v / np.linalg.norm(v) * span
    return cell


def neighbor_pairs(positions: np.ndarray, cell: np.ndarray | None, pbc, cutoff: float) -> Pairs:
    """All directed pairs within ``cutoff`` (Å) using vesin's cell list.

    Args:
        positions: (N, 3) Å, need not be wrapped into the cell.
        cell: (3, 3) Å, rows are lattice vectors; None or zeros for a non-periodic system.
        pbc: bool or (3,) bools.
        cutoff: Å.
    """
    from vesin import NeighborList

    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    if len(positions) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty, np.zeros((0, 3), dtype=np.int64), np.zeros(0))
    box = _safe_cell(cell, pbc, positions, cutoff) if pbc.any() else np.zeros((3, 3))
    nl = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s, d = nl.compute(points=positions, box=box, periodic=pbc if pbc.any() else False, quantities="ijSd")
    return Pairs(i.astype(np.int64), j.astype(np.int64), s.astype(np.int64), d.astype(np.float64))


def image_range(cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray:
    """How many cell images are needed in each direction to see everything within cutoff."""
    n = np.zeros(3, dtype=np.int64)
    volume = abs(np.linalg.det(cell)) if pbc.any() else 0.0
    for k in range(3):
        if pbc[k]:
            normal = np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])
            plane_distance = volume / np.linalg.norm(normal)
            n[k] = int(np.ceil(cutoff / plane_distance))
    return n


def brute_force_pairs(positions: np.ndarray, cell: np.ndarray | None, pbc, cutoff: float) -> Pairs:
    """Reference implementation of :func:`neighbor_pairs` (all images, all pairs)."""
    positions = np.asarray(positions, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    # wrap periodic directions so that one image layer beyond the cutoff range suffices
    offset = np.zeros((len(positions), 3), dtype=np.int64)
    if pbc.any():
        frac = positions @ np.linalg.inv(_safe_cell(cell, pbc, positions, cutoff))
        offset[:, pbc] = np.floor(frac[:, pbc]).astype(np.int64)
    wrapped = positions - offset @ cell
    n = image_range(cell, pbc, cutoff) + pbc.astype(np.int64)
    out_i, out_j, out_s, out_d = [], [], [], []
    for shift in itertools.product(*(range(-m, m + 1) for m in n)):
        s = np.array(shift, dtype=np.int64)
        diff = wrapped[None, :, :] + s @ cell - wrapped[:, None, :]
        dist = np.linalg.norm(diff, axis=-1)
        mask = dist <= cutoff
        if not s.any():
            np.fill_diagonal(mask, False)
        ii, jj = np.nonzero(mask)
        out_i.append(ii)
        out_j.append(jj)
        out_s.append(s[None] + offset[ii] - offset[jj])
        out_d.append(dist[ii, jj])
    return Pairs(np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64),
                 np.concatenate(out_s).reshape(-1, 3), np.concatenate(out_d))
