"""Activation names and the smooth activations' plain formulas (imports only torch).

The bottom of the model: model/config.py checks names here, model/activations.py builds the
memory-lean activations from these formulas, and model/kernels/cpp.py checks its C++ kernels
against them. Names (deepmd-kit's): ``silu``, ``silut:T`` (alias ``custom_silu:T``; T defaults to
3.0), ``tanh``, ``gelu``/``gelu_tf`` (tanh approximation), ``relu``, ``relu6``, ``softplus``,
``sigmoid``, ``linear``/``none``.

SiLUT (silu with a tanh tail, C^1 at T)::

    f(x) = x * sigmoid(x)                              for x <  T
    f(x) = tanh(kappa * (x - T)) + silu(T)             for x >= T,   kappa = silu'(T)

A smooth activation is described by its ``kind``: ``("silu",)``, ``("tanh",)`` or
``("silut", T, kappa, shift)`` (shift = silu(T)), the form the C++ kernels take.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SIMPLE_NAMES = ("silu", "tanh", "gelu", "gelu_tf", "relu", "relu6", "softplus", "sigmoid", "linear", "none")


def parse_activation(name: str) -> tuple[str, float | None]:
    """(key, silut threshold or None) of a deepmd-kit activation name; ValueError names the fix."""
    key = name.strip().lower()
    if key.startswith(("silut", "custom_silu")):
        _, _, arg = key.partition(":")
        try:
            return "silut", (float(arg) if arg else 3.0)
        except ValueError:
            raise ValueError(f"activation {name!r}: threshold after ':' must be a number, e.g. 'silut:10.0'") from None
    if key in SIMPLE_NAMES:
        return key, None
    raise ValueError(f"unknown activation {name!r}; known: silu, silut:T, custom_silu:T, {', '.join(sorted(SIMPLE_NAMES))}")


def check_activation(name: str) -> str:
    """Validate an activation name (for config checks); returns it unchanged."""
    parse_activation(name)
    return name


# ---------------------------------------------------------------------------- silut's tail


def find_tail(x: torch.Tensor, y: torch.Tensor, threshold: float, shift: float) -> torch.Tensor | None:
    """Flat indices of the elements with x >= T (the tail), or None when there are none.

    y = silu(x): silu is increasing above its minimum (-0.28), so max(y) >= silu(T) <=> some
    x >= T; one reduction decides the common no-tail case, the index search runs only when needed.
    """
    if not y.numel() or not bool(y.max() >= shift):
        return None
    return torch.nonzero(x.reshape(-1) >= threshold).squeeze(1)


def put(base: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """base with vals at flat positions idx: in place on a fresh tensor, differentiably under autograd."""
    flat = base.reshape(-1)
    out = flat.index_copy(0, idx, vals) if torch.is_grad_enabled() else flat.index_copy_(0, idx, vals)
    return out.view_as(base)


class Tail:
    """silut's tanh tail: its values and derivatives on the tail elements only (~1 % of them)."""

    def __init__(self, threshold: float):
        sig = 1.0 / (1.0 + math.exp(-threshold))
        self.threshold = threshold
        self.kappa = sig * (1.0 + threshold * (1.0 - sig))   # silu'(T)
        self.shift = threshold * sig                          # silu(T)

    def find(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        return find_tail(x, y, self.threshold, self.shift)

    def values(self, x: torch.Tensor, idx: torch.Tensor, order: int) -> list[torch.Tensor]:
        """[f, f', f''][:order + 1] at the flat positions idx of x."""
        t = torch.tanh(self.kappa * (x.reshape(-1).index_select(0, idx) - self.threshold))
        slope = self.kappa * (1.0 - t * t)
        return [t + self.shift, slope, -2.0 * self.kappa * t * slope][:order + 1]


# ---------------------------------------------------------------------------- derivatives


def silu_derivs(x: torch.Tensor, order: int):
    """silu(x), silu'(x) [, silu''(x)] without autograd, sharing one sigmoid::

        f = x s,   f' = s + f (1 - s),   f'' = s (1 - s) (2 + x (1 - 2 s)),   s = sigmoid(x)
    """
    s = torch.sigmoid(x)
    f = x * s
    q = torch.rsub(s, 1.0)                                       # 1 - s
    f1 = torch.addcmul(s, f, q)
    f2 = q.sub(s).mul_(x).add_(2.0).mul_(s).mul_(q) if order > 1 else None
    return f, f1, f2


def tanh_derivs(x: torch.Tensor, order: int):
    """tanh(x), 1 - tanh^2 [, -2 tanh (1 - tanh^2)] without autograd."""
    t = torch.tanh(x)
    f1 = torch.addcmul(torch.ones_like(t), t, t, value=-1.0)
    return t, f1, ((t * f1).mul_(-2.0) if order > 1 else None)


def silut_reference(x: torch.Tensor, threshold: float, kappa: float, shift: float) -> torch.Tensor:
    """silut as a plain composition (twice differentiable by autograd; a reference for checks)."""
    tail = torch.tanh(kappa * (x - threshold)) + shift
    return torch.where(x < threshold, F.silu(x), tail)


def kind_reference(kind: tuple):
    """The activation ``kind`` as a plain composition of torch functions (a reference for checks)."""
    if kind[0] == "silut":
        return lambda x: silut_reference(x, *kind[1:4])
    return {"silu": F.silu, "tanh": torch.tanh}[kind[0]]


def kind_derivs(x: torch.Tensor, kind: tuple) -> list[torch.Tensor]:
    """[f, f', f''] of the activation ``kind`` at x, without autograd (a reference for checks)."""
    out = list((tanh_derivs if kind[0] == "tanh" else silu_derivs)(x, 2))
    if kind[0] == "silut":
        tail = Tail(kind[1])
        idx = tail.find(x, out[0])
        if idx is not None:
            out = [put(o, idx, v) for o, v in zip(out, tail.values(x, idx, 2))]
    return out
