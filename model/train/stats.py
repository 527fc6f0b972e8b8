"""Data statistics before training: the per-element energy bias and the env-matrix std.

Energy bias (deepmd-kit's rules, shared/design/dpa3-model.md 5.3), with c_{f,t} the number of
atoms of type t in frame f and E_f its total energy (eV):

- *set-by-statistic* (training from scratch, or a re-initialised fitting net):
  out_bias = argmin_b sum_f (E_f - sum_t c_{f,t} b_t)^2, solved by ``numpy.linalg.lstsq``
  (rcond=None), i.e. the minimum-norm solution: a type absent from the data gets 0, and
  frames that all share one composition give the split b proportional to that composition.
- *change-by-statistic* (fine-tuning an inherited fitting net): predict E^_f with the model
  as it is (its bias included), regress the residuals E_f - E^_f the same way and ADD the
  solution to out_bias.

Env-matrix std (only when ``fix_stat_std == 0``; 4.0 of the spec): per centre type t,
sigma_r = std of w(r)/r over all e_sel neighbour slots of the sampled atoms of type t (empty
slots count as zeros) and sigma_a = std of the three components of w(r) r_vec / r^2 pooled;
the polynomial switch is used even for exp-switch models (as deepmd-kit does), values are
floored at 1e-2, and a type absent from the data keeps 0.1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from dpa3_al.model.train.batching import TrainingData
from dpa3_al.model.descriptor import poly_switch
from dpa3_al.model.energy import DPA3Model, edge_vectors
from dpa3_al.model.graph import Batch, build_graph

log = logging.getLogger(__name__)

Picks = list[tuple[int, int]]
STD_FLOOR, STD_ABSENT = 1e-2, 0.1


@dataclass(frozen=True)
class BiasFit:
    """Result of one least-squares bias fit (eV per atom of each type)."""

    bias: np.ndarray          # (ntypes,) the solution (set) or the added delta (change)
    residual_std: float       # std of the fit residual per frame, eV (deepmd's out_std; informative only)
    n_frames: int
    mode: str                 # "set" or "change"


def stat_picks(data: TrainingData, nbatch: int, seed: int) -> list[Picks]:
    """Up to ``nbatch`` batches per system (deepmd's data_stat_nbatch); all frames, in order, when they fit."""
    rng = np.random.default_rng(seed)
    out: list[Picks] = []
    for s_idx, (system, bs) in enumerate(zip(data.systems, data.batch_sizes)):
        n = min(system.n_frames, nbatch * bs)
        frames = np.arange(system.n_frames) if n >= system.n_frames else np.sort(rng.choice(system.n_frames, n, False))
        out += [[(s_idx, int(f)) for f in frames[k:k + bs]] for k in range(0, len(frames), bs)]
    return out


def type_counts(data: TrainingData, picks: Sequence[Picks]) -> np.ndarray:
    """(nf, ntypes) atom counts of every picked frame, in pick order."""
    ntypes = len(data.type_map)
    rows = [np.bincount(data.types[s].numpy(), minlength=ntypes) for batch in picks for s, _ in batch]
    return np.array(rows, dtype=np.float64).reshape(-1, ntypes)


def picked_energies(data: TrainingData, picks: Sequence[Picks]) -> np.ndarray:
    return np.array([data.systems[s].energy[f] for batch in picks for s, f in batch], dtype=np.float64)


def lstsq_bias(counts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimum-norm least squares b = argmin |values - counts b| and the residual std."""
    bias = np.linalg.lstsq(counts, values, rcond=None)[0]
    residual = values - counts @ bias
    return bias, float(np.std(residual)) if len(residual) else 0.0


def set_bias_by_statistic(model: DPA3Model, data: TrainingData, picks: Sequence[Picks]) -> BiasFit:
    """out_bias <- least-squares per-type energies of the picked frames (labels only)."""
    counts = type_counts(data, picks)
    bias, std = lstsq_bias(counts, picked_energies(data, picks))
    with torch.no_grad():
        model.out_bias.copy_(torch.from_numpy(bias))
    log.info("energy bias set by statistic on %d frames: %s", len(counts), _fmt(data.type_map, bias))
    return BiasFit(bias, std, len(counts), "set")


def predict_energies(model: DPA3Model, data: TrainingData, picks: Sequence[Picks], max_atoms: int = 2048,
                     ) -> np.ndarray:
    """Model energies (eV) of the picked frames, evaluated in packs of about ``max_atoms`` atoms."""
    flat = [p for batch in picks for p in batch]
    out: list[np.ndarray] = []
    start = 0
    while start < len(flat):
        stop, atoms = start, 0
        while stop < len(flat) and (stop == start or atoms + data.systems[flat[stop][0]].n_atoms <= max_atoms):
            atoms += data.systems[flat[stop][0]].n_atoms
            stop += 1
        batch, _ = data.batch(flat[start:stop])
        with torch.no_grad():
            out.append(model(batch, forces=False, virial=False).energy.numpy())
        start = stop
    return np.concatenate(out) if out else np.zeros(0)


def change_bias_by_statistic(model: DPA3Model, data: TrainingData, picks: Sequence[Picks]) -> BiasFit:
    """out_bias += least-squares per-type fit of the residuals E - E^(model) of the picked frames."""
    counts = type_counts(data, picks)
    residual = picked_energies(data, picks) - predict_energies(model, data, picks)
    delta, std = lstsq_bias(counts, residual)
    with torch.no_grad():
        model.out_bias.add_(torch.from_numpy(delta))
    log.info("energy bias changed by statistic on %d frames (mean residual %.4g eV): delta %s", len(counts),
             float(residual.mean()) if len(residual) else 0.0, _fmt(data.type_map, delta))
    return BiasFit(delta, std, len(counts), "change")


def _fmt(type_map: Sequence[str], values: np.ndarray) -> str:
    return ", ".join(f"{t} {v:.6g}" for t, v in zip(type_map, values))


# ---------------------------------------------------------------------------- env-matrix std


def env_std_from_data(model: DPA3Model, data: TrainingData, picks: Sequence[Picks]) -> tuple[torch.Tensor, np.ndarray]:
    """(ntypes, 4) env-mat std per centre type from the picked frames, and the atom count per type.

    Types with no atom in the picks get 0.1 (the caller may keep other values for them).
    """
    cfg = model.config.descriptor
    ntypes = len(data.type_map)
    sums = np.zeros((ntypes, 4))          # radial sum, radial sum of squares, angular sum, angular sum of squares
    n_atoms = np.zeros(ntypes)
    for batch_picks in picks:
        batch, _ = data.batch(batch_picks)
        _accumulate(batch, cfg, sums, n_atoms)
    std = np.full((ntypes, 4), STD_ABSENT)
    for t in range(ntypes):
        if n_atoms[t] == 0:
            continue
        slots = n_atoms[t] * cfg.e_sel
        var_r = sums[t, 1] / slots - (sums[t, 0] / slots) ** 2
        var_a = sums[t, 3] / (3 * slots) - (sums[t, 2] / (3 * slots)) ** 2
        std[t, 0] = max(np.sqrt(max(var_r, 0.0)), STD_FLOOR)
        std[t, 1:] = max(np.sqrt(max(var_a, 0.0)), STD_FLOOR)
    return torch.from_numpy(std).to(model.descriptor.env_std.dtype), n_atoms


def _accumulate(batch: Batch, cfg, sums: np.ndarray, n_atoms: np.ndarray) -> None:
    graph = build_graph(batch, cfg)
    with torch.no_grad():
        r = edge_vectors(batch.positions.to(torch.float64), batch.cells.to(torch.float64), graph, None)
        dist = torch.linalg.vector_norm(r, dim=-1)
        w = poly_switch(dist, cfg.e_rcut_smth, cfg.e_rcut)
        denom = dist + cfg.env_protection
        s = (w / denom).numpy()
        h = ((w / (denom * denom))[:, None] * r).numpy()
    ct = batch.types[graph.center].numpy()
    ntypes = sums.shape[0]
    sums[:, 0] += np.bincount(ct, weights=s, minlength=ntypes)
    sums[:, 1] += np.bincount(ct, weights=s * s, minlength=ntypes)
    sums[:, 2] += np.bincount(ct, weights=h.sum(1), minlength=ntypes)
    sums[:, 3] += np.bincount(ct, weights=(h * h).sum(1), minlength=ntypes)
    n_atoms += np.bincount(batch.types.numpy(), minlength=ntypes)


def apply_env_std(model: DPA3Model, data: TrainingData, picks: Sequence[Picks], keep: Sequence[bool] | None = None,
                  ) -> None:
    """Set ``descriptor.env_std`` from data when the model computes it (fix_stat_std == 0).

    ``keep[t]`` True keeps the model's current row for type t (a fine-tuned model keeps the
    pre-trained statistics of the types it already knew).
    """
    if model.config.descriptor.fix_stat_std > 0:
        return
    std, n_atoms = env_std_from_data(model, data, picks)
    with torch.no_grad():
        for t in range(std.shape[0]):
            if keep is None or not keep[t]:
                model.descriptor.env_std[t] = std[t]
    log.info("env-matrix std from %d atoms: %s", int(n_atoms.sum()),
             "; ".join(f"{name} r {float(model.descriptor.env_std[t, 0]):.4g} a "
                       f"{float(model.descriptor.env_std[t, 1]):.4g}" for t, name in enumerate(data.type_map)))
