"""Committee (ensemble) model deviation, exactly as deepmd-kit's ``calc_model_devi``.

Definitions (M models, N atoms; std is the population std over models, ddof 0):
  force   d_i = sqrt(mean_m |F_i^m - <F_i>|^2); max/min/avg_devi_f = max/min/mean_i d_i  [eV/Å]
  energy  devi_e = std_m(E^m / N)                                                      [eV/atom]
  virial  s_c = std_m(W_c^m / N) over the 9 components; max/min_devi_v = max/min_c s_c,
          avg_devi_v = ||s||_2 / 3  (deepmd-kit's convention, not the arithmetic mean)  [eV/atom]
Keys and column order follow deepmd-kit's ``model_devi.out``.
"""

from __future__ import annotations

import numpy as np

DEVI_KEYS = ("max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f", "devi_e")


def force_deviation(forces: np.ndarray) -> np.ndarray:
    """Per-atom force deviation d_i. ``forces``: (M, N, 3) eV/Å -> (N,) eV/Å."""
    forces = np.asarray(forces, dtype=np.float64)
    return np.sqrt(np.mean(np.sum((forces - forces.mean(axis=0)) ** 2, axis=-1), axis=0))


def model_deviation(energies: np.ndarray, forces: np.ndarray, virials: np.ndarray | None) -> dict[str, float]:
    """The seven deviation scalars of one frame.

    Args:
        energies: (M,) total energies [eV].
        forces: (M, N, 3) forces [eV/Å].
        virials: (M, 3, 3) virials [eV], or None (then the virial deviations are NaN).
    Returns:
        dict with the keys of :data:`DEVI_KEYS` (floats; NaN propagates from NaN inputs).
    """
    energies = np.asarray(energies, dtype=np.float64)
    forces = np.asarray(forces, dtype=np.float64)
    natoms = forces.shape[1]
    d = force_deviation(forces)
    out = {
        "max_devi_f": float(d.max()) if natoms else 0.0,
        "min_devi_f": float(d.min()) if natoms else 0.0,
        "avg_devi_f": float(d.mean()) if natoms else 0.0,
        "devi_e": float(np.std(energies / max(natoms, 1))),
    }
    if virials is None:
        out.update(max_devi_v=float("nan"), min_devi_v=float("nan"), avg_devi_v=float("nan"))
    else:
        s = np.std(np.asarray(virials, dtype=np.float64).reshape(len(energies), 9) / max(natoms, 1), axis=0)
        out.update(max_devi_v=float(s.max()), min_devi_v=float(s.min()), avg_devi_v=float(np.linalg.norm(s) / 3.0))
    if np.isnan(forces).any():  # a NaN force must not hide behind max(): the frame is failed
        out.update(max_devi_f=float("nan"), avg_devi_f=float("nan"))
    return {k: out[k] for k in DEVI_KEYS}
