"""Activation functions by deepmd-kit name, memory-lean and twice differentiable.

Names: ``silu``, ``silut:T`` (alias ``custom_silu:T``; T defaults to 3.0), ``tanh``, ``gelu``
(tanh approximation, as deepmd-kit's ``gelu``/``gelu_tf``), ``relu``, ``relu6``, ``softplus``,
``sigmoid``, ``linear``/``none``.

Activations silu, silut and tanh also carry ``raw(x) -> (value, tail)`` (no autograd),
``backward(grad, x, tail) -> grad * act'(x)`` and ``value(x, tail)`` (differentiable), used by
the fused operations of model/ops.py; ``tail`` holds the flat indices where a silut input reached
its tail (None: nowhere).

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


def _find_tail(x: torch.Tensor, y: torch.Tensor, threshold: float, shift: float) -> torch.Tensor | None:
    """Flat indices of the elements with x >= T (the tail), or None when there are none.

    y = silu(x): silu is increasing above its minimum (-0.28), so max(y) >= silu(T) <=> some
    x >= T; one reduction decides the common no-tail case, the index search runs only when needed.
    """
    if not y.numel() or not bool(y.max() >= shift):
        return None
    return torch.nonzero(x.reshape(-1) >= threshold).squeeze(1)


def _put(base: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """base with vals at flat positions idx: in place on a fresh tensor, differentiably under autograd."""
    flat = base.reshape(-1)
    out = flat.index_copy(0, idx, vals) if torch.is_grad_enabled() else flat.index_copy_(0, idx, vals)
    return out.view_as(base)


def _tail_values(y: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, threshold: float, kappa: float,
                 shift: float) -> torch.Tensor:
    """silu values y with the tanh tail at idx, computed on the tail elements only (a full-size
    torch.where costs six passes over x; the tail is ~1 % of the elements)."""
    xt = x.reshape(-1).index_select(0, idx)
    return _put(y, idx, torch.tanh(kappa * (xt - threshold)) + shift)


def _tail_patch(g: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, threshold: float,
                kappa: float) -> torch.Tensor:
    """g (= grad * silu'(x)) with grad * tail'(x) at the tail indices idx."""
    t = torch.tanh(kappa * (x.reshape(-1).index_select(0, idx) - threshold))
    return _put(g, idx, grad.reshape(-1).index_select(0, idx) * (kappa * (1.0 - t * t)))


class _SiLUT(torch.autograd.Function):
    """silu with a tanh tail. Saves only x (and the tail's indices); the tail (x >= T) is
    rare, so it is patched in only where present."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: float, kappa: float, shift: float) -> torch.Tensor:
        y = F.silu(x)
        ctx.consts = (threshold, kappa)
        tail = _find_tail(x, y, threshold, shift)
        ctx.save_for_backward(x, tail)
        return y if tail is None else _tail_values(y, x, tail, threshold, kappa, shift)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, tail = ctx.saved_tensors
        threshold, kappa = ctx.consts
        g = silu_grad_times(grad, x)
        if tail is not None:
            g = _tail_patch(g, grad, x, tail, threshold, kappa)
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

    def raw(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Forward value without autograd, and the tail's flat indices (None: no tail)."""
        y = F.silu(x)
        tail = _find_tail(x, y, threshold, shift)
        return (y if tail is None else _tail_values(y, x, tail, threshold, kappa, shift)), tail

    def backward(grad: torch.Tensor, x: torch.Tensor, tail: torch.Tensor | None) -> torch.Tensor:
        """grad * silut'(x), with the tail indices from :func:`raw`."""
        g = silu_grad_times(grad, x)
        return g if tail is None else _tail_patch(g, grad, x, tail, threshold, kappa)

    def value(x: torch.Tensor, tail: torch.Tensor | None) -> torch.Tensor:
        """silut(x), differentiable, with the tail indices from :func:`raw`."""
        y = F.silu(x)
        return y if tail is None else _tail_values(y, x, tail, threshold, kappa, shift)

    silut.params = (threshold, kappa, shift)  # type: ignore[attr-defined]
    silut.raw, silut.backward, silut.value = raw, backward, value  # type: ignore[attr-defined]
    return silut


def _silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


def _tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


_silu.raw = lambda x: (F.silu(x), None)                                     # type: ignore[attr-defined]
_silu.backward = lambda grad, x, tail=None: silu_grad_times(grad, x)         # type: ignore[attr-defined]
_silu.value = lambda x, tail: F.silu(x)                                      # type: ignore[attr-defined]
_tanh.raw = lambda x: (torch.tanh(x), None)                                 # type: ignore[attr-defined]
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
