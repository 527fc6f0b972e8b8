"""deepmd-kit's data layouts, read as deepmd-kit reads them: the one reader and system finder
for training, ``dpa3-al test``, the dataset and starting structures.

A system is a directory (or an HDF5 group) holding ``type.raw`` (one type index per atom),
optionally ``type_map.raw`` (element names) and ``nopbc``, and its frames as either

- ``set.NNN/{coord,box,energy,force}.npy [virial.npy]`` (deepmd/npy),
- the same plus ``set.NNN/real_atom_types.npy`` (deepmd/npy/mixed: per-frame types indexing
  ``type_map.raw``, -1 = a virtual padding atom; ``type.raw`` only gives the atom count),
- ``{coord,box,energy,force}.raw [virial.raw]`` beside ``type.raw`` (deepmd/raw; set.* win if
  both exist, as in deepmd-kit), or
- groups of an HDF5 file with the deepmd/npy layout inside (deepmd/hdf5, dpdata's
  ``to("deepmd/hdf5")``; ``file.h5#/path`` picks a group, as in deepmd-kit).

A mixed system becomes one :class:`DataSystem` per distinct per-frame type row (virtual atoms
removed), named ``<system>#k`` when there are several: the same frames and labels deepmd-kit
trains on. Files that change what the data means and that this project cannot honour
(``fparam``, ``aparam``, ``spin``, ``force_mag``, ``efield``, ``numb_copy``) are refused with
what to do; other label files (``atom_ener``, ``atom_pref``, ``dipole``...) are not read, as
deepmd-kit's energy training does not read them. Units: Å, eV, eV/Å; virial eV.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dpa3_al.common.errors import InputError

from .system import DataSystem

SET_RE = re.compile(r"^set\.\d+$")
H5_SUFFIXES = (".h5", ".hdf5")
DIR_FORMATS = ("deepmd/npy", "deepmd", "deepmd/raw", "deepmd/npy/mixed")
H5_FORMATS = ("deepmd/hdf5", "deepmd/hdf5/mixed")
REFUSED = {
    "fparam": "frame parameters (model inputs) that DPA3 models here do not take",
    "aparam": "atomic parameters (model inputs) that DPA3 models here do not take",
    "spin": "atomic spins (a spin model's input)", "force_mag": "magnetic forces (a spin model's labels)",
    "efield": "an electric field (a model input)", "numb_copy": "per-frame training copies (frame weights)",
}


# ---------------------------------------------------------------------------- storage nodes


class _DirNode:
    """A directory: ``*.npy`` through numpy, ``*.raw`` as text."""

    def __init__(self, path: Path):
        self.path, self.label = Path(path), str(path)

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def text(self, name: str) -> list[str]:
        return (self.path / name).read_text().split()

    def array(self, name: str) -> np.ndarray:
        if name.endswith(".raw"):
            return np.loadtxt(self.path / name, ndmin=2)
        return np.load(self.path / name, allow_pickle=False)

    def sets(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir() if p.is_dir() and SET_RE.match(p.name))

    def child(self, name: str) -> "_DirNode":
        return _DirNode(self.path / name)


class _H5Node:
    """A group of an HDF5 file (dpdata's deepmd/hdf5: datasets named like the files)."""

    def __init__(self, group: Any, label: str):
        self.group, self.label = group, label

    def has(self, name: str) -> bool:
        return name in self.group

    def text(self, name: str) -> list[str]:
        data = np.atleast_1d(self.group[name][()])
        return [x.decode() if isinstance(x, bytes) else str(x) for x in data.reshape(-1)]

    def array(self, name: str) -> np.ndarray:
        return np.asarray(self.group[name][()])

    def sets(self) -> list[str]:
        import h5py

        return sorted(k for k, v in self.group.items() if SET_RE.match(k) and isinstance(v, h5py.Group))

    def child(self, name: str) -> "_H5Node":
        return _H5Node(self.group[name], f"{self.label}/{name}")


# ---------------------------------------------------------------------------- finding systems


def find_npy_systems(root: Path) -> list[Path]:
    """Directories under ``root`` (itself included) holding a deepmd system (``type.raw``);
    folders whose name starts with a dot are skipped."""
    root = Path(root)
    found = [root] if (root / "type.raw").is_file() else []
    found += sorted(p.parent for p in root.rglob("type.raw") if p.parent != root
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return found


def is_hdf5_path(path: Path | str) -> bool:
    """``path`` names an HDF5 file (``.h5``/``.hdf5``, optionally ``#/group``)."""
    return Path(str(path).partition("#")[0]).suffix in H5_SUFFIXES


def read_deepmd_dir(path: Path) -> list[DataSystem]:
    """Every deepmd system under directory ``path`` (npy, npy/mixed or raw, recognised by their files)."""
    found = find_npy_systems(path)
    if not found:
        raise InputError(f"{path}: no deepmd npy system or deepmd/raw system (a directory with type.raw and set.*/ or "
                         "coord.raw) found in it; for other formats give fmt (e.g. vasp/outcar) or an .extxyz/.h5 file")
    return [s for p in found for s in read_deepmd_system(p)]


def read_hdf5(path: Path | str) -> list[DataSystem]:
    """Every system (group holding ``type.raw``) in an HDF5 file, or below ``file.h5#/group``."""
    import h5py

    file, _, inner = str(path).partition("#")
    if not Path(file).is_file():
        raise InputError(f"{file}: no such file (deepmd/hdf5 data)")
    systems: list[DataSystem] = []
    with h5py.File(file, "r") as handle:
        root = handle[inner] if inner.strip("/") else handle
        names = [""] if "type.raw" in root else []
        root.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Group)
                        and "type.raw" in obj and not SET_RE.match(name.rsplit("/", 1)[-1]) else None)
        if not names:
            raise InputError(f"{path}: no deepmd system (a group holding type.raw and set.*) in this HDF5 file")
        for name in sorted(names):
            group = root[name] if name else root
            systems += _read_node(_H5Node(group, f"{file}#{group.name}"))
    return systems


