"""RepFlow layers on the flat graph: node, edge and angle streams with residual updates.

Notation (see model/graph.py for the index arrays)::

    N atoms, E edges (i -> j), Ea angle edges, T angle triples (i; j, k)
    n  (N, n_dim)   node features          e  (E, e_dim)   edge features
    a  (T, a_dim)   angle features         w  (E,)  edge switch,  h (E, 3) equivariant edge vector
    tw (T,)         angle weight w^a_ij * w^a_ik

One layer (parallel mode) computes every message from the layer's input, then updates::

    node:  n += rho_1 * phi(n W_self)                                    (N1)
              + rho_2 * phi(G([H(e); H(n_j)]) W_sym)                      (N2)
              + rho_3 * (1/S_e) sum_j w_ij phi([n_i; n_j; e_ij] W_ne)     (N3)
    edge:  e += rho_1 * phi([n_i; n_j; e_ij] W_es)                        (E1)
              + rho_2 * phi(z_ij W_ea2),                                  (E2)
           z_ij = S_a^(-1/2) sum_k tw_ijk phi([a_ijk; n~_i; e~_ik; e~_ij] W_ea1)
    angle: a += rho * phi([a_ijk; n~_i; e~_ik; e~_ij] W_as)              (A1)

Every concatenated linear map is evaluated by row blocks (``Dense.rows``): node blocks once per
atom, edge blocks once per edge, and only the angle block once per triple, so the per-triple
work is one (a_dim -> e_dim + a_dim) product plus gathers. In the last layer only the node
update can reach the output, so its edge and angle updates are skipped (parallel mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from dpa3_al.model.activations import get_activation
from dpa3_al.model.config import RepFlowConfig
from dpa3_al.model.nn import Dense, add_matmul, affine, normal_, scale, shift
from dpa3_al.model.kernels import cpp as ckernels
from dpa3_al.model.kernels.ops import act_scale, outer_scatter, scatter_sum


@dataclass
class LayerGeometry:
    """Geometry of the centres [node_start, node_start + n_nodes) (all atoms, or one chunk).

    Gathers of node features use global atom indices; scatters and edge/angle indices are
    local to the chunk, whose edges, angle edges and triples are contiguous ranges.
    """

    center: torch.Tensor        # (E,) int64 global atom index of the centre
    center_local: torch.Tensor  # (E,) int64 centre index relative to node_start
    neighbor: torch.Tensor      # (E,) int64 global atom index of the neighbour (its owner)
    w: torch.Tensor             # (E,) edge switch
    hw: torch.Tensor            # (E, 3) w_ij * h_ij (h, the normalised equivariant vector, contains w too)
    angle_edge: torch.Tensor    # (Ea,) int64 -> edges (local)
    angle_center: torch.Tensor  # (Ea,) int64 -> centres (local)
    triple_j: torch.Tensor      # (T,) int64 -> angle edges (local), the receiving edge
    triple_k: torch.Tensor      # (T,) int64 -> angle edges (local), summed over
    tw: torch.Tensor            # (T,) angle weight
    node_start: int
    n_nodes: int
    edge_start: torch.Tensor    # (n_nodes + 1,) int64 edge offsets per centre (edges sorted by centre)
    angle_start: torch.Tensor   # (n_nodes + 1,) int64 angle-edge offsets per centre
    # (n_nodes + 1,) triple offsets per centre when the triples are kernels.layout's layout (m*m per
    # centre, j-major), which the C++ per-triple kernels need (model/kernels/cpp.py); None otherwise
    triple_start: torch.Tensor | None = None


def _residual(dim: int, cfg: RepFlowConfig, dtype: torch.dtype, gen: torch.Generator) -> nn.Parameter:
    t = torch.empty(dim, dtype=dtype)
    if cfg.update_residual_init == "norm":
        return nn.Parameter(normal_(t, cfg.update_residual, gen))
    return nn.Parameter(t.fill_(cfg.update_residual))


class RepFlowLayer(nn.Module):
    """One RepFlow layer. Parameter names follow deepmd-kit's (``node_self_mlp``, ...)."""

    def __init__(self, cfg: RepFlowConfig, dtype: torch.dtype, gen: torch.Generator, is_last: bool = False,
                 angles_used_next: bool = True):
        super().__init__()
        n, e, a, heads = cfg.n_dim, cfg.e_dim, cfg.a_dim, cfg.n_multi_edge_message
        self.cfg, self.is_last = cfg, is_last
        # the angle update of a layer whose successor is the (angle-free) last layer is never used
        self.skip_angle_update = not angles_used_next and not cfg.sequential_update
        self.act = get_activation(cfg.activation_function)
        self.node_self_mlp = Dense(n, n, dtype=dtype, generator=gen)
        self.node_sym_linear = Dense(cfg.axis_neuron * (n + e), n, dtype=dtype, generator=gen)
        self.node_edge_linear = Dense(2 * n + e, heads * n, dtype=dtype, generator=gen)
        self.edge_self_linear = Dense(2 * n + e, e, dtype=dtype, generator=gen)
        self.n_an, self.e_an = cfg.n_angle_node, cfg.n_angle_edge
        if cfg.update_angle:
            width = a + self.n_an + 2 * self.e_an
            self.edge_angle_linear1 = Dense(width, e, dtype=dtype, generator=gen)
            self.edge_angle_linear2 = Dense(e, e, dtype=dtype, generator=gen)
            self.angle_self_linear = Dense(width, a, dtype=dtype, generator=gen)
            if cfg.a_compress_rate and not cfg.a_compress_use_split:
                self.a_compress_n_linear = Dense(n, self.n_an, bias=False, dtype=dtype, generator=gen)
                self.a_compress_e_linear = Dense(e, self.e_an, bias=False, dtype=dtype, generator=gen)
        if cfg.update_style == "res_residual":
            self.n_residual = nn.ParameterList(_residual(n, cfg, dtype, gen) for _ in range(2 + heads))
            self.e_residual = nn.ParameterList(_residual(e, cfg, dtype, gen) for _ in range(2 if cfg.update_angle else 1))
            self.a_residual = nn.ParameterList([_residual(a, cfg, dtype, gen)] if cfg.update_angle else [])

    # ---------------------------------------------------------------- forward
    def neighbor_projection(self, n: torch.Tensor) -> torch.Tensor:
        """n_j's row blocks of W_ne and W_es for every atom: (N, H n [+ e_dim]).

        Computed once per layer on all atoms and gathered per edge (also across chunks)."""
        lins = self._edge_lins(with_edge_self=not self.is_last or self.cfg.sequential_update)
        nd = self.cfg.n_dim
        return affine(n, torch.cat([lin.rows(nd, 2 * nd) for lin in lins], dim=-1))

    def forward(self, n: torch.Tensor, p_nb: torch.Tensor, e: torch.Tensor, a: torch.Tensor, g: LayerGeometry,
                angle_update: bool = True):
        """Update the centres of ``g``: n (N_all, n_dim) all atoms, p_nb from
        :meth:`neighbor_projection`, e (E, e_dim) and a (T, a_dim) of these centres.
        Returns (n_new (n_nodes, n_dim), e_new, a_new). ``angle_update=False`` (parallel mode)
        returns ``a`` unchanged: the caller applies :meth:`angle_update` later (the low-memory
        mode does so at the start of the next layer's recomputed call)."""
        n_self = n[g.node_start:g.node_start + g.n_nodes]                                 # (n_nodes, n_dim)
        if self.cfg.sequential_update:
            return self._forward_sequential(n, n_self, p_nb, e, a, g)
        pre_ne, pre_es = self._edge_linears(n_self, p_nb, e, g, with_edge_self=not self.is_last)
        n_new = self._update(n_self, self._node_messages(n, n_self, e, pre_ne, g), "n")
        if self.is_last:  # edge and angle updates of the last layer cannot reach the energy
            return n_new, e, a
        e_updates = [self.act(pre_es)]
        if self.cfg.update_angle:
            n_t, e_t = self._angle_inputs(n_self, e, g)
            update = angle_update and not self.skip_angle_update
            if self._fused_triples(a, g):
                z, a = self._triples_fused(a, n_t, e_t, g, message=True, update=update)
            else:
                z = self._angle_to_edge(self._triple_pre(self.edge_angle_linear1, a, n_t, e_t, g), g)
                if update:
                    a = self._angle_self_update(a, n_t, e_t, g)
            e_updates.append(self._edge_angle_message(z, e, g))
        return n_new, self._update(e, e_updates, "e"), a

    def angle_update(self, n_self: torch.Tensor, e: torch.Tensor, a: torch.Tensor, g: LayerGeometry) -> torch.Tensor:
        """The angle update (A1) of this layer on its inputs: n_self (n_nodes, n_dim), e, a  ->  a_new (T, a_dim)."""
        n_t, e_t = self._angle_inputs(n_self, e, g)
        if self._fused_triples(a, g):
            return self._triples_fused(a, n_t, e_t, g, message=False, update=True)[1]
        return self._angle_self_update(a, n_t, e_t, g)

    def _angle_self_update(self, a, n_t, e_t, g: LayerGeometry) -> torch.Tensor:
        return self._update(a, [self.act(self._triple_pre(self.angle_self_linear, a, n_t, e_t, g))], "a")

    def _forward_sequential(self, n, n_self, p_nb, e, a, g: LayerGeometry):
        _, pre_es = self._edge_linears(n_self, p_nb, e, g, with_edge_self=True)
        e1 = e + scale(self.act(pre_es), self.e_residual[0])
        n_t, e_t = self._angle_inputs(n_self, e1, g)
        a_new = a + scale(self.act(self._triple_pre(self.angle_self_linear, a, n_t, e_t, g)), self.a_residual[0])
        z = self._angle_to_edge(self._triple_pre(self.edge_angle_linear1, a_new, n_t, e_t, g), g)
        e_new = e1 + scale(self._edge_angle_message(z, e1, g), self.e_residual[1])
        pre_ne, _ = self._edge_linears(n_self, p_nb, e_new, g, with_edge_self=False)
        return self._update(n_self, self._node_messages(n, n_self, e_new, pre_ne, g), "n"), e_new, a_new

    # ---------------------------------------------------------------- node stream
    def _edge_lins(self, with_edge_self: bool) -> list[Dense]:
        return [self.node_edge_linear, self.edge_self_linear] if with_edge_self else [self.node_edge_linear]

    def _edge_linears(self, n_self, p_nb, e, g: LayerGeometry, with_edge_self: bool):
        """[n_i; n_j; e_ij] @ W + b for W_ne -> (E, H n) and W_es -> (E, e_dim), by row blocks."""
        nd = self.cfg.n_dim
        outs, col = [], 0
        for lin in self._edge_lins(with_edge_self):
            nb = p_nb[:, col:col + lin.n_out].index_select(0, g.neighbor)                 # (E, n_out)
            ctr = affine(n_self, lin.rows(0, nd), lin.bias).index_select(0, g.center_local)   # (E, n_out)
            outs.append(add_matmul(ctr + nb, e, lin.rows(2 * nd, None)))
            col += lin.n_out
        return outs[0], (outs[1] if with_edge_self else None)

    def _node_messages(self, n, n_self, e, pre_ne, g: LayerGeometry) -> list[torch.Tensor]:
        cfg = self.cfg
        m_self = self.act(self.node_self_mlp(n_self))
        sym_in = torch.cat([self._grrg(e, None, g), self._grrg(n, g.neighbor, g)], dim=-1)   # (n_nodes, axis (e+n))
        m_sym = self.act(self.node_sym_linear(sym_in))
        u = act_scale(pre_ne, g.w, self.act)                                          # (E, H n)
        m_edge = scatter_sum(u, g.center_local, g.n_nodes) / cfg.edge_norm            # (n_nodes, H n)
        return [m_self, m_sym, *m_edge.split(cfg.n_dim, dim=-1)]

    def _grrg(self, feat: torch.Tensor, gather: torch.Tensor | None, g: LayerGeometry) -> torch.Tensor:
        """G_i = (1/3) H_i[:, :axis]^T H_i with H_i = S_e^-1/2 sum_j h_ij (x) w_ij f_ij  ->  (n_nodes, axis d).

        f_ij = feat[gather[ij]] (neighbour node features) or feat[ij] (edge features, gather None)."""
        d = feat.shape[-1]
        hg = outer_scatter(g.hw, feat, gather, g.center_local, g.n_nodes, g.edge_start) / math.sqrt(self.cfg.edge_norm)
        grrg = torch.matmul(hg[:, :, : self.cfg.axis_neuron].transpose(1, 2), hg) / 3.0   # (n_nodes, axis, d)
        return grrg.reshape(-1, self.cfg.axis_neuron * d)

    # ---------------------------------------------------------------- angle stream
    def _angle_inputs(self, n, e, g: LayerGeometry):
        """Compressed centre (n_nodes, n') and angle-edge (Ea, e') features used in angle messages."""
        e_ang = e.index_select(0, g.angle_edge)                                        # (Ea, e_dim)
        if hasattr(self, "a_compress_n_linear"):
            return self.a_compress_n_linear(n), self.a_compress_e_linear(e_ang)
        return n[:, : self.n_an], e_ang[:, : self.e_an]

    def _triple_pre(self, lin: Dense, a, n_t, e_t, g: LayerGeometry) -> torch.Tensor:
        """[a_ijk; n~_i; e~_ik; e~_ij] @ W + b by row blocks  ->  (T, n_out of lin)."""
        per_ij, per_ik = self._angle_edge_parts(lin.matrix, lin.bias, n_t, e_t, g)
        pre = per_ij.index_select(0, g.triple_j)                                          # (T, n_out)
        pre += per_ik.index_select(0, g.triple_k)   # in place: fresh tensors, nothing saved them
        return add_matmul(pre, a, lin.rows(0, self.cfg.a_dim), inplace=True)

    def _angle_edge_parts(self, w, bias, n_t, e_t, g: LayerGeometry):
        """The row blocks of W = [W_a; W_n; W_ik; W_ij] applied per angle edge: ([n~_i; e~_ij] part + b,
        e~_ik part), each (Ea, n_out); the per-triple input is then a_ijk W_a + per_ij[j] + per_ik[k]."""
        ad, na, ea = self.cfg.a_dim, self.n_an, self.e_an
        per_ij = add_matmul(affine(n_t, w[..., ad:ad + na, :], bias).index_select(0, g.angle_center),
                            e_t, w[..., ad + na + ea:, :])                               # (Ea, n_out)
        return per_ij, affine(e_t, w[..., ad + na:ad + na + ea, :])

    def _fused_triples(self, a: torch.Tensor, g: LayerGeometry) -> bool:
        """Whether the per-triple work runs in model/kernels/cpp.py's C++ kernels (CPU; evaluation and
        force training: the kernels have first and second derivatives)."""
        return (g.triple_start is not None and a.device.type == "cpu"
                and ckernels.available(a.dtype, getattr(self.act, "kind", None)))

    def _triples_fused(self, a, n_t, e_t, g: LayerGeometry, message: bool, update: bool):
        """(z (Ea, e_dim) or None, a_new (T, a_dim) or a): E2's angle->edge sum and A1 in one pass."""
        ad = self.cfg.a_dim
        lins = ([self.edge_angle_linear1] if message else []) + ([self.angle_self_linear] if update else [])
        w = torch.cat([lin.matrix for lin in lins], dim=-1) if len(lins) > 1 else lins[0].matrix   # (width, dm + du)
        bias = torch.cat([lin.bias for lin in lins], dim=-1) if len(lins) > 1 else lins[0].bias
        per_ij, per_ik = self._angle_edge_parts(w, bias, n_t, e_t, g)                    # (Ea, dm + du) each
        c0, rho = self._single_update_rule(ad, a)
        call = partial(ckernels.triples, dm=self.cfg.e_dim if message else 0, du=ad if update else 0,
                       scale=1.0 / math.sqrt(self.cfg.angle_norm), c0=c0, kind=self.act.kind)
        if w.dim() == 2:
            z, a_new = call(a, w[:ad], per_ij, per_ik, g.tw, rho, g.angle_start, g.triple_start)
        else:   # a committee stack: the kernel takes one weight, so it runs once per member's block of rows
            z, a_new = _per_member(call, w.shape[0], a, w[:, :ad], per_ij, per_ik, g, rho)
        return (z if message else None), (a_new if update else a)

    def _single_update_rule(self, dim: int, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(c0, rho) with :meth:`_update`(x, [u], "a") = c0 x + rho u for the angle stream's one update."""
        style = self.cfg.update_style
        if style == "res_residual":
            return 1.0, self.a_residual[0]
        c = 1.0 / math.sqrt(2.0) if style == "res_avg" else 1.0
        return c, x.new_full((dim,), c)

    def _angle_to_edge(self, pre: torch.Tensor, g: LayerGeometry) -> torch.Tensor:
        """z_ij = S_a^-1/2 sum_k tw_ijk phi(pre_ijk)  ->  (Ea, e_dim)."""
        v = act_scale(pre, g.tw, self.act)
        return scatter_sum(v, g.triple_j, g.angle_edge.shape[0]) / math.sqrt(self.cfg.angle_norm)

    def _edge_angle_message(self, z: torch.Tensor, e: torch.Tensor, g: LayerGeometry) -> torch.Tensor:
        """phi(z W_ea2 + b) for every edge; non-angle edges use z = 0 (smooth) or z = e (legacy)."""
        base = torch.zeros_like(e) if self.cfg.smooth_edge_update else e
        z_full = base.index_copy(0, g.angle_edge, z)
        return self.act(self.edge_angle_linear2(z_full))

    # ---------------------------------------------------------------- residual rule
    def _update(self, x: torch.Tensor, updates: list[torch.Tensor], stream: str) -> torch.Tensor:
        style = self.cfg.update_style
        if style == "res_residual":
            rho = getattr(self, f"{stream}_residual")
            for r, u in zip(rho, updates):
                x = x + scale(u, r)
            return x
        total = torch.stack(updates).sum(0)
        if style == "res_avg":
            return (x + total) / math.sqrt(len(updates) + 1.0)
        return x + total / math.sqrt(len(updates))


def _per_member(call, m: int, a, w_a, per_ij, per_ik, g: LayerGeometry, rho):
    """The C++ per-triple kernel on each member's block of a committee stack (model/stack.py):
    member k owns triples [k T, (k + 1) T) and angle edges [k Ea, (k + 1) Ea) of identical layout,
    so member 0's offsets serve every block. Returns (z (M Ea, dm), a_new (M T, du))."""
    n = g.n_nodes // m
    a_off, t_off = g.angle_start[:n + 1], g.triple_start[:n + 1]
    ea, t = int(a_off[-1]), int(t_off[-1])
    outs = [call(a[k * t:(k + 1) * t], w_a[k], per_ij[k * ea:(k + 1) * ea], per_ik[k * ea:(k + 1) * ea],
                 g.tw[k * t:(k + 1) * t], rho[k] if rho.dim() == 2 else rho, a_off, t_off) for k in range(m)]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
