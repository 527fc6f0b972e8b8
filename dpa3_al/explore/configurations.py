"""Starting structures for MD tasks: read from files or generated, then replicated,
substituted and perturbed with a seed.

Every structure comes with a short provenance label (e.g. ``water.extxyz[3]`` or
``Cu-fcc 3x3x3 sub0 pert2``) that ends up in ``task.json`` and in the selected frames.
Lengths in Å.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from ase import Atoms

from dpa3_al.common.errors import InputError

from .config import ConfigurationSpec, LatticeSpec, PerturbSpec, SubstituteSpec

log = logging.getLogger(__name__)

MAX_ATOMS = 1_000_000
"""Most atoms in one starting structure (checked before a supercell is built)."""

MAX_POOL_ATOMS = 20_000_000
"""Most atoms in all structures of one configuration source (copies included), checked before
any copy is made: a supercell or copy count that would need tens of GiB is refused, not tried."""


@dataclass(frozen=True)
class Configuration:
    """One starting structure and where it came from."""

    atoms: Atoms
    label: str


def _clean(atoms: Atoms) -> Atoms:
    """Positions, species, cell and pbc only (no calculator results, no velocities)."""
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def _is_deepmd_dir(path: Path, fmt: str | None) -> bool:
    """A deepmd system, or a folder of them (a dataset, dpdata's mixed layout), by format or by its files."""
    from dpa3_al.model.train.data import find_npy_systems

    return fmt in ("deepmd/npy", "deepmd") or (path.is_dir() and bool(find_npy_systems(path)))


def _read_deepmd(path: Path, index: str) -> list[Atoms]:
    """Frames of a deepmd system (npy, npy/mixed or raw), or of every system below ``path`` (e.g. a
    dataset folder, in sorted order); ``index`` picks among all of them. The project's one deepmd
    reader (dpdata would turn mixed data into one composition)."""
    from dpa3_al.model.train.data import find_npy_systems, read_deepmd_system

    systems = [path] if (path / "type.raw").is_file() else find_npy_systems(path)
    if not systems:
        raise InputError(f"{path}: no deepmd npy system (a folder with type.raw and set.*/coord.npy) in it or "
                         "below it; check `file:` and `format:`")
    frames = [a for p in systems for s in read_deepmd_system(p, labels=False) for a in s.to_atoms(labels=False)]
    return _apply_index(frames, index, path)


def _apply_index(frames: list[Atoms], index: str, path: Path) -> list[Atoms]:
    from ase.io.formats import string2index

    try:
        picked = frames[string2index(index)]
    except (ValueError, IndexError, TypeError) as err:
        raise InputError(f"{path}: index {index!r} does not fit its {len(frames)} frames ({err}); "
                         "use ASE index syntax such as ':' or '0:10'") from None
    picked = picked if isinstance(picked, list) else [picked]
    if not picked:
        raise InputError(f"{path}: index {index!r} selects none of its {len(frames)} frames; "
                         "use ASE index syntax such as ':' or '0:10'")
    return picked


def read_structures(path: Path, index: str = ":", fmt: str | None = None) -> list[Atoms]:
    """Read structures from ``path`` with ASE, falling back to pymatgen (and dpdata for deepmd npy)."""
    if not path.exists():
        raise InputError(f"configuration file {path} does not exist; check `file:` (relative to the config file)")
    if _is_deepmd_dir(path, fmt):
        return [_clean(a) for a in _read_deepmd(path, index)]
    import ase.io

    try:
        frames = ase.io.read(path, index=index, format=fmt)
    except Exception as ase_err:  # noqa: BLE001 - any reader failure: try pymatgen, then report both
        frames = _read_pymatgen(path, ase_err)
        frames = _apply_index(frames, index, path)
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise InputError(f"{path}: no structures selected by index {index!r}")
    return [_clean(a) for a in frames]


def _read_pymatgen(path: Path, ase_err: Exception) -> list[Atoms]:
    try:
        from pymatgen.core import Structure
        from pymatgen.io.ase import AseAtomsAdaptor

        return [AseAtomsAdaptor.get_atoms(Structure.from_file(str(path)))]
    except Exception as pmg_err:  # noqa: BLE001
        raise InputError(f"cannot read structure file {path}: ASE says {ase_err}; pymatgen says {pmg_err}; "
                         "set `format:` to an ASE format name") from None


def build_lattice(spec: LatticeSpec) -> Atoms:
    """One cell of the crystal described by ``spec`` (ase.build.bulk)."""
    from ase.build import bulk

    try:
        return bulk(spec.symbols, spec.crystal, a=spec.a, c=spec.c, cubic=spec.cubic,
                    orthorhombic=spec.orthorhombic)
    except (ValueError, KeyError, RuntimeError) as err:
        raise InputError(f"lattice {spec.symbols} {spec.crystal}: ase.build.bulk refused it ({err}); "
                         "give `crystal` and `a` explicitly") from None


def substitute(atoms: Atoms, spec: SubstituteSpec, rng: np.random.Generator) -> Atoms:
    """Replace ``round(fraction * count)`` randomly chosen ``element`` atoms by ``by``."""
    from ase.data import atomic_numbers

    for sym in (spec.element, spec.by):
        if sym not in atomic_numbers:
            raise InputError(f"substitute: {sym!r} is not a chemical symbol")
    out = atoms.copy()
    sites = np.flatnonzero(out.numbers == atomic_numbers[spec.element])
    count = int(round(spec.fraction * len(sites)))
    chosen = rng.choice(sites, size=count, replace=False) if count else np.array([], dtype=int)
    numbers = out.numbers.copy()
    numbers[chosen] = atomic_numbers[spec.by]
    out.numbers = numbers
    return out


def perturb(atoms: Atoms, spec: PerturbSpec, rng: np.random.Generator) -> Atoms:
    """A copy with a random symmetric cell strain (|e_ij| <= cell) and displacements (|dx| <= atom Å)."""
    out = atoms.copy()
    if spec.cell > 0 and out.cell.rank == 3:
        strain = rng.uniform(-spec.cell, spec.cell, size=(3, 3))
        strain = 0.5 * (strain + strain.T)
        out.set_cell(out.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    if spec.atom > 0:
        out.positions = out.positions + rng.uniform(-spec.atom, spec.atom, size=out.positions.shape)
    return out


def _source(spec: ConfigurationSpec, base_dir: Path) -> list[Configuration]:
    if spec.lattice is not None:
        lat = spec.lattice
        return [Configuration(build_lattice(lat), f"{lat.symbols}-{lat.crystal or 'ref'}")]
    path = spec.file if spec.file.is_absolute() else base_dir / spec.file
    frames = read_structures(path, spec.index, spec.format)
    name = spec.file.name
    return [Configuration(a, f"{name}[{i}]" if len(frames) > 1 else name) for i, a in enumerate(frames)]


def generate(spec: ConfigurationSpec, base_dir: Path, rng: np.random.Generator) -> list[Configuration]:
    """All structures of one configuration source, in a deterministic order for a given ``rng``."""
    confs = _source(spec, base_dir)
    if not confs:
        raise InputError(f"{spec.file or 'lattice'}: no structures selected by index {spec.index!r}")
    check_size(spec, confs)
    if spec.supercell != (1, 1, 1):
        tag = "x".join(str(n) for n in spec.supercell)
        confs = [Configuration(c.atoms.repeat(spec.supercell), f"{c.label} {tag}") for c in confs]
    for k, sub in enumerate(spec.substitute):
        confs = [Configuration(substitute(c.atoms, sub, rng), f"{c.label} sub{k}.{j}")
                 for c in confs for j in range(sub.copies)]
    if spec.perturb is not None:
        p = spec.perturb
        out = []
        for c in confs:
            if p.keep_original:
                out.append(c)
            out.extend(Configuration(perturb(c.atoms, p, rng), f"{c.label} pert{j}") for j in range(p.copies))
        confs = out
    return confs


def check_size(spec: ConfigurationSpec, confs: list[Configuration]) -> None:
    """Refuse (before anything is allocated) structures over MAX_ATOMS atoms after the supercell,
    and sources whose copies would hold over MAX_POOL_ATOMS atoms in all."""
    reps = math.prod(spec.supercell)
    largest = max(confs, key=lambda c: len(c.atoms))
    atoms = len(largest.atoms) * reps
    if atoms > MAX_ATOMS:
        raise InputError(f"supercell {list(spec.supercell)} of {largest.label} ({len(largest.atoms)} atoms) makes "
                         f"{atoms:,} atoms; the limit is {MAX_ATOMS:,} atoms per starting structure: "
                         "use a smaller supercell")
    copies = 1
    for sub in spec.substitute:
        copies *= sub.copies
    if spec.perturb is not None:
        copies *= spec.perturb.copies + int(spec.perturb.keep_original)
    total = sum(len(c.atoms) for c in confs) * reps * copies
    if total > MAX_POOL_ATOMS:
        raise InputError(f"{len(confs) * copies:,} structures of up to {atoms:,} atoms ({total:,} atoms in all, "
                         f"from {len(confs)} source structure(s) x {copies:,} copies) exceed the limit of "
                         f"{MAX_POOL_ATOMS:,} atoms per configuration source; use fewer copies or a smaller supercell")


def check_copies(spec: ConfigurationSpec, base_dir: Path, perturb: PerturbSpec) -> None:
    """:func:`check_size` of ``spec`` with ``perturb`` in place of its own perturbation (the
    bootstrap's copies), reading the source structures only."""
    check_size(replace(spec, perturb=perturb), _source(spec, base_dir))


def build_pool(specs: list[ConfigurationSpec], base_dir: Path, seed: int) -> list[Configuration]:
    """The configuration pool of a task group: every source in order, each with its own seeded stream."""
    pool: list[Configuration] = []
    for k, spec in enumerate(specs):
        rng = np.random.default_rng(np.random.SeedSequence([seed, k, 2]))
        pool.extend(generate(spec, base_dir, rng))
    return pool


def sample(pool_size: int, n_sample: int | None, rng: np.random.Generator) -> list[int]:
    """Indices of the configurations used in one iteration (sorted); all when ``n_sample`` is None."""
    if n_sample is None or n_sample >= pool_size:
        if n_sample is not None and n_sample > pool_size:
            log.info("n_sample %d > %d configurations: using all", n_sample, pool_size)
        return list(range(pool_size))
    return sorted(int(i) for i in rng.choice(pool_size, size=n_sample, replace=False))
