"""Regenerate the quickstart's starting structure and initial labels (GFN2-xTB via tblite).

    python templates/data/make_quickstart_data.py

water-box.extxyz   8 water molecules in a periodic cubic box of 6.21 Å (~1.0 g/cm^3)
water-init/        16 rattled copies labeled with GFN2-xTB (deepmd npy, one system)
Deterministic (seeded); takes about a minute on 2 cores.
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


def main() -> None:
    from ase.calculators.singlepoint import SinglePointCalculator
    from tblite.ase import TBLite

    from dpa3_al.dataset import LabeledDataset, Provenance

    box = water_box()
    box.write(HERE / "water-box.extxyz")
    rng = np.random.default_rng(11)
    frames = []
    for k in range(16):
        a = box.copy()
        strain = np.eye(3) + np.diag(rng.uniform(-0.02, 0.02, 3))
        a.set_cell(a.cell.array @ strain, scale_atoms=True)
        a.positions += rng.uniform(-0.12, 0.12, a.positions.shape)
        a.calc = TBLite(method="GFN2-xTB", verbosity=0)
        a.calc = SinglePointCalculator(a, energy=a.get_potential_energy(), forces=a.get_forces(),
                                       stress=a.get_stress())
        frames.append(a)
        print(f"frame {k}: {a.get_potential_energy():.4f} eV")
    out = HERE / "water-init"
    ds = LabeledDataset(out)
    report = ds.add(frames, Provenance(iteration=None, source="quickstart initial data: GFN2-xTB (tblite)"))
    print(report)


if __name__ == "__main__":
    main()
