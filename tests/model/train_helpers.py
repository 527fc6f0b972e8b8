"""Small labeled data sets and configs for the training tests (EMT labels: fast, smooth, periodic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT


def emt_system(root: Path, n_frames: int = 24, seed: int = 0, symbols: str = "CuAu", rattle: float = 0.12,
               size=(2, 1, 1)) -> Path:
    """A deepmd npy system of rattled, strained fcc cells labeled by ASE's EMT (energy, forces, virial)."""
    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=3.7, cubic=True) * size
    base.symbols[::2] = symbols[-2:] if len(symbols) > 2 else symbols[:2]
    names = sorted(set(base.get_chemical_symbols()))
    coords, boxes, energies, forces, virials = [], [], [], [], []
    for _ in range(n_frames):
        atoms = base.copy()
        strain = np.eye(3) + rng.normal(scale=0.02, size=(3, 3))
        atoms.set_cell(base.cell.array @ strain, scale_atoms=True)
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        atoms.calc = EMT()
        coords.append(atoms.positions.reshape(-1))
        boxes.append(atoms.cell.array.reshape(-1))
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces().reshape(-1))
        stress = atoms.get_stress(voigt=False)
        virials.append((-stress * atoms.get_volume()).reshape(-1))
    root.mkdir(parents=True, exist_ok=True)
    (root / "type_map.raw").write_text("\n".join(names) + "\n")
    (root / "type.raw").write_text("\n".join(str(names.index(s)) for s in base.get_chemical_symbols()) + "\n")
    (root / "set.000").mkdir(exist_ok=True)
    for name, arr in (("coord", coords), ("box", boxes), ("energy", energies), ("force", forces),
                      ("virial", virials)):
        np.save(root / "set.000" / f"{name}.npy", np.array(arr))
    return root


TINY = {"descriptor": {"n_dim": 16, "e_dim": 8, "a_dim": 8, "nlayers": 2, "e_rcut": 4.0, "e_rcut_smth": 3.5,
                       "a_rcut": 3.0, "a_rcut_smth": 2.5, "e_sel": 40, "a_sel": 16},
        "fitting": {"neuron": [16, 16]}, "precision": "float64"}


def tiny_config(systems, validation=(), steps=20, **sections) -> dict:
    """A TrainConfig dict for a tiny float64 model (sections override keys)."""
    cfg = {"model": dict(TINY), "data": {"systems": [str(s) for s in systems],
                                         "validation": [str(s) for s in validation], "batch_size": 1},
           "training": {"numb_steps": steps, "progress": False, "seed": 7}, "stopping": {"patience": 0}}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg
