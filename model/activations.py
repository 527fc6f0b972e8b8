"""Activation functions by deepmd-kit name, memory-lean and twice differentiable.

Names: ``silu``, ``silut:T`` (alias ``custom_silu:T``; T defaults to 3.0), ``tanh``, ``gelu``
(tanh approximation, as deepmd-kit's ``gelu``/``gelu_tf``), ``relu``, ``relu6``, ``softplus``,
``sigmoid``, ``linear``/``none``.

Activations silu, silut and tanh also carry ``raw(x) -> (value, tail)`` (no autograd),
``backward(grad, x, tail) -> grad * act'(x)`` and ``value(x, tail)`` (differentiable), used by
the fused operations of model/ops.py; ``tail`` tells whether a silut tail was hit.

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


def silu_grad_times(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad * silu'(x): one fused pass, or a differentiable composition under create_graph."""
    if torch.is_grad_enabled():
        sig = torch.sigmoid(x)
        return grad * (sig * (1.0 + x * (1.0 - sig)))
    return torch.ops.aten.silu_backward(grad, x)


def _tail_patch(g: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, threshold: float, kappa: float):
    t = torch.tanh(kappa * (x - threshold))
    return torch.where(x >= threshold, grad * (kappa * (1.0 - t * t)), g)


class _SiLUT(torch.autograd.Function):
    """silu with a tanh tail. Saves only x; the tail (x >= T) is rare, so it is patched in
    only where present."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: float, kappa: float, shift: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.consts = (threshold, kappa, shift)
        y = F.silu(x)
        # silu is increasing above its minimum (-0.28), so max(y) >= silu(T) <=> some x >= T;
        # one reduction instead of a boolean mask pass in the common no-tail case
        ctx.has_tail = bool(y.numel()) and bool(y.max() >= shift)
        if ctx.has_tail:
            y = torch.where(x >= threshold, torch.tanh(kappa * (x - threshold)) + shift, y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        threshold, kappa, _ = ctx.consts
        g = silu_grad_times(grad, x)
        if ctx.has_tail:
            g = _tail_patch(g, grad, x, threshold, kappa)
        return g, None, None, None


def silut_reference(x: torch.Tensor, threshold: float, kappa: float, shift: float) -> torch.Tensor:
    """Plain composition (the reference in tests)."""
    tail = torch.tanh(kappa * (x - threshold)) + shift
    return torch.where(x < threshold, F.silu(x), tail)


def make_silut(threshold: float = 3.0) -> Activation:
    sig = 1.0 / (1.0 + math.exp(-threshold))
    kappa = sig * (1.0 + threshold * (1.0 - sig))   # silu'(T)
    shift = threshold * sig                          # silu(T)

    def silut(x: torch.Tensor) -> torch.Tensor:
        return _SiLUT.apply(x, threshold, kappa, shift)

    def raw(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Forward value without autograd, and whether any x reached the tail."""
        y = F.silu(x)
        tail = bool(y.numel()) and bool(y.max() >= shift)
        if tail:
            y = torch.where(x >= threshold, torch.tanh(kappa * (x - threshold)) + shift, y)
        return y, tail

    def backward(grad: torch.Tensor, x: torch.Tensor, tail: bool | None = None) -> torch.Tensor:
        g = silu_grad_times(grad, x)
        if tail is None:
            tail = bool(x.numel()) and bool(x.max() >= threshold)
        return _tail_patch(g, grad, x, threshold, kappa) if tail else g

    def value(x: torch.Tensor, tail: bool) -> torch.Tensor:
        return silut(x) if tail else F.silu(x)

    silut.params = (threshold, kappa, shift)  # type: ignore[attr-defined]
    silut.raw, silut.backward, silut.value = raw, backward, value  # type: ignore[attr-defined]
    return silut


def _silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


def _tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


_silu.raw = lambda x: (F.silu(x), False)                                     # type: ignore[attr-defined]
_silu.backward = lambda grad, x, tail=None: silu_grad_times(grad, x)         # type: ignore[attr-defined]
_silu.value = lambda x, tail: F.silu(x)                                      # type: ignore[attr-defined]
_tanh.raw = lambda x: (torch.tanh(x), False)                                 # type: ignore[attr-defined]
_tanh.backward = lambda grad, x, tail=None: grad * (1.0 - torch.tanh(x) ** 2)  # type: ignore[attr-defined]
_tanh.value = lambda x, tail: torch.tanh(x)                                  # type: ignore[attr-defined]

_SIMPLE: dict[str, Activation] = {
    "silu": _silu,
    "tanh": _tanh,
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
