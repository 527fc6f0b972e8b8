"""Small building blocks: an affine map stored as (in, out), the fitting MLP, initialisers.

Weights are stored as ``matrix`` (n_in, n_out) and applied as ``x @ matrix + bias`` (deepmd-kit's
layout), so a weight can be split into row blocks, one per concatenated input: the
"split-weight" evaluation ``[a; b] @ W = a @ W_a + b @ W_b`` is how every concatenated linear
map of RepFlow is evaluated without materialising the concatenation.
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
        return self.matrix.shape[0]

    @property
    def n_out(self) -> int:
        return self.matrix.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.matrix
        return y + self.bias if self.bias is not None else y

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Row block of the weight: the part applied to input channels [start, stop)."""
        return self.matrix[start:stop]


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
                y = y * idt
            if skip:
                y = y + (x if layer.n_out == layer.n_in else torch.cat([x, x], dim=-1))
            x = y
        return self.out(x).squeeze(-1)
