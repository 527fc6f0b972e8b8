"""A deliberately naive, padded implementation of the DPA3 spec, used only as a test oracle.

Every centre gets ``e_sel`` neighbour slots (nearest first, padded) and ``a_sel`` angle slots,
as in deepmd-kit's static layout; all messages are computed on the dense padded tensors with
masks, every layer computes every update (no last-layer shortcut). It shares only the weights
with the production model (dpa3_al.model), not its code paths.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dpa3_al.model.descriptor import exp_switch, poly_switch
from dpa3_al.model.neighbor import brute_force_pairs


def _padded_nlist(atoms, rcut, sel):
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


def dense_energy(model, atoms, positions: torch.Tensor) -> torch.Tensor:
    cfg = model.config.descriptor
    desc = model.descriptor
    act, sw = desc.act, (exp_switch if cfg.use_exp_switch else poly_switch)
    index = {s: i for i, s in enumerate(model.type_map)}
    types = torch.tensor([index[s] for s in atoms.get_chemical_symbols()])
    S, A = cfg.e_sel, cfg.a_sel
    nl, sh = _padded_nlist(atoms, cfg.e_rcut, S)
    mask = torch.from_numpy(nl >= 0)                                           # (N, S)
    nlc = torch.from_numpy(np.where(nl >= 0, nl, 0))
    cell = torch.tensor(atoms.cell.array)
    diff = positions[nlc] + torch.from_numpy(sh) @ cell - positions[:, None, :]  # (N, S, 3)
    diff = torch.where(mask[..., None], diff, torch.ones_like(diff))           # padded: harmless dummy
    r = torch.linalg.vector_norm(diff, dim=-1)
    w = sw(r, cfg.e_rcut_smth, cfg.e_rcut) * mask
    std = desc.env_std[types]                                                  # (N, 4)
    s = w / r / std[:, None, 0]
    hw = (w / r**2)[..., None] * diff / std[:, None, 1:] * w[..., None]       # (N, S, 3)
    amask = mask[:, :A] & (r[:, :A] < cfg.a_rcut)                              # (N, A)
    wa = sw(r[:, :A], cfg.a_rcut_smth, cfg.a_rcut) * amask
    unit = diff[:, :A] / (r[:, :A, None] + 1e-6)
    cos = torch.einsum("nja,nka->njk", unit, unit) * (1 - 1e-6)
    tebd = desc.type_embedding.matrix[types]
    n = act(tebd)
    e = desc.edge_embd((r if cfg.edge_init_use_dist else s)[..., None])
    e = e if cfg.edge_init_use_dist else act(e)
    a = desc.angle_embd((cos / math.sqrt(math.pi))[..., None])                 # (N, A, A, a_dim)
    for layer in desc.layers:
        n, e, a = _layer(layer, cfg, act, n, e, a, nlc, w, hw, wa, amask)
    d = torch.cat([n, tebd], -1) if cfg.concat_output_tebd else n
    if model.case_embd.numel():
        d = torch.cat([d, model.case_embd.expand(len(d), -1)], -1)
    atom_e = model.fitting(d) + model.out_bias[types] + model.bias_atom_e[types]
    return atom_e.sum()


def _grrg(g, hw, axis, norm):
    hg = torch.einsum("nsc,nsd->ncd", hw, g) / math.sqrt(norm)                 # (N, 3, d)
    return (hg[:, :, :axis].transpose(1, 2) @ hg / 3.0).flatten(1)


def _layer(L, cfg, act, n, e, a, nl, w, hw, wa, amask):
    N, S, _ = e.shape
    A = cfg.a_sel
    nj = n[nl]                                                                 # (N, S, n)
    cat_e = torch.cat([n[:, None].expand(-1, S, -1), nj, e], -1)
    m_self = act(L.node_self_mlp(n))
    m_sym = act(L.node_sym_linear(torch.cat([_grrg(e, hw, cfg.axis_neuron, cfg.edge_norm),
                                             _grrg(nj, hw, cfg.axis_neuron, cfg.edge_norm)], -1)))
    m_edge = (act(L.node_edge_linear(cat_e)) * w[..., None]).sum(1) / cfg.edge_norm
    n_up = [m_self, m_sym, *m_edge.split(cfg.n_dim, -1)]
    e_up = [act(L.edge_self_linear(cat_e))]
    ea = e[:, :A]
    if hasattr(L, "a_compress_n_linear"):
        nt, et = L.a_compress_n_linear(n), L.a_compress_e_linear(ea)
    else:
        nt, et = n[:, : L.n_an], ea[:, :, : L.e_an]
    cat_a = torch.cat([a, nt[:, None, None].expand(-1, A, A, -1), et[:, None, :].expand(-1, A, -1, -1),
                       et[:, :, None].expand(-1, -1, A, -1)], -1)              # [a; n_i; e_ik; e_ij]
    v = act(L.edge_angle_linear1(cat_a)) * (wa[:, :, None] * wa[:, None, :])[..., None]
    z = v.sum(2) / math.sqrt(cfg.angle_norm)                                   # (N, A, e)
    full_mask = torch.cat([amask, torch.zeros(N, S - A, dtype=torch.bool)], 1)[..., None]
    z_full = torch.cat([z, torch.zeros(N, S - A, z.shape[-1], dtype=z.dtype)], 1)
    z_full = torch.where(full_mask, z_full, torch.zeros_like(e) if cfg.smooth_edge_update else e)
    e_up.append(act(L.edge_angle_linear2(z_full)))
    a_up = [act(L.angle_self_linear(cat_a))]
    return L._update(n, n_up, "n"), L._update(e, e_up, "e"), L._update(a, a_up, "a")


def dense_energy_forces(model, atoms):
    pos = torch.tensor(atoms.positions, requires_grad=True)
    energy = dense_energy(model, atoms, pos)
    (grad,) = torch.autograd.grad(energy, pos)
    return float(energy.detach()), -grad.numpy()
