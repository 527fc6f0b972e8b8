"""Energy/force/virial loss (shared/design/dpa3-model.md 5.4) and error accumulators.

Per batch, with N_f the atoms of frame f and prefactors p that follow the learning rate::

    L = p_e mean_f (dE_f^2 / N_f) + p_f mean_f (sum |dF_i|^2 / (3 N_f)) + p_v mean_{f with virial} (sum dV^2 / (9 N_f))

A term is used only when its start and limit prefactors are both non-zero; the virial term
only over frames that carry a virial label. Reported errors: RMSE of E/N (eV/atom), of the
force components (eV/Å) and of V/N (eV/atom), the same quantities deepmd-kit prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from dpa3_al.model.train.batching import Labels
from dpa3_al.model.energy import ModelOutput
from dpa3_al.model.train.lr import prefactor


@dataclass(frozen=True)
class Prefactors:
    start_e: float = 0.2
    limit_e: float = 20.0
    start_f: float = 100.0
    limit_f: float = 60.0
    start_v: float = 0.02
    limit_v: float = 1.0

    def at(self, lr: float, start_lr: float) -> tuple[float, float, float]:
        """(p_e, p_f, p_v) at learning rate ``lr``; 0 for inactive terms."""
        out = []
        for s, lim in ((self.start_e, self.limit_e), (self.start_f, self.limit_f), (self.start_v, self.limit_v)):
            out.append(prefactor(s, lim, lr, start_lr) if (s != 0 and lim != 0) else 0.0)
        return out[0], out[1], out[2]

    @property
    def uses_forces(self) -> bool:
        return self.start_f != 0 and self.limit_f != 0

    @property
    def uses_virial(self) -> bool:
        return self.start_v != 0 and self.limit_v != 0


@dataclass
class ErrorSums:
    """Running sums of squared and absolute errors (for RMSE/MAE over many batches)."""

    sq: dict = field(default_factory=lambda: {"e": 0.0, "f": 0.0, "v": 0.0})
    ab: dict = field(default_factory=lambda: {"e": 0.0, "f": 0.0, "v": 0.0})
    n: dict = field(default_factory=lambda: {"e": 0, "f": 0, "v": 0})

    def add(self, out: ModelOutput, labels: Labels) -> None:
        with torch.no_grad():
            de = (out.energy.detach() - labels.energy) / labels.natoms
            self._add("e", de)
            if out.forces is not None:
                self._add("f", (out.forces.detach() - labels.forces).reshape(-1))
            if out.virial is not None and bool(labels.has_virial.any()):
                m = labels.has_virial
                dv = (out.virial.detach()[m] - labels.virial[m]) / labels.natoms[m][:, None, None]
                self._add("v", dv.reshape(-1))

    def _add(self, key: str, d: torch.Tensor) -> None:
        self.sq[key] += float((d * d).sum())
        self.ab[key] += float(d.abs().sum())
        self.n[key] += int(d.numel())

    def merge(self, other: "ErrorSums") -> None:
        for k in self.n:
            self.sq[k] += other.sq[k]
            self.ab[k] += other.ab[k]
            self.n[k] += other.n[k]

    def rmse(self) -> dict[str, float]:
        """{"e", "f", "v"} RMSE (NaN when there is no such label)."""
        return {k: math.sqrt(self.sq[k] / self.n[k]) if self.n[k] else math.nan for k in self.n}

    def mae(self) -> dict[str, float]:
        return {k: self.ab[k] / self.n[k] if self.n[k] else math.nan for k in self.n}


class EnergyLoss:
    """The weighted MSE loss; call with the model output, labels and the current learning rate."""

    def __init__(self, prefactors: Prefactors, start_lr: float):
        self.pref = prefactors
        self.start_lr = start_lr

    def __call__(self, out: ModelOutput, labels: Labels, lr: float) -> torch.Tensor:
        pe, pf, pv = self.pref.at(lr, self.start_lr)
        natoms = labels.natoms
        loss = out.energy.new_zeros(())
        if pe:
            de = out.energy - labels.energy
            loss = loss + pe * (de * de / natoms).mean()
        if pf and out.forces is not None:
            df = out.forces - labels.forces
            frame = torch.repeat_interleave(torch.arange(len(natoms)), natoms.to(torch.int64))
            per_frame = torch.zeros_like(natoms).index_add(0, frame, (df * df).sum(-1)) / (3.0 * natoms)
            loss = loss + pf * per_frame.mean()
        if pv and out.virial is not None and bool(labels.has_virial.any()):
            m = labels.has_virial
            dv = out.virial[m] - labels.virial[m]
            loss = loss + pv * ((dv * dv).sum((-1, -2)) / (9.0 * natoms[m])).mean()
        return loss
