"""Batches of labeled frames for training, and the seeded sampler that draws them.

Sampling follows deepmd-kit: each batch comes from one system, drawn with probability
proportional to its number of batches (``prob_sys_size``, the default) or uniformly; the
frames of a system are visited in a shuffled order that is redrawn after every pass. The
batch size is a number of frames, or ``auto:N`` = the fewest frames with at least N atoms.

The sampler's whole state (numpy PCG64 state, permutations and positions) is a plain dict,
stored in checkpoints so that a restarted run draws exactly the batches it would have drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from dpa3_al.model.train.data import DataSystem
from dpa3_al.common.errors import InputError
from dpa3_al.model.graph import Batch, Graph, concat_graphs


@dataclass
class Labels:
    """Reference values of a batch (float64 tensors). Units: eV, eV/Å, eV."""

    energy: torch.Tensor       # (nf,)
    forces: torch.Tensor       # (N, 3)
    virial: torch.Tensor       # (nf, 3, 3)
    has_virial: torch.Tensor   # (nf,) bool
    natoms: torch.Tensor       # (nf,) float64


def parse_batch_size(spec: int | str, natoms: int) -> int:
    """Frames per batch for a system of ``natoms`` atoms: an integer, "auto" (= auto:32) or "auto:N"."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        n = int(spec)
        if n < 1:
            raise InputError(f"batch_size {spec!r} must be >= 1")
        return n
    text = str(spec).strip()
    if text == "auto":
        text = "auto:32"
    if not text.startswith("auto:") or not text[5:].isdigit() or int(text[5:]) < 1:
        raise InputError(f"batch_size {spec!r}: use a number of frames, 'auto' or 'auto:N' (N atoms per batch)")
    return max(1, math.ceil(int(text[5:]) / natoms))


class TrainingData:
    """Systems with their types mapped onto ``type_map``; builds batches from (system, frame) picks."""

    def __init__(self, systems: Sequence[DataSystem], type_map: Sequence[str], batch_size: int | str = "auto",
                 sys_probs: str = "size"):
        if not systems:
            raise InputError("no training systems")
        self.systems = list(systems)
        self.type_map = list(type_map)
        self.types = [torch.from_numpy(s.model_types(self.type_map)) for s in self.systems]
        self.batch_sizes = [parse_batch_size(batch_size, s.n_atoms) for s in self.systems]
        if sys_probs == "uniform":
            weights = np.ones(len(self.systems))
        elif sys_probs == "size":
            weights = np.array([max(1, s.n_frames // b) for s, b in zip(self.systems, self.batch_sizes)], float)
        else:
            raise InputError(f"sys_probs {sys_probs!r}: use 'size' or 'uniform'")
        self.probs = weights / weights.sum()

    @property
    def n_frames(self) -> int:
        return sum(s.n_frames for s in self.systems)

    def batch(self, picks: Sequence[tuple[int, int]]) -> tuple[Batch, Labels]:
        """A Batch (positions float64) and its Labels for (system index, frame index) pairs."""
        frames, energy, forces, virial, has_v, natoms = [], [], [], [], [], []
        for s_idx, f in picks:
            s = self.systems[s_idx]
            cell = None if s.cells is None else s.cells[f]
            pbc = np.full(3, s.cells is not None)
            frames.append((s.coords[f], self.types[s_idx].numpy(), cell, pbc))
            energy.append(s.energy[f])
            forces.append(s.forces[f])
            virial.append(s.virial[f])
            has_v.append(s.has_virial[f])
            natoms.append(s.n_atoms)
        labels = Labels(torch.tensor(np.array(energy), dtype=torch.float64),
                        torch.from_numpy(np.concatenate(forces).astype(np.float64)),
                        torch.from_numpy(np.stack(virial).astype(np.float64)),
                        torch.from_numpy(np.array(has_v, dtype=bool)),
                        torch.tensor(natoms, dtype=torch.float64))
        return Batch.from_arrays(frames), labels

    def all_picks(self, max_frames_per_system: int | None = None) -> list[list[tuple[int, int]]]:
        """Every frame (or the first ``max_frames_per_system``) as one-system batches of the batch size."""
        out = []
        for s_idx, (s, bs) in enumerate(zip(self.systems, self.batch_sizes)):
            n = s.n_frames if max_frames_per_system is None else min(s.n_frames, max_frames_per_system)
            out += [[(s_idx, f) for f in range(k, min(k + bs, n))] for k in range(0, n, bs)]
        return out


class FrameGraphs:
    """Neighbour graphs of training frames, built once per (system, frame) and kept, up to
    ``max_triples`` triples in all (a training frame never moves, so its graph never changes).

    ``graph(picks)`` joins the kept graphs of a batch's frames (``concat_graphs``: the same graph
    as building it from the batch); when the budget is spent and a frame is not kept, it returns
    None and the model builds the batch's graph itself, as without the cache.
    """

    def __init__(self, data: TrainingData, build: Callable[[Batch], Graph], max_triples: int):
        self.data, self.build, self.max_triples = data, build, max_triples
        self.kept: dict[tuple[int, int], Graph] = {}
        self.triples = 0

    def graph(self, picks: Sequence[tuple[int, int]]) -> Graph | None:
        parts = []
        for pick in picks:
            pick = (int(pick[0]), int(pick[1]))
            g = self.kept.get(pick)
            if g is None:
                if self.triples >= self.max_triples:
                    return None
                g = self.build(self.data.batch([pick])[0])
                self.kept[pick] = g
                self.triples += g.n_triples
            parts.append(g)
        return concat_graphs(parts, [1] * len(parts))


class FrameSampler:
    """Seeded batch sampler over a :class:`TrainingData` (state saved for exact restarts)."""

    def __init__(self, data: TrainingData, seed: int):
        self.data = data
        self.rng = np.random.default_rng(seed)
        self.perms: list[np.ndarray | None] = [None] * len(data.systems)
        self.pos = [0] * len(data.systems)

    def _next_frame(self, s_idx: int) -> int:
        perm = self.perms[s_idx]
        if perm is None or self.pos[s_idx] >= len(perm):
            perm = self.perms[s_idx] = self.rng.permutation(self.data.systems[s_idx].n_frames)
            self.pos[s_idx] = 0
        self.pos[s_idx] += 1
        return int(perm[self.pos[s_idx] - 1])

    def next_picks(self) -> list[tuple[int, int]]:
        s_idx = int(self.rng.choice(len(self.data.systems), p=self.data.probs))
        return [(s_idx, self._next_frame(s_idx)) for _ in range(self.data.batch_sizes[s_idx])]

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state,
                "perms": [None if p is None else p.tolist() for p in self.perms], "pos": list(self.pos)}

    def load_state_dict(self, state: dict) -> None:
        if len(state["perms"]) != len(self.data.systems):
            raise InputError(f"the checkpoint's data sampler covers {len(state['perms'])} systems but "
                             f"{len(self.data.systems)} are given: restart with the same data")
        self.rng.bit_generator.state = state["rng"]
        self.perms = [None if p is None else np.asarray(p, dtype=np.int64) for p in state["perms"]]
        self.pos = list(state["pos"])