# ---------------------------------------------------------------------------- one system


def read_deepmd_system(path: Path, sets: Sequence[str] | None = None, labels: bool = True) -> list[DataSystem]:
    """One deepmd system directory (npy, npy/mixed or raw); ``sets`` reads only those set.NNN.
    One DataSystem, or one per atom-type row for mixed data. ``labels=False`` reads structures
    (energy and forces optional, zero when absent: for starting structures, never for training)."""
    return _read_node(_DirNode(Path(path)), sets, labels)


def read_npy_system(path: Path) -> DataSystem:
    """One deepmd system directory as one DataSystem (InputError for mixed data of several compositions)."""
    systems = read_deepmd_system(path)
    if len(systems) != 1:
        raise InputError(f"{path}: mixed-type data with {len(systems)} compositions; read it with load_systems")
    return systems[0]


def _read_node(node, sets: Sequence[str] | None = None, labels: bool = True) -> list[DataSystem]:
    types = _read_types(node)
    elements = node.text("type_map.raw") if node.has("type_map.raw") else None
    periodic = not node.has("nopbc")
    set_names = list(sets) if sets is not None else node.sets()
    if set_names:
        parts = [_read_set(node.child(s), ".npy", len(types), periodic, labels) for s in set_names]
    elif node.has("coord.raw"):
        parts = [_read_set(node, ".raw", len(types), periodic, labels)]
    else:
        raise InputError(f"{node.label}: empty system: no set.* folder (deepmd/npy) and no coord.raw (deepmd/raw)")
    if sum(p["coord"].shape[0] for p in parts) == 0:
        raise InputError(f"{node.label}: empty system: its sets hold 0 frames")
    mixed = {p["real_types"] is not None for p in parts}
    if len(mixed) > 1:
        raise InputError(f"{node.label}: some sets have real_atom_types.npy (mixed type) and some do not; deepmd-kit "
                         "requires all sets of a system in one format: convert it again with dpdata")
    cat = {k: np.concatenate([p[k] for p in parts]) for k in ("coord", "energy", "force", "virial", "has_virial")}
    cells = np.concatenate([p["box"] for p in parts]) if periodic else None
    if mixed == {True}:
        return _split_mixed(node, elements, np.concatenate([p["real_types"] for p in parts]), cat, cells)
    if elements is not None and types.max() >= len(elements):
        raise InputError(f"{node.label}/type.raw: type index {int(types.max())} but type_map.raw names only "
                         f"{len(elements)} elements {elements}")
    return [DataSystem(node.label, elements, types, cat["coord"], cells, cat["energy"], cat["force"],
                       cat["virial"], cat["has_virial"])]


def _read_types(node) -> np.ndarray:
    label = f"{node.label}/type.raw"
    if not node.has("type.raw"):
        raise InputError(f"{label}: missing (every deepmd system needs one type index per atom)")
    try:
        types = np.array([int(float(t)) for t in node.text("type.raw")], dtype=np.int64)
    except ValueError:
        raise InputError(f"{label}: expected one integer type index per line") from None
    if types.size == 0:
        raise InputError(f"{label}: empty (a system needs at least one atom)")
    if types.min() < 0:
        raise InputError(f"{label}: negative type index {int(types.min())}")
    return types


