"""The DPA3 descriptor: type embedding, initial edge/angle features, L RepFlow layers.

Input: atom types and the edge vectors r_ij (E, 3) of the flat graph (model/graph.py).
Output: one feature vector per atom, D_i = n_i^L (N, n_dim) [; type embedding].

Environment matrix per edge (w = switch(r), sigma = per-centre-type std, mean fixed to 0)::

    s_ij = w / (r + p) / sigma_0          (radial, the edge input unless edge_init_use_dist)
    h_ij = w r_vec / (r + p)^2 / sigma_1:4   (equivariant vector used by the symmetrisation)

Angle input: c_ijk = cos(theta_jik) (1 - 1e-6) / sqrt(pi), unit vectors r / (|r| + 1e-6).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .activations import get_activation
from .config import RepFlowConfig
from .graph import Graph
from .nn import Dense
from .repflow import LayerGeometry, RepFlowLayer


def poly_switch(r: torch.Tensor, r_smth: float, r_cut: float) -> torch.Tensor:
    """1 below r_smth, 0 above r_cut, C^2 quintic in between."""
    u = ((r - r_smth) / (r_cut - r_smth)).clamp(0.0, 1.0)
    return u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0


def exp_switch(r: torch.Tensor, r_smth: float, r_cut: float) -> torch.Tensor:
    """exp(-exp(20 (r - r_s) / r_s)) with r clamped to [0, r_cut] (equals 1/e at r_s)."""
    return torch.exp(-torch.exp(20.0 / r_smth * (r.clamp(0.0, r_cut) - r_smth)))


class DPA3Descriptor(nn.Module):
    """Type embedding + RepFlow block. Buffers: ``env_std`` (ntypes, 4) env-mat std per centre type."""

    def __init__(self, cfg: RepFlowConfig, ntypes: int, dtype: torch.dtype, gen: torch.Generator):
        super().__init__()
        self.cfg, self.ntypes = cfg, ntypes
        self.act = get_activation(cfg.activation_function)
        self.switch = exp_switch if cfg.use_exp_switch else poly_switch
        self.type_embedding = Dense(ntypes, cfg.n_dim, bias=cfg.use_tebd_bias, dtype=dtype, generator=gen)
        self.edge_embd = Dense(1, cfg.e_dim, dtype=dtype, generator=gen)
        self.angle_embd = Dense(1, cfg.a_dim, bias=False, dtype=dtype, generator=gen)
        self.layers = nn.ModuleList(RepFlowLayer(cfg, dtype, gen, is_last=(i == cfg.nlayers - 1))
                                    for i in range(cfg.nlayers))
        std = cfg.fix_stat_std if cfg.fix_stat_std > 0 else 1.0
        self.register_buffer("env_std", torch.full((ntypes, 4), std, dtype=dtype))
        self.memory = "default"

    @property
    def dim_out(self) -> int:
        return self.cfg.n_dim * (2 if self.cfg.concat_output_tebd else 1)

    def forward(self, types: torch.Tensor, r: torch.Tensor, graph: Graph) -> torch.Tensor:
        """types (N,), r (E, 3) edge vectors in the model dtype -> descriptor (N, dim_out)."""
        tebd = self.type_embedding.matrix.index_select(0, types) + (self.type_embedding.bias if self.type_embedding.bias is not None
                                                    else 0.0)                                    # (N, n_dim)
        geo, edge_in, angle_in = self._geometry(types, r, graph)
        n = self.act(tebd)
        e = self.edge_embd(edge_in) if self.cfg.edge_init_use_dist else self.act(self.edge_embd(edge_in))
        a = self.angle_embd(angle_in)                                                            # (T, a_dim)
        for layer in self.layers:
            if self.memory == "low" and torch.is_grad_enabled():
                n, e, a = checkpoint(layer, n, e, a, geo, use_reentrant=False)
            else:
                n, e, a = layer(n, e, a, geo)
        return torch.cat([n, tebd], dim=-1) if self.cfg.concat_output_tebd else n

    def _geometry(self, types: torch.Tensor, r: torch.Tensor, graph: Graph):
        """Switches, env matrix and angle inputs from edge vectors r (E, 3)."""
        cfg = self.cfg
        dist = torch.linalg.vector_norm(r, dim=-1)                                    # (E,)
        w = self.switch(dist, cfg.e_rcut_smth, cfg.e_rcut)
        std = self.env_std[types[graph.center]]                                       # (E, 4)
        denom = dist + cfg.env_protection
        s = w / denom / std[:, 0]                                                     # (E,)
        h = (w / (denom * denom))[:, None] * r / std[:, 1:]                           # (E, 3)
        edge_in = (dist if cfg.edge_init_use_dist else s)[:, None]                    # (E, 1)
        ra, da = r.index_select(0, graph.angle_edge), dist.index_select(0, graph.angle_edge)   # (Ea, 3), (Ea,)
        wa = self.switch(da, cfg.a_rcut_smth, cfg.a_rcut)
        unit = ra / (da + 1e-6)[:, None]
        cos = (unit.index_select(0, graph.triple_j) * unit.index_select(0, graph.triple_k)).sum(-1) * (1.0 - 1e-6)
        geo = LayerGeometry(center=graph.center, neighbor=graph.neighbor, w=w, hw=h * w[:, None],
                            angle_edge=graph.angle_edge, angle_center=graph.center[graph.angle_edge],
                            triple_j=graph.triple_j, triple_k=graph.triple_k,
                            tw=wa.index_select(0, graph.triple_j) * wa.index_select(0, graph.triple_k), n_atoms=graph.n_atoms)
        return geo, edge_in, (cos / math.sqrt(math.pi))[:, None]
