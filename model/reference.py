"""The DPA3 energy in plain dense torch: the definition; production must agree with it.

This is the RepFlow layer as the equations of model/repflow.py's docstring state it, written on
deepmd-kit's padded layout: every centre gets ``e_sel`` neighbour slots (nearest first, padded,
masked) and ``a_sel`` angle slots, every message is computed on the dense tensors, and every
layer computes every update (no last-layer shortcut, no chunks, no recomputation, no kernels).
It shares only the weights with the production model (model/energy.py -> descriptor.py ->
repflow.py on the flat graph), not its code paths: the activations are plain torch compositions
(model/activation_math.py), the neighbours come from the brute-force search. Parallel update
order only (``sequential_update: false``). Slow and O(N e_sel a_sel^2) in memory: for tests.

Shapes: N atoms, S = e_sel edge slots, A = a_sel angle slots::

    n (N, n_dim)   e (N, S, e_dim)   a (N, A, A, a_dim)
    w (N, S) edge switch (0 in padding)   hw (N, S, 3) w * h   wa (N, A) angle switch

``tests/model/test_reference.py`` compares production with it (C++ kernels on and off).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dpa3_al.model.activation_math import kind_reference
from dpa3_al.model.descriptor import exp_switch, poly_switch
from dpa3_al.model.neighbor import brute_force_pairs


def reference_energy_forces(model, atoms) -> tuple[float, np.ndarray]:
    """(E (eV), F (N, 3) eV/Å) of ``atoms`` (ase.Atoms) by the dense definition, in float64."""
    pos = torch.tensor(atoms.positions, requires_grad=True)
    energy = reference_energy(model, atoms, pos)
    (grad,) = torch.autograd.grad(energy, pos)
    return float(energy.detach()), -grad.numpy()


def reference_energy(model, atoms, positions: torch.Tensor) -> torch.Tensor:
    """E = sum_i E_i (a 0-d tensor, differentiable in ``positions`` (N, 3) Å)."""
    cfg, desc = model.config.descriptor, model.descriptor
    act = kind_reference(desc.act.kind) if hasattr(desc.act, "kind") else desc.act
    switch = exp_switch if cfg.use_exp_switch else poly_switch
    index = {s: i for i, s in enumerate(model.type_map)}
    types = torch.tensor([index[s] for s in atoms.get_chemical_symbols()])
    S, A = cfg.e_sel, cfg.a_sel
    nl, sh = _padded_nlist(atoms, cfg.e_rcut, S)
    mask = torch.from_numpy(nl >= 0)                                              # (N, S)
    nlc = torch.from_numpy(np.where(nl >= 0, nl, 0))
    diff = positions[nlc] + torch.from_numpy(sh) @ torch.tensor(atoms.cell.array) - positions[:, None, :]
    diff = torch.where(mask[..., None], diff, torch.ones_like(diff))             # (N, S, 3) padded: harmless
    r = torch.linalg.vector_norm(diff, dim=-1)                                    # (N, S)
    w = switch(r, cfg.e_rcut_smth, cfg.e_rcut) * mask
    std = desc.env_std[types]                                                     # (N, 4)
    s = w / r / std[:, None, 0]                                                   # radial env-mat column
    hw = (w / r**2)[..., None] * diff / std[:, None, 1:] * w[..., None]          # (N, S, 3)
    amask = mask[:, :A] & (r[:, :A] < cfg.a_rcut)                                 # (N, A)
    wa = switch(r[:, :A], cfg.a_rcut_smth, cfg.a_rcut) * amask
    unit = diff[:, :A] / (r[:, :A, None] + 1e-6)
    cos = torch.einsum("nja,nka->njk", unit, unit) * (1 - 1e-6)                   # (N, A, A)
    tebd = desc.type_embedding.matrix[types]
    n = act(tebd)                                                                 # (N, n_dim)
    e = desc.edge_embd((r if cfg.edge_init_use_dist else s)[..., None])          # (N, S, e_dim)
    e = e if cfg.edge_init_use_dist else act(e)
    a = desc.angle_embd((cos / math.sqrt(math.pi))[..., None])                    # (N, A, A, a_dim)
    for layer in desc.layers:
        n, e, a = _layer(layer, cfg, act, n, e, a, nlc, w, hw, wa, amask)
    d = torch.cat([n, tebd], -1) if cfg.concat_output_tebd else n
    if model.case_embd.numel():
        d = torch.cat([d, model.case_embd.expand(len(d), -1)], -1)
    atom_e = model.fitting(d) + model.out_bias[types] + model.bias_atom_e[types]
    return atom_e.sum()


def _layer(L, cfg, act, n, e, a, nl, w, hw, wa, amask):
    """One RepFlow layer (N1-N3, E1-E2, A1 of model/repflow.py) on the padded tensors."""
    N, S, _ = e.shape
    A = cfg.a_sel
    nj = n[nl]                                                                    # (N, S, n_dim)
    cat_e = torch.cat([n[:, None].expand(-1, S, -1), nj, e], -1)                  # [n_i; n_j; e_ij]
    m_self = act(L.node_self_mlp(n))                                              # N1
    m_sym = act(L.node_sym_linear(torch.cat([_grrg(e, hw, cfg.axis_neuron, cfg.edge_norm),
                                             _grrg(nj, hw, cfg.axis_neuron, cfg.edge_norm)], -1)))   # N2
    m_edge = (act(L.node_edge_linear(cat_e)) * w[..., None]).sum(1) / cfg.edge_norm                  # N3
    n_up = [m_self, m_sym, *m_edge.split(cfg.n_dim, -1)]
    e_up = [act(L.edge_self_linear(cat_e))]                                       # E1
    ea = e[:, :A]
    if hasattr(L, "a_compress_n_linear"):
        nt, et = L.a_compress_n_linear(n), L.a_compress_e_linear(ea)
    else:
        nt, et = n[:, : L.n_an], ea[:, :, : L.e_an]
    cat_a = torch.cat([a, nt[:, None, None].expand(-1, A, A, -1), et[:, None, :].expand(-1, A, -1, -1),
                       et[:, :, None].expand(-1, -1, A, -1)], -1)                 # [a; n~_i; e~_ik; e~_ij]
    v = act(L.edge_angle_linear1(cat_a)) * (wa[:, :, None] * wa[:, None, :])[..., None]
    z = v.sum(2) / math.sqrt(cfg.angle_norm)                                      # (N, A, e_dim)
    on_angle = torch.cat([amask, torch.zeros(N, S - A, dtype=torch.bool)], 1)[..., None]
    z_full = torch.cat([z, torch.zeros(N, S - A, z.shape[-1], dtype=z.dtype)], 1)
    z_full = torch.where(on_angle, z_full, torch.zeros_like(e) if cfg.smooth_edge_update else e)
    e_up.append(act(L.edge_angle_linear2(z_full)))                                # E2
    a_up = [act(L.angle_self_linear(cat_a))]                                      # A1
    return _residual(L, cfg, n, n_up, "n"), _residual(L, cfg, e, e_up, "e"), _residual(L, cfg, a, a_up, "a")


def _grrg(g, hw, axis, norm):
    """G = (1/3) H[:, :axis]^T H,  H = S_e^-1/2 sum_j hw_ij (x) g_ij  ->  (N, axis * d)."""
    hg = torch.einsum("nsc,nsd->ncd", hw, g) / math.sqrt(norm)                    # (N, 3, d)
    return (hg[:, :, :axis].transpose(1, 2) @ hg / 3.0).flatten(1)


def _residual(L, cfg, x, updates, stream):
    """res_residual: x + sum_k rho_k u_k;  res_avg: (x + sum_k u_k) / sqrt(K + 1);  res_incr: x + sum_k u_k / sqrt(K)."""
    if cfg.update_style == "res_residual":
        return x + sum(rho * u for rho, u in zip(getattr(L, f"{stream}_residual"), updates))
    if cfg.update_style == "res_avg":
        return (x + sum(updates)) / math.sqrt(len(updates) + 1.0)
    return x + sum(updates) / math.sqrt(len(updates))


def _padded_nlist(atoms, rcut, sel):
    """(neighbour index (N, sel), -1 in padding; cell shifts (N, sel, 3)), nearest first."""
    pairs = brute_force_pairs(atoms.positions, atoms.cell.array if atoms.pbc.any() else None, atoms.pbc, rcut)
    n = len(atoms)
    nl = np.full((n, sel), -1, dtype=np.int64)
    sh = np.zeros((n, sel, 3))
    for i in range(n):
        idx = np.flatnonzero(pairs.i == i)
        idx = idx[np.argsort(pairs.distance[idx], kind="stable")][:sel]
        nl[i, : len(idx)] = pairs.j[idx]
        sh[i, : len(idx)] = pairs.shift[idx]
    return nl, sh
