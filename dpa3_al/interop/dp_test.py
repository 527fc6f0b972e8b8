"""``dpa3-al test -d PREFIX``: the detail files of deepmd-kit's ``dp test -d PREFIX``.

Files (``Path(PREFIX).with_suffix(...)``, as deepmd-kit names them), one block per system, each
block headed by ``# <system>: <columns>``, values as numpy's ``savetxt`` writes them (%.18e):

- ``.e.out`` ``data_e pred_e`` (eV per frame) and ``.e_peratom.out`` (the same / atoms, eV/atom);
- ``.f.out`` ``data_fx data_fy data_fz pred_fx pred_fy pred_fz`` (eV/Å, one row per atom);
- ``.v.out`` ``data_vxx ... data_vzz pred_vxx ... pred_vzz`` (eV, the 3x3 virial row-major, one
  row per frame) and ``.v_peratom.out`` (eV/atom).

Difference from deepmd-kit: frames without a virial label are left out of the virial files
(deepmd-kit writes zeros as their reference); every frame of every set is evaluated (deepmd-kit
evaluates the last set of a system only), and mixed-type data come as one block per composition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

SUFFIXES = (".e.out", ".e_peratom.out", ".f.out", ".v.out", ".v_peratom.out")
_V = " ".join(f"data_v{a}{b}" for a in "xyz" for b in "xyz") + " " + " ".join(
    f"pred_v{a}{b}" for a in "xyz" for b in "xyz")
HEADERS = {".e.out": "data_e pred_e", ".e_peratom.out": "data_e pred_e",
           ".f.out": "data_fx data_fy data_fz pred_fx pred_fy pred_fz", ".v.out": _V, ".v_peratom.out": _V}


def write_detail_files(results: Sequence[Any], systems: Sequence[Any], prefix: Path) -> list[Path]:
    """Write the detail files for ``results`` (``SystemErrors`` of ``model/train/evaluate.py``, whose
    ``pairs`` hold the predictions: e eV/atom, f flat eV/Å, v flat eV/atom) of ``systems`` (the
    ``DataSystem`` each result is for, giving the reference labels as read). Returns the paths written."""
    prefix = Path(prefix)
    paths = {suffix: prefix.with_suffix(suffix) for suffix in SUFFIXES}
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written: set[Path] = set()
    for result, system in zip(results, systems, strict=True):
        for suffix, rows in _blocks(result, system).items():
            mode = "ab" if paths[suffix] in written else "wb"
            with open(paths[suffix], mode) as handle:
                np.savetxt(handle, rows, header=f"{result.name}: {HEADERS[suffix]}")
            written.add(paths[suffix])
    for path in paths.values():
        if path not in written:
            path.unlink(missing_ok=True)     # no stale file of an earlier run next to the new ones
    return sorted(written)


def _blocks(result: Any, system: Any) -> dict[str, np.ndarray]:
    nat = system.n_atoms
    pred_e = result.pairs["e"][1] * nat
    energy = np.stack([system.energy, pred_e], axis=1)
    forces = np.concatenate([system.forces.reshape(-1, 3), result.pairs["f"][1].reshape(-1, 3)], axis=1)
    out = {".e.out": energy, ".e_peratom.out": energy / nat, ".f.out": forces}
    if "v" in result.pairs:
        pred_v = result.pairs["v"][1].reshape(-1, 9) * nat
        virial = np.concatenate([system.virial[system.has_virial].reshape(-1, 9), pred_v], axis=1)
        out[".v.out"], out[".v_peratom.out"] = virial, virial / nat
    return out