def _split_mixed(node, elements, real: np.ndarray, cat: dict, cells) -> list[DataSystem]:
    """deepmd/npy/mixed: one system per distinct per-frame type row, virtual (-1) atoms removed."""
    if elements is None:
        raise InputError(f"{node.label}: mixed-type data (set.*/real_atom_types.npy) without type_map.raw: the "
                         "per-frame types index type_map.raw; add it (one element name per type index, as dpdata "
                         "writes it)")
    if real.min() < -1 or real.max() >= len(elements):
        bad = int(real.max()) if real.max() >= len(elements) else int(real.min())
        raise InputError(f"{node.label}: real_atom_types.npy holds type {bad}, outside -1 (virtual atom) .. "
                         f"{len(elements) - 1} (type_map.raw {elements})")
    rows, first, inverse = np.unique(real, axis=0, return_index=True, return_inverse=True)
    out = []
    for k, g in enumerate(np.argsort(first)):
        frames = np.flatnonzero(inverse.reshape(-1) == g)
        keep = rows[g] >= 0
        if not keep.any():
            raise InputError(f"{node.label}: frames {frames[:10].tolist()} have only virtual atoms (-1)")
        name = node.label if len(rows) == 1 else f"{node.label}#{k}"
        out.append(DataSystem(name, elements, rows[g][keep].astype(np.int64), cat["coord"][frames][:, keep],
                              None if cells is None else cells[frames], cat["energy"][frames],
                              cat["force"][frames][:, keep], cat["virial"][frames], cat["has_virial"][frames]))
    return out


def _load(node, name: str, required: bool) -> np.ndarray | None:
    if not node.has(name):
        if required:
            raise InputError(f"{node.label}/{name}: missing (every set needs coord, box (also for nopbc), energy "
                             "and force; virial is optional)")
        return None
    try:
        return np.asarray(node.array(name), dtype=np.float64)
    except (ValueError, OSError, TypeError) as err:
        raise InputError(f"{node.label}/{name}: not a readable numeric array ({err})") from None


def _read_set(node, ext: str, nat: int, periodic: bool, labels: bool = True) -> dict[str, Any]:
    """Arrays of one set (or of a deepmd/raw system), checked against coord's frame count."""
    for key, why in REFUSED.items():
        if node.has(key + ext):
            raise InputError(f"{node.label}/{key}{ext}: {why}; this project cannot train on or evaluate such data "
                             f"without changing its meaning: remove the file (only if the labels do not depend on "
                             f"it) or use deepmd-kit for this data")
    coord = _load(node, "coord" + ext, True)
    nf = coord.shape[0] if coord.ndim >= 1 else 0
    arrays = {"coord": (coord, nat * 3)}
    for key, width in (("energy", 1), ("force", nat * 3)):
        arr = _load(node, key + ext, labels)
        arrays[key] = (np.zeros(nf * width) if arr is None else arr, width)
    for key, required in (("box", periodic), ("virial", False)):
        arr = _load(node, key + ext, required)
        if arr is not None:
            arrays[key] = (arr, 9)
    flat = {name: _frames(node, name + ext, arr, nf, width, nat) for name, (arr, width) in arrays.items()}
    cells = flat["box"].reshape(nf, 3, 3) if periodic else None
    if periodic:
        vol = np.abs(np.linalg.det(cells))
        if (vol < 1e-6).any():
            raise InputError(f"{node.label}/box{ext}: zero-volume cell in frame(s) "
                             f"{np.flatnonzero(vol < 1e-6)[:10].tolist()}; for non-periodic data put an empty file "
                             f"'nopbc' in the system folder")
    has_v = "virial" in flat
    real = None
    if node.has("real_atom_types" + ext):
        real = _frames(node, "real_atom_types" + ext, _load(node, "real_atom_types" + ext, True), nf, nat, nat)
        if not np.array_equal(real, np.round(real)):
            raise InputError(f"{node.label}/real_atom_types{ext}: non-integer atom types")
        real = real.astype(np.int64)
    return {"coord": flat["coord"].reshape(nf, nat, 3), "box": cells, "energy": flat["energy"].reshape(nf),
            "force": flat["force"].reshape(nf, nat, 3),
            "virial": flat["virial"].reshape(nf, 3, 3) if has_v else np.zeros((nf, 3, 3)),
            "has_virial": np.full(nf, has_v), "real_types": real}


def _frames(node, name: str, arr: np.ndarray, nf: int, width: int, nat: int) -> np.ndarray:
    if arr.size != nf * width:
        raise InputError(f"{node.label}/{name}: shape {arr.shape} does not fit {nf} frames of {nat} atoms (expected "
                         f"{nf} x {width} values, as coord has {nf} frames and type.raw {nat} atoms)")
    out = arr.reshape(nf, width)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise InputError(f"{node.label}/{name}: NaN or infinite values in frame(s) "
                         f"{np.flatnonzero(bad)[:10].tolist()}; remove or relabel these frames")
    return out
