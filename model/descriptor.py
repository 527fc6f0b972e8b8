"""The DPA3 descriptor: type embedding, initial edge/angle features, L RepFlow layers.

Input: atom types and the edge vectors r_ij (E, 3) of the flat graph (model/graph.py).
Output: one feature vector per atom, D_i = n_i^L (N, n_dim) [; type embedding].

Environment matrix per edge (w = switch(r), sigma = per-centre-type std, mean fixed to 0)::

    s_ij = w / (r + p) / sigma_0          (radial, the edge input unless edge_init_use_dist)
    h_ij = w r_vec / (r + p)^2 / sigma_1:4   (equivariant vector used by the symmetrisation)

Angle input: c_ijk = cos(theta_jik) (1 - 1e-6) / sqrt(pi), unit vectors r / (|r| + 1e-6).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from dpa3_al.model.activations import get_activation
from dpa3_al.model.config import RepFlowConfig
from dpa3_al.model.graph import Graph
from dpa3_al.model.nn import Dense, lookup, shift
from dpa3_al.model.kernels.recompute import recompute
from dpa3_al.model.repflow import LayerGeometry, RepFlowLayer


def poly_switch(r: torch.Tensor, r_smth: float, r_cut: float) -> torch.Tensor:
    """1 below r_smth, 0 above r_cut, C^2 quintic in between."""
    u = ((r - r_smth) / (r_cut - r_smth)).clamp(0.0, 1.0)
    return u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0


def exp_switch(r: torch.Tensor, r_smth: float, r_cut: float) -> torch.Tensor:
    """exp(-exp(20 (r - r_s) / r_s)) with r clamped to [0, r_cut] (equals 1/e at r_s)."""
    return torch.exp(-torch.exp(20.0 / r_smth * (r.clamp(0.0, r_cut) - r_smth)))


@dataclass
class _Streams:
    """The features between two layers: node features of all atoms, edge and angle features per chunk."""

    n: torch.Tensor                  # (N, n_dim)
    e_parts: list                    # per chunk (E_c, e_dim)
    a_parts: list                    # per chunk (T_c, a_dim), or (T_c, 1) raw angle inputs while ``embed``
    embed: bool = True               # a_parts still hold the raw angle input (embedded inside the call)
    pending: tuple | None = field(default=None)   # (layer, n, e_parts) of a layer whose A1 was deferred


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
        last = cfg.nlayers - 1
        self.layers = nn.ModuleList(RepFlowLayer(cfg, dtype, gen, is_last=(i == last), angles_used_next=(i + 1 < last))
                                    for i in range(cfg.nlayers))
        std = cfg.fix_stat_std if cfg.fix_stat_std > 0 else 1.0
        self.register_buffer("env_std", torch.full((ntypes, 4), std, dtype=dtype))
        self.memory = "default"
        self.chunk_triples = 65_000      # triples per chunk (both memory modes; see _chunks)

    @property
    def dim_out(self) -> int:
        return self.cfg.n_dim * (2 if self.cfg.concat_output_tebd else 1)

    def forward(self, types: torch.Tensor, r: torch.Tensor, graph: Graph) -> torch.Tensor:
        """types (N,), r (E, 3) edge vectors in the model dtype -> descriptor (N, dim_out)."""
        tebd = lookup(self.type_embedding.matrix, types, 2)                           # (N, n_dim)
        if self.type_embedding.bias is not None:
            tebd = shift(tebd, self.type_embedding.bias)
        geo, edge_in, angle_in = self._geometry(types, r, graph)                      # (E, 1), (T, 1)
        e = self.edge_embd(edge_in) if self.cfg.edge_init_use_dist else self.act(self.edge_embd(edge_in))
        chunks = self._chunks(geo, graph)
        streams = _Streams(n=self.act(tebd),                                           # (N, n_dim)
                           e_parts=[e[edges] for _, edges, _ in chunks],              # per chunk (E_c, e_dim)
                           a_parts=[angle_in[triples] for _, _, triples in chunks])   # per chunk (T_c, 1)
        low = self.memory == "low" and torch.is_grad_enabled()
        for layer in self.layers:
            streams = self._run_layer(layer, streams, chunks, low)
        return torch.cat([streams.n, tebd], dim=-1) if self.cfg.concat_output_tebd else streams.n

    def _chunks(self, geo: LayerGeometry, graph: Graph) -> list[tuple[LayerGeometry, slice, slice]]:
        """The centres in chunks of at most ``chunk_triples`` triples: (geometry, edge slice, triple slice).

        Large systems run each layer in chunks of centres in both memory modes: every per-triple and
        per-edge temporary then stays below glibc's mmap threshold (32 MiB; 65,000 triples x 96
        float32 columns = 25 MB) and is served from retained heap memory instead of fresh,
        page-faulted mappings (which made the default mode's time per atom 2.4x larger at 1,536
        atoms than at 192; 100,000 triples per chunk still page-faulted every (T, 96) product of
        force training, and its peak was 4.0-4.5 GB instead of 3.5-3.6 GB for DPA-3.1-3M's shape at
        192 atoms, at the same speed). The low mode also recomputes each chunk in the backward pass
        instead of keeping its activations."""
        if graph.n_triples > self.chunk_triples:
            return chunk_geometry(geo, graph, self.chunk_triples)
        return [(geo, slice(None), slice(None))]

    def _run_layer(self, layer: RepFlowLayer, s: "_Streams", chunks: list, low: bool) -> "_Streams":
        """One layer over every chunk: the streams after it (n (N, n_dim); e, a per chunk).

        The low mode keeps each layer's inputs for its recomputation; the angle features
        (T, a_dim) are by far the largest. Every other layer therefore defers its angle update
        (A1) to the start of the next layer's call, which receives that layer's n and e (kept
        anyway) and the older a: a is kept for every second layer only, and A1 still runs once
        in the forward pass and once in the recomputation. Same numbers, ~half the stored a."""
        p_nb = layer.neighbor_projection(s.n)                                          # (N, ...) all atoms
        defer = (low and s.pending is None and not self.cfg.sequential_update and not layer.is_last
                 and not layer.skip_angle_update)
        prev_layer, n_prev, e_prev = s.pending or (None, None, [None] * len(chunks))
        call = partial(self._layer_call, layer, s.embed, defer, prev_layer)
        if low:
            params = self._call_params(layer, s.embed, prev_layer)
            outs = [recompute(partial(_with_geometry, call, g), (s.n, p_nb, e_c, a_c, n_prev, ep_c, g.w, g.hw, g.tw),
                              params) for (g, _, _), e_c, a_c, ep_c in zip(chunks, s.e_parts, s.a_parts, e_prev)]
        else:
            outs = [call(s.n, p_nb, e_c, a_c, g, n_prev, ep_c)
                    for (g, _, _), e_c, a_c, ep_c in zip(chunks, s.e_parts, s.a_parts, e_prev)]
        n = torch.cat([o[0] for o in outs]) if len(outs) > 1 else outs[0][0]         # (N, n_dim)
        e_parts = [o[1] for o in outs]
        if defer:           # this layer's A1 runs in the next layer's call, on these inputs
            return _Streams(n, e_parts, s.a_parts, embed=s.embed, pending=(layer, s.n, s.e_parts))
        return _Streams(n, e_parts, [o[2] for o in outs], embed=False)

    def _call_params(self, layer: RepFlowLayer, embed: bool, prev_layer: RepFlowLayer | None) -> list[nn.Parameter]:
        """The parameters one low-mode call of :meth:`_layer_call` reads."""
        mods = [layer] + ([self.angle_embd] if embed else []) + ([prev_layer] if prev_layer is not None else [])
        return [p for m in mods for p in m.parameters()]

    def _layer_call(self, layer: RepFlowLayer, embed: bool, defer: bool, prev_layer: RepFlowLayer | None,
                    n, p_nb, e, a, g: LayerGeometry, n_prev, e_prev):
        if embed:
            a = self.angle_embd(a)                 # a^0 = c W_a (T, a_dim), never stored in low mode
        if prev_layer is not None:                 # the previous layer's deferred angle update
            a = prev_layer.angle_update(n_prev[g.node_start:g.node_start + g.n_nodes], e_prev, a, g)
        n, e, a = layer(n, p_nb, e, a, g, angle_update=not defer)
        return n, e, (a[:, :0] if (layer.is_last or layer.skip_angle_update or defer) else a)

    def _geometry(self, types: torch.Tensor, r: torch.Tensor, graph: Graph):
        """Switches, env matrix and angle inputs from edge vectors r (E, 3)."""
        cfg = self.cfg
        dist = torch.linalg.vector_norm(r, dim=-1)                                    # (E,)
        w = self.switch(dist, cfg.e_rcut_smth, cfg.e_rcut)
        std = lookup(self.env_std, types[graph.center], 2)                            # (E, 4)
        denom = dist + cfg.env_protection
        s = w / denom / std[:, 0]                                                     # (E,)
        h = (w / (denom * denom))[:, None] * r / std[:, 1:]                           # (E, 3)
        edge_in = (dist if cfg.edge_init_use_dist else s)[:, None]                    # (E, 1)
        ra, da = r.index_select(0, graph.angle_edge), dist.index_select(0, graph.angle_edge)   # (Ea, 3), (Ea,)
        wa = self.switch(da, cfg.a_rcut_smth, cfg.a_rcut)
        unit = ra / (da + 1e-6)[:, None]
        cos = (unit.index_select(0, graph.triple_j) * unit.index_select(0, graph.triple_k)).sum(-1) * (1.0 - 1e-6)
        angle_center = graph.center[graph.angle_edge]
        a_start = _csr_starts(angle_center, graph.n_atoms)                            # (N + 1,)
        m = a_start[1:] - a_start[:-1]                                                # angle edges per centre
        t_start = torch.cat([m.new_zeros(1), torch.cumsum(m * m, 0)])                 # (N + 1,) triples: m^2 each
        blocks = int(t_start[-1]) == graph.n_triples                                  # graph.py's layout
        geo = LayerGeometry(center=graph.center, center_local=graph.center, neighbor=graph.neighbor, w=w,
                            hw=h * w[:, None], angle_edge=graph.angle_edge, angle_center=angle_center,
                            triple_j=graph.triple_j, triple_k=graph.triple_k,
                            tw=wa.index_select(0, graph.triple_j) * wa.index_select(0, graph.triple_k),
                            node_start=0, n_nodes=graph.n_atoms, edge_start=_csr_starts(graph.center, graph.n_atoms),
                            angle_start=a_start, triple_start=t_start if blocks else None)
        return geo, edge_in, (cos / math.sqrt(math.pi))[:, None]


def _with_geometry(call, g: LayerGeometry, n, p_nb, e, a, n_prev, e_prev, w, hw, tw):
    """``call`` with the geometry's differentiable tensors (functions of the positions) passed in."""
    return call(n, p_nb, e, a, dataclasses.replace(g, w=w, hw=hw, tw=tw), n_prev, e_prev)


