"""Memory of one energy+forces+virial evaluation: measured per graph element, predicted per system.

Autograd keeps, per layer, tensors whose leading dimension is the number of atoms, edges,
angle edges or triples. :func:`unit_costs` runs the model once on a small probe structure
with ``saved_tensors_hooks`` and sums the bytes kept for the backward pass by leading
dimension, giving bytes per atom/edge/angle edge/triple (for this model, precision and memory
mode). :func:`estimate_peak` turns graph sizes into a peak estimate:

    peak = base + stored + working,   stored = sum_units count * bytes_per_unit
    working = the backward pass's gradients and one layer's (default) or one chunk's (low)
              recomputed tensors, estimated as one layer's share of the default-mode costs

``base`` is the resident size of the interpreter with torch and the model loaded. The
estimate is checked against measured peak RSS by ``bench/bench_scaling.py``.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

import numpy as np
import torch

from dpa3_al.common.errors import MemoryEstimateError
from dpa3_al.model.graph import Batch, Graph

UNITS = ("atom", "edge", "angle_edge", "triple")
#: measured peak RSS above the base / estimate, CPU, tuned glibc malloc, water example (bench/bench_scaling.py,
#: 1,536 to 24,576 atoms): default 1.05-1.10; low 1.38-1.52 with torch's checkpoint, 1.18-1.36 with
#: model/recompute.py (allocator overhead of the many chunk temporaries); the factors keep the
#: estimate on the safe side (low: 7-10 % above the measured peak at 1,536-6,144 atoms, 23 % at 24,576).
CALIBRATION = {"default": 1.1, "low": 1.45}
#: training steps (forces with a graph, then the loss backward), peak above the base in units of
#: what the forward + force pass keep: measured 1.60-1.65 x stored (default) and, for the low mode,
#: 2.9 x stored + 1.84 x one default layer at 73 % of a layer per chunk (water example and
#: DPA-3.1-3M shape, 192 atoms: bench/bench_train.py step); ~10 % added for safety.
CALIBRATION_TRAIN = {"default": 1.8, "low_stored": 3.2, "low_layer": 2.0 / 0.73}


@dataclass(frozen=True)
class UnitCosts:
    """Bytes kept for the backward pass per graph element, for one model and memory mode."""

    stored: dict[str, float]        # per unit, whole model
    per_layer: dict[str, float]     # per unit, one layer of the default mode (working-set estimate)
    mode: str
    nlayers: int = 1
    chunk_triples: int = 0          # triples per recomputed chunk in the low mode (0 = whole graph)
    training: bool = False          # costs of a training step (force pass with a graph + loss backward)

    def peak(self, counts: dict[str, int], base: float) -> float:
        stored = sum(counts[u] * self.stored[u] for u in UNITS)
        layer = sum(counts[u] * self.per_layer[u] for u in UNITS)
        frac = min(1.0, self.chunk_triples / max(counts["triple"], 1)) if self.chunk_triples else 1.0
        if self.training:
            if self.mode == "low":
                return base + CALIBRATION_TRAIN["low_stored"] * stored + CALIBRATION_TRAIN["low_layer"] * layer * frac
            return base + CALIBRATION_TRAIN["default"] * stored
        if self.mode == "low":
            # one recomputed chunk and its gradients, plus the gradients of one layer's stored
            # inputs and outputs (the stored tensors are the layers' inputs)
            return base + CALIBRATION["low"] * (stored * (1.0 + 2.0 / self.nlayers) + 2.0 * layer * frac)
        return base + CALIBRATION["default"] * (stored + 1.5 * layer)     # + gradients of the live layer


def graph_counts(graph: Graph) -> dict[str, int]:
    return {"atom": graph.n_atoms, "edge": graph.n_edges, "angle_edge": int(graph.angle_edge.shape[0]),
            "triple": graph.n_triples}


def _probe_batch(model) -> Batch:
    """A small, dense, water-like periodic structure (distinct atom/edge/triple counts)."""
    rng = np.random.default_rng(0)
    n, box = 60, 8.4
    pos = rng.uniform(0, box, (n, 3))
    for _ in range(200):   # push apart to >= 0.9 Å so that nothing is pathological
        d = pos[:, None] - pos[None]
        d -= box * np.round(d / box)
        r = np.linalg.norm(d, axis=-1) + np.eye(n) * 10
        i, j = np.nonzero(r < 0.9)
        if not len(i):
            break
        pos[i] += 0.3 * d[i, j] / r[i, j, None]
    types = np.arange(n) % len(model.type_map)
    return Batch.from_arrays([(pos, types, np.eye(3) * box, np.ones(3, bool))])


def unit_costs(model, mode: str | None = None, training: bool = False) -> UnitCosts:
    """Measure bytes kept for backward per atom/edge/angle edge/triple on a probe structure
    (``training``: what a training step's forward and force pass keep for the loss backward)."""
    mode = mode or model.memory
    device = model.out_bias.device
    batch = _probe_batch(model)
    graph = model.build_graph(batch).to(device)
    batch = batch.to(device, torch.float64)
    counts = graph_counts(graph)
    stored = _saved_by_unit(model, batch, graph, counts, mode, training)
    default = stored if mode == "default" else _saved_by_unit(model, batch, graph, counts, "default", training)
    nl = model.config.descriptor.nlayers
    return UnitCosts(stored=stored, per_layer={u: default[u] / nl for u in UNITS}, mode=mode, nlayers=nl,
                     chunk_triples=int(model.descriptor.chunk_triples), training=training)


def _saved_by_unit(model, batch, graph, counts, mode, training: bool = False) -> dict[str, float]:
    by_size = {counts[u]: u for u in reversed(UNITS)}   # a size shared by two units goes to the smaller
    totals = dict.fromkeys(UNITS, 0.0)
    seen: set[int] = set()

    def pack(t: torch.Tensor):
        key = t.untyped_storage().data_ptr()
        if key not in seen and t.dim() > 0 and t.shape[0] in by_size:
            seen.add(key)
            totals[by_size[t.shape[0]]] += t.untyped_storage().nbytes()
        return t

    old = model.memory
    model.set_memory(mode)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(batch, graph, create_graph=training)
    finally:
        model.set_memory(old)
    return {u: totals[u] / max(counts[u], 1) for u in UNITS}


def base_bytes() -> float:
    """Current peak resident size of this process (interpreter + torch + models)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def current_bytes() -> float:
    """Resident size of this process now (it includes freed memory the allocator keeps for reuse)."""
    import psutil

    return float(psutil.Process().memory_info().rss)


def available_bytes() -> float:
    import psutil

    return float(psutil.virtual_memory().available)


def typical_counts(model, n_atoms: int, density: float = 0.1) -> dict[str, int]:
    """Graph sizes of a homogeneous system of ``density`` atoms/Å^3 (liquid water: 0.1)."""
    cfg = model.config.descriptor
    nb_e = min(cfg.e_sel, density * 4.0 / 3.0 * np.pi * cfg.e_rcut ** 3)
    nb_a = min(cfg.a_sel, density * 4.0 / 3.0 * np.pi * cfg.a_rcut ** 3)
    return {"atom": n_atoms, "edge": int(n_atoms * nb_e), "angle_edge": int(n_atoms * nb_a),
            "triple": int(n_atoms * nb_a * nb_a)}


def max_atoms(costs: UnitCosts, per_atom_counts: dict[str, float], budget: float, base: float) -> int:
    """Largest number of atoms whose estimated peak fits in ``budget`` bytes."""
    def fits(n: int) -> bool:
        return costs.peak({u: per_atom_counts[u] * n for u in UNITS}, base) <= budget

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi) and hi < 10 ** 9:          # the peak grows with n: double, then bisect
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def check_fits(model, graph: Graph, costs: UnitCosts, *, budget: float, base: float) -> float:
    """Raise MemoryEstimateError before evaluating a graph that would not fit in ``budget`` bytes
    on top of ``base`` bytes (see MemoryGuard for how both are chosen); return the estimate."""
    counts = graph_counts(graph)
    peak = costs.peak(counts, base)
    if peak <= 0.95 * budget:
        return peak
    per_atom = {u: counts[u] / max(counts["atom"], 1) for u in UNITS}
    fits = max_atoms(costs, per_atom, 0.95 * budget, base)
    graph_text = f"{counts['atom']} atoms ({counts['edge']} edges, {counts['triple']} angle triples)"
    if costs.training:
        subject, done = f"a training step on {graph_text} needs", "Training did not start."
        hint = ("; model.memory: low in the training config recomputes each layer and needs several times less; "
                "or use smaller frames / batch_size")
    else:
        subject, done = f"{graph_text} need", "Nothing was evaluated."
        hint = ("; memory='low' (calculator option, or model.memory: low in the config) recomputes each layer "
                "in chunks and needs several times less")
    hint = hint if costs.mode == "default" else ""
    raise MemoryEstimateError(
        f"{subject} about {peak / 1e9:.1f} GB in memory mode {costs.mode!r}, but about "
        f"{budget / 1e9:.1f} GB are available; about {fits} atoms of this density fit{hint}. {done}")
