"""The benchmark system: a 32-atom Cu-Au alloy with exact EMT labels (ASE's EMT).

Two starting cells (2x2x2 conventional fcc supercells): Cu24Au8 at a = 3.75 Å and Cu16Au16 with
one vacancy (31 atoms) at a = 3.87 Å. Reference data (initial labels, the held-out test set and
the random-frame pool of arm (c)) come from ASE Langevin MD with EMT at the loop's conditions,
written as deepmd npy (the project's ``init_data`` format).

Units: eV, Å, fs, K; virial eV (= -stress x volume).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

TYPE_MAP = ("Cu", "Au")  # model type order (the project sorts by atomic number too)


def start_cells(seed: int = 7) -> list[Atoms]:
    """The two starting cells (fixed substitution pattern, seeded)."""
    rng = np.random.default_rng(seed)
    cells = []
    for a, n_au, vacancy in ((3.75, 8, False), (3.87, 16, True)):
        atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 2))
        idx = rng.choice(len(atoms), size=n_au, replace=False)
        symbols = np.array(atoms.get_chemical_symbols())
        symbols[idx] = "Au"
        atoms.set_chemical_symbols(symbols.tolist())
        if vacancy:
            del atoms[int(rng.integers(len(atoms)))]
        cells.append(atoms)
    return cells


def write_cells(path: Path) -> list[Atoms]:
    cells = start_cells()
    write(path, cells, format="extxyz")
    return cells


@dataclass
class Frame:
    """One labeled frame (EMT)."""

    atoms: Atoms
    energy: float        # eV
    forces: np.ndarray   # (n, 3) eV/Å
    virial: np.ndarray   # (3, 3) eV
    info: dict


class CountingEMT(EMT):
    """EMT that counts its calls (reference-call accounting)."""

    calls = 0

    def calculate(self, *args, **kwargs):
        CountingEMT.calls += 1
        super().calculate(*args, **kwargs)


def label(atoms: Atoms, **info) -> Frame:
    a = atoms.copy()
    a.calc = CountingEMT()
    e = a.get_potential_energy()
    f = a.get_forces()
    vir = -a.get_stress(voigt=False) * a.get_volume()
    return Frame(atoms.copy(), float(e), np.array(f), np.array(vir), dict(info))


def perturbed(cells: list[Atoms], copies: int, seed: int, atom: float = 0.1, cell: float = 0.03) -> list[Frame]:
    """``copies`` randomly perturbed, labeled copies of each cell (the initial data)."""
    rng = np.random.default_rng(seed)
    out = []
    for ci, c in enumerate(cells):
        for k in range(copies):
            a = c.copy()
            strain = np.eye(3) + rng.uniform(-cell, cell, (3, 3))
            a.set_cell(a.cell.array @ strain, scale_atoms=True)
            a.positions += rng.uniform(-atom, atom, a.positions.shape)
            out.append(label(a, cell=ci, copy=k))
    return out


def md_frames(cell: Atoms, temp: float, steps: int, every: int, seed: int, timestep: float = 2.0,
              friction: float = 0.01, skip_first: bool = False) -> list[Frame]:
    """EMT Langevin MD from ``cell`` at ``temp`` K: the frames every ``every`` steps (step 0
    included unless ``skip_first``), as the loop's exploration tasks record them."""
    rng = np.random.default_rng(seed)
    a = cell.copy()
    a.calc = CountingEMT()
    MaxwellBoltzmannDistribution(a, temperature_K=temp, rng=rng)
    Stationary(a)
    dyn = Langevin(a, timestep * units.fs, temperature_K=temp, friction=friction / units.fs, rng=rng)
    out: list[Frame] = []

    def record() -> None:
        step = dyn.nsteps
        if skip_first and step == 0:
            return
        vir = -a.get_stress(voigt=False) * a.get_volume()
        b = a.copy()
        b.calc = None
        out.append(Frame(b, float(a.get_potential_energy()), a.get_forces().copy(), vir,
                         {"temp": temp, "step": step}))

    dyn.attach(record, interval=every)
    dyn.run(steps)
    return out


def write_npy(frames: list[Frame], root: Path) -> list[Path]:
    """deepmd npy systems under ``root`` (one per composition; atoms sorted by type)."""
    groups: dict[str, list[Frame]] = {}
    for fr in frames:
        groups.setdefault(fr.atoms.get_chemical_formula(), []).append(fr)
    dirs = []
    for formula, frs in sorted(groups.items()):
        d = root / formula
        (d / "set.000").mkdir(parents=True, exist_ok=True)
        types = np.array([TYPE_MAP.index(s) for s in frs[0].atoms.get_chemical_symbols()])
        order = np.argsort(types, kind="stable")
        (d / "type_map.raw").write_text("\n".join(TYPE_MAP) + "\n")
        (d / "type.raw").write_text("\n".join(str(t) for t in types[order]) + "\n")
        np.save(d / "set.000" / "coord.npy", np.stack([f.atoms.positions[order].ravel() for f in frs]))
        np.save(d / "set.000" / "box.npy", np.stack([f.atoms.cell.array.ravel() for f in frs]))
        np.save(d / "set.000" / "energy.npy", np.array([f.energy for f in frs]))
        np.save(d / "set.000" / "force.npy", np.stack([f.forces[order].ravel() for f in frs]))
        np.save(d / "set.000" / "virial.npy", np.stack([f.virial.ravel() for f in frs]))
        dirs.append(d)
    return dirs


def read_npy(root: Path) -> list[Frame]:
    """Frames of every deepmd npy system under ``root`` (as :func:`write_npy` writes them)."""
    out = []
    for tr in sorted(root.rglob("type.raw")):
        d = tr.parent
        tmap = (d / "type_map.raw").read_text().split()
        symbols = [tmap[int(t)] for t in tr.read_text().split()]
        for s in sorted(d.glob("set.*")):
            coord, box = np.load(s / "coord.npy"), np.load(s / "box.npy")
            en, fo = np.load(s / "energy.npy"), np.load(s / "force.npy")
            vir = np.load(s / "virial.npy") if (s / "virial.npy").is_file() else np.zeros((len(en), 9))
            for i in range(len(en)):
                a = Atoms(symbols, positions=coord[i].reshape(-1, 3), cell=box[i].reshape(3, 3), pbc=True)
                out.append(Frame(a, float(en[i]), fo[i].reshape(-1, 3), vir[i].reshape(3, 3), {"system": d.name}))
    return out