def chunk_geometry(geo: LayerGeometry, graph: Graph, max_triples: int) -> list[tuple[LayerGeometry, slice, slice]]:
    """Split the centres into contiguous chunks of at most ~max_triples angle triples.

    Edges, angle edges and triples are sorted by centre, so each chunk owns contiguous ranges;
    its index arrays are made local to those ranges. Returns (geometry, edge slice, triple slice).
    """
    n = graph.n_atoms
    e_start, a_start, t_start = geo.edge_start, geo.angle_start, geo.triple_start
    if t_start is None:
        t_start = _csr_starts(geo.angle_center.index_select(0, graph.triple_j), n)
    bounds, c0 = [], 0
    while c0 < n:
        limit = int(t_start[c0]) + max_triples
        c1 = max(c0 + 1, int(torch.searchsorted(t_start, limit, right=True)) - 1)
        bounds.append((c0, min(c1, n)))
        c0 = min(c1, n)
    out = []
    for c0, c1 in bounds:
        es, ee, as_, ae, ts, te = (int(x) for x in (e_start[c0], e_start[c1], a_start[c0], a_start[c1],
                                                    t_start[c0], t_start[c1]))
        g = LayerGeometry(center=geo.center[es:ee], center_local=geo.center[es:ee] - c0,
                          neighbor=geo.neighbor[es:ee], w=geo.w[es:ee], hw=geo.hw[es:ee],
                          angle_edge=geo.angle_edge[as_:ae] - es, angle_center=geo.angle_center[as_:ae] - c0,
                          triple_j=geo.triple_j[ts:te] - as_, triple_k=geo.triple_k[ts:te] - as_,
                          tw=geo.tw[ts:te], node_start=c0, n_nodes=c1 - c0, edge_start=e_start[c0:c1 + 1] - es,
                          angle_start=a_start[c0:c1 + 1] - as_,
                          triple_start=None if geo.triple_start is None else t_start[c0:c1 + 1] - ts)
        out.append((g, slice(es, ee), slice(ts, te)))
    return out


def _csr_starts(sorted_index: torch.Tensor, n: int) -> torch.Tensor:
    """Start offsets (n + 1,) of each value's run in a sorted index array."""
    return torch.cat([sorted_index.new_zeros(1), torch.cumsum(torch.bincount(sorted_index, minlength=n), 0)])
