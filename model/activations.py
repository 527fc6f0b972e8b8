"""Activation functions by deepmd-kit name, memory-lean and twice differentiable.

Names: ``silu``, ``silut:T`` (alias ``custom_silu:T``; T defaults to 3.0), ``tanh``, ``gelu``
(tanh approximation, as deepmd-kit's ``gelu``/``gelu_tf``), ``relu``, ``relu6``, ``softplus``,
``sigmoid``, ``linear``/``none``.

SiLUT (silu with a tanh tail, C^1 at T):
    f(x) = x * sigmoid(x)                              for x <  T
    f(x) = tanh(kappa * (x - T)) + silu(T)             for x >= T,   kappa = silu'(T)

``silut`` is a custom autograd function that saves only its input (a ``torch.where``
composition would keep five tensors of the same size alive for backward); its backward is
written with differentiable torch ops, so force training (double backward) works.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

Activation = Callable[[torch.Tensor], torch.Tensor]


def _silu_grad(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


class _SiLUT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: float, kappa: float, shift: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.consts = (threshold, kappa, shift)
        return silut_reference(x, threshold, kappa, shift)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * _SiLUTGrad.apply(x, *ctx.consts), None, None, None


class _SiLUTGrad(torch.autograd.Function):
    """f'(x) as its own function, so that the double backward also saves only x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: float, kappa: float, shift: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.consts = (threshold, kappa, shift)
        return _silut_grad(x, threshold, kappa)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        threshold, kappa, _ = ctx.consts
        return grad * _silut_grad2(x, threshold, kappa), None, None, None


def silut_reference(x: torch.Tensor, threshold: float, kappa: float, shift: float) -> torch.Tensor:
    """Plain composition (used for forward values and as the reference in tests)."""
    tail = torch.tanh(kappa * (x - threshold)) + shift
    return torch.where(x < threshold, F.silu(x), tail)


def _silut_grad(x: torch.Tensor, threshold: float, kappa: float) -> torch.Tensor:
    t = torch.tanh(kappa * (x - threshold))
    return torch.where(x < threshold, _silu_grad(x), kappa * (1.0 - t * t))


def _silut_grad2(x: torch.Tensor, threshold: float, kappa: float) -> torch.Tensor:
    s = torch.sigmoid(x)
    silu2 = s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))
    t = torch.tanh(kappa * (x - threshold))
    return torch.where(x < threshold, silu2, -2.0 * kappa * kappa * t * (1.0 - t * t))


def make_silut(threshold: float = 3.0) -> Activation:
    sig = 1.0 / (1.0 + math.exp(-threshold))
    kappa = sig * (1.0 + threshold * (1.0 - sig))   # silu'(T)
    shift = threshold * sig                          # silu(T)

    def silut(x: torch.Tensor) -> torch.Tensor:
        return _SiLUT.apply(x, threshold, kappa, shift)

    silut.params = (threshold, kappa, shift)  # type: ignore[attr-defined]
    return silut


_SIMPLE: dict[str, Activation] = {
    "silu": F.silu,
    "tanh": torch.tanh,
    "gelu": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_tf": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "relu6": F.relu6,
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
    "linear": lambda x: x,
    "none": lambda x: x,
}


def get_activation(name: str) -> Activation:
    """Activation function from its deepmd-kit name (see module docstring)."""
    key = name.strip().lower()
    if key.startswith(("silut", "custom_silu")):
        _, _, arg = key.partition(":")
        try:
            return make_silut(float(arg) if arg else 3.0)
        except ValueError:
            raise ValueError(f"activation {name!r}: threshold after ':' must be a number, e.g. 'silut:10.0'") from None
    if key in _SIMPLE:
        return _SIMPLE[key]
    raise ValueError(f"unknown activation {name!r}; known: silu, silut:T, custom_silu:T, {', '.join(sorted(_SIMPLE))}")


def check_activation(name: str) -> str:
    """Validate an activation name (for config checks); returns it unchanged."""
    get_activation(name)
    return name
