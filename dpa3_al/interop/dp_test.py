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

SUFFIXES = (".e.out", ".e_peratom.out", ".f.out", ".v.out", ".v_peratom.out")


def write_detail_files(results: Sequence[Any], systems: Sequence[Any], prefix: Path) -> list[Path]:
    """Write the detail files for ``results`` (``SystemErrors`` of ``model/train/evaluate.py``, whose
    ``pairs`` hold the predictions: e eV/atom, f flat eV/Å, v flat eV/atom, the latter for the
    frames with a virial label) of ``systems`` (the ``DataSystem`` each result is for, giving the
    reference labels as read), through the one writer of the format. Returns the paths written."""
    from dpa3_al.model.interop.deepmd_formats import write_test_detail

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for suffix in SUFFIXES:
        prefix.with_suffix(suffix).unlink(missing_ok=True)    # no stale file of an earlier run beside the new ones
    written: set[Path] = set()
    for result, system in zip(results, systems, strict=True):
        nat = system.n_atoms
        pred = {"energy": result.pairs["e"][1] * nat, "force": result.pairs["f"][1]}
        data = {"energy": system.energy, "force": system.forces}
        if "v" in result.pairs:
            pred["virial"] = result.pairs["v"][1].reshape(-1, 9) * nat
            data["virial"] = system.virial[system.has_virial]
        written.update(write_test_detail(prefix, result.name, nat, pred, data))
    return sorted(written)
