"""Text files that deepmd-kit users' scripts read: ``model_devi.out`` and ``dp test -d`` detail files.

``model_devi.out`` as LAMMPS' ``pair_style deepmd ... out_freq N out_file model_devi.out`` writes it
(what dpgen2 parses: column 0 step, 1-3 max/min/avg virial deviation (eV, per atom as deepmd-kit
normalises it), 4-6 max/min/avg force deviation (eV/Å))::

    #       step         max_devi_v         min_devi_v         avg_devi_v         max_devi_f         min_devi_f         avg_devi_f
               0       2.257760e-02       4.354758e-05       1.295121e-02       9.713095e-03       4.773851e-04       4.548129e-03

(step right-aligned in 12 characters, each value ``%19.6e``; ``dp model-devi`` adds ``devi_e`` as an
eighth column, written here with ``devi_e=True``.)

``dp test -d PREFIX`` detail files, one block per system, appended, ``%.18e`` separated by spaces::

    PREFIX.e.out          # SYSTEM: data_e pred_e                       (eV per frame)
    PREFIX.e_peratom.out  # SYSTEM: data_e pred_e                       (eV/atom)
    PREFIX.f.out          # SYSTEM: data_fx data_fy data_fz pred_fx pred_fy pred_fz   (eV/Å, one row per atom)
    PREFIX.v.out          # SYSTEM: data_vxx ... data_vzz pred_vxx ... pred_vzz      (eV)
    PREFIX.v_peratom.out  same columns, divided by the number of atoms

A label the data do not have is written as zeros, as ``dp test`` does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

DEVI_COLUMNS = ("max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f")
_V = [f"v{a}{b}" for a in "xyz" for b in "xyz"]


def model_devi_header(devi_e: bool = False) -> str:
    names = DEVI_COLUMNS + (("devi_e",) if devi_e else ())
    return "#" + f"{'step':>11s}" + "".join(f"{n:>19s}" for n in names)


def format_model_devi_rows(steps: Sequence[int], rows: Sequence[Mapping[str, float]], devi_e: bool = False) -> str:
    """Lines (no header) for ``steps`` and their deviation dicts (keys of ``DEVI_COLUMNS`` [+ devi_e])."""
    names = DEVI_COLUMNS + (("devi_e",) if devi_e else ())
    if len(steps) != len(rows):
        raise ValueError(f"{len(steps)} steps but {len(rows)} deviation rows")
    return "".join(f"{int(s):12d}" + "".join(f"{float(r[n]):19.6e}" for n in names) + "\n"
                   for s, r in zip(steps, rows))


def write_model_devi_out(path: str | os.PathLike, steps: Sequence[int], rows: Sequence[Mapping[str, float]],
                         devi_e: bool = False, append: bool = False) -> Path:
    """Write (or append rows to) ``model_devi.out`` in LAMMPS/deepmd-kit's layout."""
    path = Path(path)
    new = not append or not path.exists() or path.stat().st_size == 0
    with open(path, "a" if append else "w") as f:
        if new:
            f.write(model_devi_header(devi_e) + "\n")
        f.write(format_model_devi_rows(steps, rows, devi_e))
    return path


def read_model_devi_out(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(steps (n,), {column: (n,)}) of a ``model_devi.out`` (LAMMPS' 7 columns, or 8 with devi_e)."""
    data = np.loadtxt(path, ndmin=2)
    names = DEVI_COLUMNS + (("devi_e",) if data.shape[1] == 8 else ())
    if data.shape[1] not in (7, 8):
        raise ValueError(f"{path}: {data.shape[1]} columns; a model_devi.out has 7 (LAMMPS) or 8 (dp model-devi)")
    return data[:, 0].astype(np.int64), {n: data[:, i + 1] for i, n in enumerate(names)}


def write_test_detail(prefix: str | os.PathLike, system: str, natoms: int, pred: Mapping[str, np.ndarray],
                      data: Mapping[str, np.ndarray | None]) -> list[Path]:
    """Append one system's block to ``dp test -d PREFIX``'s detail files (named as deepmd-kit names
    them: ``Path(PREFIX).with_suffix(".e.out")`` ...).

    Args:
        prefix: PREFIX of ``PREFIX.e.out`` etc.
        system: the name written in each block's header (dp test writes the system path).
        natoms: atoms per frame.
        pred, data: ``energy`` (nf,) eV, ``force`` (nf, natoms, 3) eV/Å, ``virial`` (nv, 3, 3) eV;
            a missing or None entry of ``data`` is written as zeros. Without ``pred["virial"]`` the
            two virial files get no block (the model or the data have none).
    Returns the paths written to.
    """
    nf = len(np.asarray(pred["energy"]).reshape(-1))

    def arr(src: Mapping, key: str, shape: tuple) -> np.ndarray:
        value = src.get(key)
        return np.zeros(shape) if value is None else np.asarray(value, dtype=np.float64).reshape(shape)

    e = np.column_stack([arr(data, "energy", (nf,)), arr(pred, "energy", (nf,))])
    f = np.hstack([arr(data, "force", (nf * natoms, 3)), arr(pred, "force", (nf * natoms, 3))])
    blocks = {".e.out": (e, "data_e pred_e"), ".e_peratom.out": (e / natoms, "data_e pred_e"),
              ".f.out": (f, "data_fx data_fy data_fz pred_fx pred_fy pred_fz")}
    if pred.get("virial") is not None:
        pv = np.asarray(pred["virial"], dtype=np.float64).reshape(-1, 9)
        v = np.hstack([arr(data, "virial", pv.shape), pv])
        vcols = " ".join([f"data_{c}" for c in _V] + [f"pred_{c}" for c in _V])
        blocks.update({".v.out": (v, vcols), ".v_peratom.out": (v / natoms, vcols)})
    paths = []
    for suffix, (values, cols) in blocks.items():
        path = Path(prefix).with_suffix(suffix)
        with open(path, "ab") as handle:
            np.savetxt(handle, values, header=f"{system}: {cols}")
        paths.append(path)
    return paths
