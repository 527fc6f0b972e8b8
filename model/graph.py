"""The flat edge/angle graph of a batch of frames (built once per geometry, without autograd).

Layout (all frames concatenated, like one big disconnected molecule)::

    atoms   N = sum of atoms of all frames           atom_frame (N,)
    edges   E: directed pairs i -> j within e_rcut,   center (E,), neighbor (E,), shift (E, 3)
            sorted by (center, distance); at most e_sel per centre (nearest kept)
    angle edges  Ea: the first a_sel edges of each centre with r < a_rcut
                 angle_edge (Ea,) -> index into edges
    triples T: all ordered pairs (j, k) of angle edges of the same centre, j == k included
               triple_j (T,), triple_k (T,) -> index into angle edges
               (j is the edge that receives the angle->edge message; the sum runs over k)

Nothing here is padded and nothing is O(N^2): memory and time are linear in the number of
atoms. Neighbours are owner atoms (ghost images are never materialised), so every layer of
message passing uses the owner's current features, which makes periodic systems exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from dpa3_al.model.config import RepFlowConfig
from dpa3_al.common.errors import InputError
from dpa3_al.model.kernels.layout import block_triples
from dpa3_al.model.neighbor import neighbor_pairs


@dataclass
class Batch:
    """Frames to evaluate, concatenated. Positions in Å, cells rows = lattice vectors."""

    positions: torch.Tensor   # (N, 3)
    types: torch.Tensor       # (N,) int64 model type index
    cells: torch.Tensor       # (nf, 3, 3) zeros for non-periodic frames
    pbc: torch.Tensor         # (nf, 3) bool
    atom_frame: torch.Tensor  # (N,) int64 frame index of each atom
    natoms: torch.Tensor      # (nf,) int64

    @property
    def n_frames(self) -> int:
        return int(self.natoms.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "Batch":
        return Batch(self.positions.to(device, dtype), self.types.to(device), self.cells.to(device, dtype),
                     self.pbc.to(device), self.atom_frame.to(device), self.natoms.to(device))

    @staticmethod
    def from_arrays(frames: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]]) -> "Batch":
        """frames: list of (positions (n,3), types (n,), cell (3,3) or None, pbc (3,))."""
        pos = np.concatenate([np.asarray(f[0], dtype=np.float64).reshape(-1, 3) for f in frames])
        types = np.concatenate([np.asarray(f[1], dtype=np.int64).reshape(-1) for f in frames])
        cells = np.stack([np.zeros((3, 3)) if f[2] is None else np.asarray(f[2], dtype=np.float64) for f in frames])
        pbc = np.stack([np.broadcast_to(np.asarray(f[3], dtype=bool), (3,)) for f in frames])
        natoms = np.array([len(np.asarray(f[1]).reshape(-1)) for f in frames], dtype=np.int64)
        return Batch(torch.from_numpy(pos), torch.from_numpy(types), torch.from_numpy(cells),
                     torch.from_numpy(pbc.copy()), torch.from_numpy(np.repeat(np.arange(len(frames)), natoms)),
                     torch.from_numpy(natoms))


@dataclass
class Graph:
    """Index structure of the flat graph (see module docstring). All int64 tensors."""

    center: torch.Tensor       # (E,)
    neighbor: torch.Tensor     # (E,)
    shift: torch.Tensor        # (E, 3) integer cell shifts stored as float (x_j + shift @ cell)
    edge_frame: torch.Tensor   # (E,)
    angle_edge: torch.Tensor   # (Ea,)
    triple_j: torch.Tensor     # (T,)
    triple_k: torch.Tensor     # (T,)
    n_atoms: int

    @property
    def n_edges(self) -> int:
        return int(self.center.shape[0])

    @property
    def n_triples(self) -> int:
        return int(self.triple_j.shape[0])

    def to(self, device: torch.device | str) -> "Graph":
        return Graph(*(t.to(device) for t in (self.center, self.neighbor, self.shift, self.edge_frame,
                                                self.angle_edge, self.triple_j, self.triple_k)), n_atoms=self.n_atoms)


MIN_DISTANCE = 0.1  # Å: closer atoms are an input error, never a silent huge number


def build_graph(batch: Batch, cfg: RepFlowConfig) -> Graph:
    """Neighbour search + selection for every frame of ``batch``; returns the flat graph."""
    pos = batch.positions.detach().cpu().numpy().astype(np.float64)
    cells = batch.cells.detach().cpu().numpy().astype(np.float64)
    pbc = batch.pbc.cpu().numpy()
    natoms = batch.natoms.cpu().numpy()
    parts = []
    start = 0
    for f, n in enumerate(natoms):
        sl = slice(start, start + int(n))
        pairs = neighbor_pairs(pos[sl], cells[f] if pbc[f].any() else None, pbc[f], cfg.e_rcut)
        _check_min_distance(pairs.i, pairs.j, pairs.distance, start, f)
        parts.append(_select_frame(pairs.i + start, pairs.j + start, pairs.shift, pairs.distance, f, cfg))
        start += int(n)
    cat = [np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, np.int64) for k in range(4)]
    center, neighbor, shift, frame = cat
    angle_edge, triple_j, triple_k = _angles(center, np.concatenate([p[4] for p in parts]) if parts else
                                             np.zeros(0, bool))
    as_t = torch.from_numpy
    return Graph(as_t(center), as_t(neighbor), as_t(shift.reshape(-1, 3).astype(np.float64)), as_t(frame),
                 as_t(angle_edge), as_t(triple_j), as_t(triple_k), n_atoms=int(natoms.sum()))


def concat_graphs(graphs: Sequence[Graph], n_frames: Sequence[int]) -> Graph:
    """The graphs of consecutive batches as one graph (``n_frames[k]`` frames in ``graphs[k]``):
    atom, edge, angle-edge and frame indices offset, the layout above kept, so the graphs of
    frames built one at a time join into exactly ``build_graph`` of their batch."""
    if len(graphs) == 1:
        return graphs[0]
    atoms, edges, angles, frames = (np.cumsum([0, *v])[:-1] for v in (
        [g.n_atoms for g in graphs], [g.n_edges for g in graphs], [int(g.angle_edge.shape[0]) for g in graphs],
        n_frames))

    def cat(name: str, offsets) -> torch.Tensor:
        return torch.cat([getattr(g, name) + int(o) for g, o in zip(graphs, offsets)])
    return Graph(center=cat("center", atoms), neighbor=cat("neighbor", atoms),
                 shift=torch.cat([g.shift for g in graphs]), edge_frame=cat("edge_frame", frames),
                 angle_edge=cat("angle_edge", edges), triple_j=cat("triple_j", angles),
                 triple_k=cat("triple_k", angles), n_atoms=sum(g.n_atoms for g in graphs))


def _check_min_distance(i: np.ndarray, j: np.ndarray, d: np.ndarray, offset: int, frame: int) -> None:
    close = d < MIN_DISTANCE
    if close.any():
        k = int(np.argmin(d))
        raise InputError(
            f"frame {frame}: atoms {int(i[k])} and {int(j[k])} are {d[k]:.3g} Å apart (< {MIN_DISTANCE} Å); "
            f"{int(close.sum()) // 2} such pair(s). Overlapping atoms give meaningless energies: fix the structure")


def _select_frame(i, j, shift, d, frame: int, cfg: RepFlowConfig):
    """Sort one frame's pairs by (centre, distance), keep the nearest e_sel, flag angle edges."""
    order = np.lexsort((d, i))
    i, j, shift, d = i[order], j[order], shift[order], d[order]
    if len(i):
        first = np.r_[0, np.flatnonzero(np.diff(i)) + 1]
        counts = np.diff(np.r_[first, len(i)])
        rank = np.arange(len(i)) - np.repeat(first, counts)
    else:
        rank = np.zeros(0, dtype=np.int64)
    keep = rank < cfg.e_sel
    i, j, shift, d, rank = i[keep], j[keep], shift[keep], d[keep], rank[keep]
    is_angle = (rank < cfg.a_sel) & (d < cfg.a_rcut)
    return i, j, shift, np.full(len(i), frame, dtype=np.int64), is_angle


def _angles(center: np.ndarray, is_angle: np.ndarray):
    """Angle edges and all (j, k) triples per centre (angle edges of a centre are contiguous)."""
    angle_edge = np.flatnonzero(is_angle).astype(np.int64)
    if len(angle_edge) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return angle_edge, empty, empty
    a_center = center[angle_edge]
    first = np.r_[0, np.flatnonzero(np.diff(a_center)) + 1]
    m = np.diff(np.r_[first, len(angle_edge)])            # angle edges per centre
    return (angle_edge, *block_triples(first, m))   # the layout of model/kernels/layout.py
