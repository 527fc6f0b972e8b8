"""Small models and structures for the model-core tests (float64 unless stated)."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

from dpa3_al.model import ModelConfig, build_model
from dpa3_al.model.calculator import atoms_to_batch


def tiny_model(type_map=("O", "H"), seed=0, precision="float64", randomize_bias=True, **descriptor):
    """A small random model; residual vectors and the energy bias are randomised so that
    every term of every update is exercised (a plain init leaves some of them trivial)."""
    opts = dict(n_dim=12, e_dim=8, a_dim=8, nlayers=3, e_rcut=4.0, e_rcut_smth=3.0, a_rcut=3.0, a_rcut_smth=2.4,
                e_sel=200, a_sel=100, a_compress_rate=0, use_exp_switch=False, edge_init_use_dist=False,
                activation_function="silut:3.0")
    opts.update(descriptor)
    cfg = ModelConfig.tiny(list(type_map), **opts)
    cfg = ModelConfig(type_map=cfg.type_map, descriptor=cfg.descriptor, fitting=cfg.fitting, precision=precision)
    model = build_model(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "residual" in name:
                p.copy_(0.1 + 0.3 * torch.rand(p.shape, generator=gen, dtype=torch.float64))
        if randomize_bias:
            model.out_bias.copy_(torch.randn(len(type_map), generator=gen, dtype=torch.float64))
    return model


def random_cluster(n=12, seed=0, symbols=("O", "H"), box=5.0, min_dist=0.9) -> Atoms:
    rng = np.random.default_rng(seed)
    pos = []
    while len(pos) < n:
        p = rng.uniform(0, box, 3)
        if all(np.linalg.norm(p - q) > min_dist for q in pos):
            pos.append(p)
    return Atoms(symbols=[symbols[i % len(symbols)] for i in range(n)], positions=pos)


def random_periodic(n=8, seed=0, cell=None, symbols=("O", "H"), min_dist=0.9) -> Atoms:
    rng = np.random.default_rng(seed)
    cell = np.array(cell if cell is not None else np.diag([4.0, 4.5, 5.0]) + rng.uniform(-0.6, 0.6, (3, 3)))
    frac = []
    atoms = Atoms(cell=cell, pbc=True)
    while len(frac) < n:
        f = rng.uniform(0, 1, 3)
        trial = Atoms(symbols=["X"] * (len(frac) + 1), scaled_positions=frac + [f], cell=cell, pbc=True)
        if len(frac) == 0 or trial.get_distances(len(frac), list(range(len(frac))), mic=True).min() > min_dist:
            frac.append(f)
    atoms = Atoms(symbols=[symbols[i % len(symbols)] for i in range(n)], scaled_positions=frac, cell=cell, pbc=True)
    return atoms


def evaluate(model, atoms: Atoms):
    """(energy, forces (N,3), virial (3,3)) as float64 numpy."""
    out = model(atoms_to_batch(atoms, model.type_map))
    return float(out.energy[0]), out.forces.detach().numpy(), out.virial[0].detach().numpy()
