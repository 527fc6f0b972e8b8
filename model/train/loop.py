"""Pieces of the training loop: validation batches, the progress bar, the convergence verdict.

Convergence verdict (``train_summary.json``: ``converged`` and ``reason``). A run converged
when (1) the square root of its validation loss (the loss at the limit prefactors, an RMSE-like
combined error; the same weighting of the training RMSEs when there is no validation data)
improved by less than ``stopping.converge_tol`` (relative) over the last
``stopping.converge_window`` of the steps,
or early stopping found no improvement for ``stopping.patience`` checks, and (2) the output
model's force RMSE is at most ``stopping.max_rel_force_error`` of the RMS of the force labels.
(2) matters because an exponentially decayed learning rate flattens every curve at its end:
a DPA3 that has not yet started to learn forces (they start near zero and need a few hundred
steps at a high learning rate to grow) would otherwise look converged.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from dpa3_al.model.train.batching import Labels, TrainingData
from dpa3_al.model.graph import Batch, Graph, build_graph
from dpa3_al.model.train.loss import EnergyLoss, Prefactors

MAX_CACHED_TRIPLES = 30_000_000     # graphs kept in memory up to this size (~0.5 GB): validation's, and training's


FUSED_DEVICES = ("cpu", "cuda")     # where torch has a fused Adam kernel for float32/float64


def make_optimizer(params: list[torch.nn.Parameter], cfg, lr: float) -> torch.optim.Optimizer:
    """Adam or AdamW (decoupled weight decay) over ``params`` from the ``optimizer`` config section.

    Fused where torch has the kernel: one call updates every parameter, instead of ~10 small
    operations per parameter tensor. Same update rule (rounding aside); on the AL benchmark's
    small model on CPU the optimiser step takes 0.9 instead of 3.2 ms, 5 % of a training step
    (docs/performance.md, bench/bench_optimizer.py).
    """
    fused = all(p.device.type in FUSED_DEVICES and p.dtype in (torch.float32, torch.float64) for p in params)
    kw = {"lr": lr, "betas": (cfg.beta1, cfg.beta2), "fused": fused or None}
    if cfg.type == "AdamW":
        return torch.optim.AdamW(params, weight_decay=cfg.weight_decay, **kw)
    return torch.optim.Adam(params, **kw)


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """``opt.load_state_dict(state)`` keeping ``opt``'s kernel choice (a checkpoint written by a
    non-fused optimiser would otherwise turn the fused kernel off: its param_groups win)."""
    kernels = [{k: g.get(k) for k in ("fused", "foreach")} for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, kernel in zip(opt.param_groups, kernels):
        group.update(kernel)


def optimizer_step(model, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], loss_fn: EnergyLoss,
                   batch: Batch, labels: Labels, lr: float, max_norm: float, virial: bool, graph: Graph | None = None):
    """One training step at learning rate ``lr``: forces (and virial) with an autograd graph for the
    double backward (``graph``: the batch's neighbour graph, built here when None), the loss at
    ``lr``'s prefactors, gradients clipped to ``max_norm`` (global L2 norm; 0: no clipping), one
    optimiser step. Returns (model output, loss). Raises FloatingPointError when the loss is not
    finite (the parameters are then left unchanged).

    This is the whole of the step: tests/model/test_train_reference.py checks that four of them
    reproduce deepmd-kit 3.2's parameters from the same start to 1e-9.
    """
    for group in opt.param_groups:
        group["lr"] = lr
    out = model(batch, graph, create_graph=True, forces=True, virial=virial)
    loss = loss_fn(out, labels, lr)
    if not torch.isfinite(loss.detach()):
        raise FloatingPointError(f"the loss became {float(loss.detach())}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()
    return out, loss


def validation_batches(val: TrainingData, max_frames: int, descriptor_cfg=None) -> list[tuple[Batch, Labels, Graph | None]]:
    """A fixed, evenly spread subset of at most ``max_frames`` validation frames, in one-system batches.

    Graphs are built once and kept when ``descriptor_cfg`` is given and they are not too large.
    """
    flat = [(s, f) for s, system in enumerate(val.systems) for f in range(system.n_frames)]
    if len(flat) > max_frames:
        flat = [flat[int(i)] for i in np.unique(np.linspace(0, len(flat) - 1, max_frames).round())]
    out, cached = [], 0
    for s_idx in sorted({s for s, _ in flat}):
        frames = [p for p in flat if p[0] == s_idx]
        bs = val.batch_sizes[s_idx]
        for k in range(0, len(frames), bs):
            batch, labels = val.batch(frames[k:k + bs])
            graph = None
            if descriptor_cfg is not None and cached < MAX_CACHED_TRIPLES:
                graph = build_graph(batch, descriptor_cfg)
                cached += graph.n_triples
            out.append((batch, labels, graph))
    return out


def rmse_metric(rmse: dict[str, float], pref: Prefactors) -> float:
    """sum_k limit_pref_k * rmse_k^2 over the available quantities (a scale-free plateau test needs no units)."""
    terms = [(pref.limit_e, rmse["e"]), (pref.limit_f, rmse["f"]), (pref.limit_v, rmse["v"])]
    vals = [p * r * r for p, r in terms if p and math.isfinite(r)]
    return float(sum(vals)) if vals else math.nan


@dataclass(frozen=True)
class Verdict:
    converged: bool
    reason: str
    improvement: float | None      # relative drop of the judged loss over the window


def judge_convergence(rows: Sequence, stopping, stop_reason: str | None, has_val: bool,
                      pref: Prefactors | None = None, force_label_rms: float = math.nan,
                      final_force_rmse: float = math.nan) -> Verdict:
    """Whether the run converged (see the module docstring): the curve flattened and forces were learned."""
    verdict = _plateau(rows, stopping, stop_reason, has_val, pref)
    ratio = final_force_rmse / force_label_rms if force_label_rms > 0 else math.nan
    if verdict.converged and math.isfinite(ratio) and ratio > stopping.max_rel_force_error:
        what = "validation" if has_val else "training"
        return Verdict(False, f"the {what} force RMSE ({final_force_rmse:.3g} eV/Å) is still {ratio:.0%} of the "
                              f"force labels' RMS ({force_label_rms:.3g} eV/Å; limit "
                              f"{stopping.max_rel_force_error:.0%}): the model has barely learned forces although "
                              f"its loss stopped falling ({verdict.reason}); train longer or raise "
                              f"learning_rate.start_lr", verdict.improvement)
    return verdict


def _plateau(rows: Sequence, stopping, stop_reason: str | None, has_val: bool, pref: Prefactors | None) -> Verdict:
    what = "validation" if has_val else "training"
    if has_val:
        pts = [(r.step, r.loss_val) for r in rows if r.step > 0 and math.isfinite(r.loss_val)]
    else:
        pts = [(r.step, rmse_metric(r.trn, pref or Prefactors())) for r in rows if r.step > 0]
        pts = [(s, v) for s, v in pts if math.isfinite(v)]
    if stop_reason and stop_reason.startswith("early stop"):
        return Verdict(True, f"{stop_reason}: the {what} loss had stopped improving", 0.0)
    if len(pts) < 4:
        return Verdict(False, f"too few error checks ({len(pts)}) to judge convergence; train longer", None)
    last = pts[-1][0]
    start = last * (1.0 - stopping.converge_window)
    before = [v for s, v in pts if s <= start] or [pts[0][1]]
    best_before, best_all = math.sqrt(min(before)), math.sqrt(min(v for _, v in pts))   # RMSE scale
    improvement = (best_before - best_all) / best_before if best_before > 0 else 0.0
    window = f"the last {stopping.converge_window:.0%} of the steps"
    budget = f" ({stop_reason})" if stop_reason else ""
    if improvement < stopping.converge_tol:
        return Verdict(True, f"the {what} error improved by {improvement:.1%} over {window} "
                             f"(< {stopping.converge_tol:.0%}){budget}", improvement)
    return Verdict(False, f"the {what} error still fell by {improvement:.1%} over {window} (tolerance "
                          f"{stopping.converge_tol:.0%}){budget}: train longer (training.numb_steps or max_time)",
                   improvement)


class Progress:
    """tqdm bar on stderr with ETA and the current train/validation RMSEs (log lines go through it)."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str = "train"):
        self.enabled = enabled
        self.bar = None
        self._redirect = None
        self._last = 0.0
        if enabled:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = tqdm(total=total, initial=initial, file=sys.stderr, desc=desc, unit="step",
                            dynamic_ncols=True, mininterval=0.5)
            self._redirect = logging_redirect_tqdm()

    def __enter__(self) -> "Progress":
        if self._redirect is not None:
            self._redirect.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._redirect is not None:
            self._redirect.__exit__(*exc)
        if self.bar is not None:
            self.bar.close()

    def update(self, step: int, window: dict[str, float], last_row, total: int) -> None:
        if self.bar is None:
            return
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(step - self.bar.n)
        now = time.monotonic()
        if now - self._last < 1.0:
            return
        self._last = now
        post = {f"{k}": f"{v:.3g}" for k, v in window.items() if math.isfinite(v)}
        if last_row is not None:
            post.update({f"val_{k}": f"{v:.3g}" for k, v in last_row.val.items() if math.isfinite(v)})
        self.bar.set_postfix(post, refresh=False)
