"""Small building blocks: an affine map stored as (in, out), the fitting MLP, initialisers.

Weights are stored as ``matrix`` (n_in, n_out) and applied as ``x @ matrix + bias`` (deepmd-kit's
layout), so a weight can be split into row blocks, one per concatenated input: the
"split-weight" evaluation ``[a; b] @ W = a @ W_a + b @ W_b`` is how every concatenated linear
map of RepFlow is evaluated without materialising the concatenation.

Committee stacks (model/stack.py): M models of one architecture can run as one model whose
parameters and buffers carry a leading member axis (a weight (M, n_in, n_out), a bias (M, n_out)).
Its row tensors (atoms, edges, angle edges, triples) then hold M equal blocks, member-major: rows
[m R, (m + 1) R) belong to member m. The functions below apply a weight, a per-feature vector or a
per-type table to such rows; given plain (unstacked) parameters they are the plain operations, so
every layer is written once for both.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dpa3_al.model.activations import get_activation


def normal_(t: torch.Tensor, std: float, generator: torch.Generator, mean: float = 0.0) -> torch.Tensor:
    with torch.no_grad():
        t.copy_(torch.randn(t.shape, generator=generator, dtype=torch.float64) * std + mean)
    return t


def _blocks(x: torch.Tensor, m: int) -> torch.Tensor:
    """(M R, d) member-major rows -> (M, R, d)."""
    return x.reshape(m, -1, x.shape[-1])


def affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x @ w [+ b]: x (R, n_in), w (n_in, n_out), b (n_out,); stacked w (M, n_in, n_out), b (M, n_out)."""
    if w.dim() == 2:
        y = x @ w
        return y + b if b is not None else y
    xm = _blocks(x, w.shape[0])
    y = torch.bmm(xm, w) if b is None else torch.baddbmm(b[:, None, :], xm, w)      # (M, R, n_out)
    return y.reshape(-1, w.shape[-1])


def add_matmul(c: torch.Tensor, x: torch.Tensor, w: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """c + x @ w (torch.addmm; ``inplace``: into c) for plain or stacked w."""
    if w.dim() == 2:
        return c.addmm_(x, w) if inplace else torch.addmm(c, x, w)
    m = w.shape[0]
    if inplace:
        _blocks(c, m).baddbmm_(_blocks(x, m), w)
        return c
    return torch.baddbmm(_blocks(c, m), _blocks(x, m), w).reshape(-1, w.shape[-1])


def scale(u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """u * r for a per-feature vector r (d,) or a stacked one (M, d): u (R, d)."""
    if r.dim() == 1:
        return u * r
    return (_blocks(u, r.shape[0]) * r[:, None, :]).reshape(u.shape)


def shift(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """u + b for a per-feature vector b (d,) or a stacked one (M, d): u (R, d)."""
    if b.dim() == 1:
        return u + b
    return (_blocks(u, b.shape[0]) + b[:, None, :]).reshape(u.shape)


def lookup(table: torch.Tensor, index: torch.Tensor, dims: int) -> torch.Tensor:
    """table[index] for a per-type table of ``dims`` dimensions (K, ...), or a stacked one (M, K, ...)
    whose member-major rows ``index`` (M R,) each read their own member's table."""
    if table.dim() == dims:
        return table.index_select(0, index)
    m, k = table.shape[:2]
    offset = torch.arange(m, device=index.device)[:, None] * k
    flat = (index.reshape(m, -1) + offset).reshape(-1)
    return table.reshape(m * k, *table.shape[2:]).index_select(0, flat)


class Dense(nn.Module):
    """y = x @ matrix + bias. Init: W ~ N(0, 1/(n_in + n_out)), bias ~ N(0, 1) (deepmd-kit's rule)."""

    def __init__(self, n_in: int, n_out: int, *, bias: bool = True, dtype: torch.dtype = torch.float64,
                 generator: torch.Generator | None = None):
        super().__init__()
        gen = generator or torch.Generator().manual_seed(0)
        self.matrix = nn.Parameter(normal_(torch.empty(n_in, n_out, dtype=dtype), 1.0 / math.sqrt(n_in + n_out), gen))
        self.bias = nn.Parameter(normal_(torch.empty(n_out, dtype=dtype), 1.0, gen)) if bias else None

    @property
    def n_in(self) -> int:
        return self.matrix.shape[-2]

    @property
    def n_out(self) -> int:
        return self.matrix.shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return affine(x, self.matrix, self.bias)

    def rows(self, start: int, stop: int | None) -> torch.Tensor:
        """Row block of the weight: the part applied to input channels [start, stop) (stacked or not)."""
        return self.matrix[..., start:stop, :]


class FittingMLP(nn.Module):
    """Per-atom MLP: hidden layers with optional residual skips, then a linear output to 1.

    Hidden layer: ``y = act(x W + b)``; if the width is unchanged, ``y = x + d * act(x W + b)``;
    if it doubles, ``y = [x; x] + d * act(x W + b)``; ``d`` (the "timestep" vector, init
    N(0.1, 0.001^2)) exists only for residual layers and only when ``resnet_dt``.
    """

    def __init__(self, n_in: int, neuron: list[int], activation: str, resnet_dt: bool,
                 dtype: torch.dtype, generator: torch.Generator):
        super().__init__()
        self.act = get_activation(activation)
        widths = [n_in, *neuron]
        self.layers = nn.ModuleList(Dense(a, b, dtype=dtype, generator=generator) for a, b in zip(widths, widths[1:]))
        self.skip = [b == a or b == 2 * a for a, b in zip(widths, widths[1:])]
        self.idt = nn.ParameterList(
            nn.Parameter(normal_(torch.empty(b, dtype=dtype), 0.001, generator, mean=0.1))
            if (skip and resnet_dt) else nn.Parameter(torch.ones(0, dtype=dtype), requires_grad=False)
            for b, skip in zip(neuron, self.skip))
        self.out = Dense(widths[-1], 1, dtype=dtype, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, n_in) -> (N,)
        for layer, skip, idt in zip(self.layers, self.skip, self.idt):
            y = self.act(layer(x))
            if idt.numel():
                y = scale(y, idt)
            if skip:
                y = y + (x if layer.n_out == layer.n_in else torch.cat([x, x], dim=-1))
            x = y
        return self.out(x).squeeze(-1)
