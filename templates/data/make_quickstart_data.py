"""Regenerate the quickstart's starting structure and initial labels (GFN2-xTB via tblite).

    python templates/data/make_quickstart_data.py

water-box.extxyz   8 water molecules in a periodic cubic box of 6.21 Å (~1.0 g/cm^3)
water-init/        24 frames labeled with GFN2-xTB (deepmd npy, one system): 12 from a short
                   GFN2-xTB Langevin MD at 350 K (every 5th of 60 steps of 0.5 fs) and 12 copies
                   of those rattled by up to 0.03 Å (about the thermal amplitude) with 1 % strain
Deterministic (seeded); takes about 5 minutes on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import molecule

HERE = Path(__file__).resolve().parent


def water_box(n_side: int = 2, box: float = 6.21, seed: int = 7) -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = Atoms(cell=np.eye(3) * box, pbc=True)
    spacing = box / n_side
    for i in range(n_side):
        for j in range(n_side):
            for k in range(n_side):
                w = molecule("H2O")
                w.rotate(rng.uniform(0, 360), rng.normal(size=3))
                w.positions += (np.array([i, j, k]) + 0.5) * spacing - w.get_center_of_mass()
                atoms += w
    return atoms


def _md_frames(box: Atoms, calc_class) -> list[Atoms]:
    """Every 5th frame of a 60-step GFN2-xTB Langevin MD at 350 K (0.5 fs)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    atoms = box.copy()
    atoms.calc = calc_class(method="GFN2-xTB", verbosity=0)
    MaxwellBoltzmannDistribution(atoms, temperature_K=350, rng=np.random.default_rng(3))
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=350, friction=0.02 / units.fs,
                   rng=np.random.default_rng(4))
    frames = []
    for _ in range(12):
        dyn.run(5)
        frames.append(Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True))
    return frames


def main() -> None:
    from ase.calculators.singlepoint import SinglePointCalculator
    from tblite.ase import TBLite

    from dpa3_al.dataset import LabeledDataset, Provenance

    box = water_box()
    box.write(HERE / "water-box.extxyz")
    md_frames = _md_frames(box, TBLite)
    rng = np.random.default_rng(11)
    frames = []
    for k, base in enumerate(md_frames + md_frames):
        a = base.copy()
        if k >= len(md_frames):
            strain = np.eye(3) + np.diag(rng.uniform(-0.01, 0.01, 3))
            a.set_cell(a.cell.array @ strain, scale_atoms=True)
            a.positions += rng.uniform(-0.03, 0.03, a.positions.shape)
        a.calc = TBLite(method="GFN2-xTB", verbosity=0)
        a.calc = SinglePointCalculator(a, energy=a.get_potential_energy(), forces=a.get_forces(),
                                       stress=a.get_stress())
        frames.append(a)
        print(f"frame {k}: {a.get_potential_energy():.4f} eV, |F|max {np.abs(a.get_forces()).max():.2f} eV/Å")
    out = HERE / "water-init"
    ds = LabeledDataset(out)
    report = ds.add(frames, Provenance(iteration=None, source="quickstart initial data: GFN2-xTB (tblite)"))
    print(report)


if __name__ == "__main__":
    main()
