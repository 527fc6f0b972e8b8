"""Test-set errors of committee members and of the committee mean.

Metrics (what the benchmark reports everywhere):
  e_rmse   RMSE of the energy per atom [eV/atom]
  f_rmse   RMSE of the force components [eV/Å]
  f_p99, f_p999, f_max   99th / 99.9th percentile and maximum of the per-atom force error
           |F_pred - F_ref| (vector norm) over all test atoms [eV/Å]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

METRICS = ("e_rmse", "f_rmse", "f_p99", "f_p999", "f_max")


def predict(model_path: Path, frames) -> tuple[np.ndarray, list[np.ndarray]]:
    """Energies (n,) [eV] and forces [(natoms, 3)] [eV/Å] of one model on the test frames."""
    from dpa3_al.model import DPA3Calculator

    calc = DPA3Calculator(str(model_path), device="cpu")
    energies, forces = [], []
    for fr in frames:
        a = fr.atoms.copy()
        a.calc = calc
        energies.append(a.get_potential_energy())
        forces.append(np.array(a.get_forces()))
    return np.array(energies), forces


def metrics(energies: np.ndarray, forces: list[np.ndarray], frames) -> dict[str, float]:
    nat = np.array([len(fr.atoms) for fr in frames], dtype=float)
    e_ref = np.array([fr.energy for fr in frames])
    df = np.concatenate([f - fr.forces for f, fr in zip(forces, frames)])
    per_atom = np.linalg.norm(df, axis=1)
    return {"e_rmse": float(np.sqrt(np.mean(((energies - e_ref) / nat) ** 2))),
            "f_rmse": float(np.sqrt(np.mean(df ** 2))),
            "f_p99": float(np.percentile(per_atom, 99)),
            "f_p999": float(np.percentile(per_atom, 99.9)),
            "f_max": float(per_atom.max())}


def predict_batched(model_path: Path, test_dir: Path, frames) -> tuple[np.ndarray, list[np.ndarray]]:
    """As :func:`predict`, through the batched evaluation of ``dpa3-al test`` (packs of ~4096 atoms
    per call: ~10x faster than one calculator call per frame). ``frames`` must be
    :func:`system.read_npy` of ``test_dir`` (same system and frame order)."""
    from dpa3_al.model import load_model
    from dpa3_al.model.train.data import load_systems
    from dpa3_al.model.train.evaluate import evaluate_systems

    results = evaluate_systems(load_model(str(model_path)), load_systems([test_dir]))
    energies, forces = [], []
    for r in sorted(results, key=lambda r: Path(r.name).name):
        e_atom = r.pairs["e"][1]
        f = r.pairs["f"][1].reshape(len(e_atom), -1, 3)
        energies += list(e_atom * f.shape[1])
        forces += list(f)
    if len(energies) != len(frames):
        raise RuntimeError(f"{test_dir}: {len(energies)} frames evaluated, {len(frames)} expected")
    for fr, e, f in zip(frames, energies, forces):   # same order as read_npy: check the atom counts
        if len(fr.atoms) != len(f):
            raise RuntimeError("batched evaluation returned frames in another order than read_npy")
    return np.array(energies), forces


def evaluate_committee(model_paths: list[Path], frames, test_dir: Path | None = None) -> dict[str, dict[str, float]]:
    """Metrics of each member (keys '0', '1', ...) and of the committee mean ('mean')."""
    import torch

    torch.set_num_threads(1)   # the benchmark machine is shared: one thread contends least
    if test_dir is not None:
        preds = [predict_batched(p, test_dir, frames) for p in model_paths]
    else:
        preds = [predict(p, frames) for p in model_paths]
    out = {str(i): metrics(e, f, frames) for i, (e, f) in enumerate(preds)}
    e_mean = np.mean([e for e, _ in preds], axis=0)
    f_mean = [np.mean([f[k] for _, f in preds], axis=0) for k in range(len(frames))]
    out["mean"] = metrics(e_mean, f_mean, frames)
    return out
