"""Errors of a model on labeled data (``dpa3-al test``): RMSE/MAE per system and parity plots.

Per system: energy per atom (eV/atom), force components (eV/Å) and virial per atom (eV/atom,
frames with a virial label only), the same quantities as the training curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dpa3_al.model.train.batching import TrainingData
from dpa3_al.model.train.data import DataSystem
from dpa3_al.model.energy import DPA3Model
from dpa3_al.model.train.loss import ErrorSums


@dataclass
class SystemErrors:
    name: str
    n_frames: int
    n_atoms: int
    rmse: dict[str, float]
    mae: dict[str, float]
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)   # key -> (reference, predicted)

    def as_dict(self) -> dict:
        clean = lambda d: {k: None if not math.isfinite(v) else v for k, v in d.items()}  # noqa: E731
        return {"system": self.name, "frames": self.n_frames, "atoms": self.n_atoms, "rmse": clean(self.rmse),
                "mae": clean(self.mae)}


def evaluate_systems(model: DPA3Model, systems: Sequence[DataSystem], max_atoms: int = 4096,
                     progress: bool = False) -> list[SystemErrors]:
    """Evaluate every frame of every system (packs of about ``max_atoms`` atoms per call)."""
    data = TrainingData(systems, model.type_map, batch_size=1)
    results = []
    iterator = range(len(systems))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="test", unit="system", file=__import__("sys").stderr)
    for s_idx in iterator:
        results.append(_one_system(model, data, s_idx, max_atoms))
    return results


def _one_system(model: DPA3Model, data: TrainingData, s_idx: int, max_atoms: int) -> SystemErrors:
    system = data.systems[s_idx]
    per_call = max(1, max_atoms // system.n_atoms)
    virial = bool(system.has_virial.any())
    sums = ErrorSums()
    pairs: dict[str, list] = {"e": [[], []], "f": [[], []], "v": [[], []]}
    for start in range(0, system.n_frames, per_call):
        picks = [(s_idx, f) for f in range(start, min(start + per_call, system.n_frames))]
        batch, labels = data.batch(picks)
        out = model(batch, forces=True, virial=virial)
        sums.add(out, labels)
        with torch.no_grad():
            pairs["e"][0].append((labels.energy / labels.natoms).numpy())
            pairs["e"][1].append((out.energy / labels.natoms).numpy())
            pairs["f"][0].append(labels.forces.reshape(-1).numpy())
            pairs["f"][1].append(out.forces.reshape(-1).numpy())
            if virial:
                m = labels.has_virial
                n = labels.natoms[m][:, None, None]
                pairs["v"][0].append((labels.virial[m] / n).reshape(-1).numpy())
                pairs["v"][1].append((out.virial[m] / n).reshape(-1).numpy())
    arrays = {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in pairs.items() if v[0]}
    return SystemErrors(system.name, system.n_frames, system.n_atoms, sums.rmse(), sums.mae(), arrays)


def total_errors(results: Sequence[SystemErrors]) -> SystemErrors:
    """All systems pooled (frames weighted equally for E and V, components for F)."""
    sq, ab, n = {}, {}, {}
    pairs = {}
    for k in ("e", "f", "v"):
        refs = [r.pairs[k] for r in results if k in r.pairs]
        if refs:
            ref, pred = np.concatenate([p[0] for p in refs]), np.concatenate([p[1] for p in refs])
            d = pred - ref
            sq[k], ab[k], n[k] = float(np.sqrt(np.mean(d * d))), float(np.mean(np.abs(d))), len(d)
            pairs[k] = (ref, pred)
        else:
            sq[k], ab[k] = math.nan, math.nan
    return SystemErrors("all", sum(r.n_frames for r in results), 0, sq, ab, pairs)


def format_table(results: Sequence[SystemErrors]) -> str:
    """A fixed-width table: system, frames, atoms, RMSE and MAE of E/atom (meV), F (meV/Å), V/atom (meV)."""
    head = (f"{'system':<40} {'frames':>6} {'atoms':>5}  {'E/atom RMSE':>11} {'MAE':>8}  {'F RMSE':>8} {'MAE':>8}  "
            f"{'V/atom RMSE':>11} {'MAE':>8}")
    lines = [head, "-" * len(head)]
    rows = list(results) + ([total_errors(results)] if len(results) > 1 else [])
    for r in rows:
        f = lambda v: "       -" if not math.isfinite(v) else f"{1000 * v:8.2f}"  # noqa: E731
        name = r.name if len(r.name) <= 40 else "..." + r.name[-37:]
        atoms = str(r.n_atoms) if r.n_atoms else ""
        lines.append(f"{name:<40} {r.n_frames:>6} {atoms:>5}  {f(r.rmse['e']):>11} {f(r.mae['e'])}  "
                     f"{f(r.rmse['f'])} {f(r.mae['f'])}  {f(r.rmse['v']):>11} {f(r.mae['v'])}")
    lines.append("units: meV/atom (E, V), meV/Å (F)")
    return "\n".join(lines)


def parity_plots(results: Sequence[SystemErrors], path: Path, title: str = "") -> Path:
    """One PNG with predicted vs reference E/atom, F components and V/atom (all systems pooled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dpa3_al.common.fileio import atomic_write_path as atomic_write

    total = total_errors(results)
    names = {"e": "E/atom (eV)", "f": "F (eV/Å)", "v": "V/atom (eV)"}
    keys = [k for k in names if k in total.pairs]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.0 * len(keys), 3.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        ref, pred = total.pairs[k]
        ax.plot(ref, pred, ".", ms=2, alpha=0.5)
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xlabel(f"reference {names[k]}")
        ax.set_ylabel(f"model {names[k]}")
        ax.set_title(f"RMSE {total.rmse[k]:.3g}, MAE {total.mae[k]:.3g}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)
