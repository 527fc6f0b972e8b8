"""Activation functions by deepmd-kit name, memory-lean and twice differentiable.

Names: ``silu``, ``silut:T`` (alias ``custom_silu:T``; T defaults to 3.0), ``tanh``, ``gelu``
(tanh approximation, as deepmd-kit's ``gelu``/``gelu_tf``), ``relu``, ``relu6``, ``softplus``,
``sigmoid``, ``linear``/``none``.

silu, silut and tanh are :class:`SmoothActivation` objects: besides ``act(x)`` they give
``raw(x) -> (value, tail)``, ``grad_times(grad, x, tail)``, ``value(x, tail)`` and
``derivs(x, tail, order) -> (f, f', f'')`` without autograd, and ``backward(grad, x, tail)``
(grad * f'(x), differentiable once more), used by the fused operations of model/ops.py. ``tail``
holds the flat indices where a silut input reached its tail (None: nowhere).

SiLUT (silu with a tanh tail, C^1 at T):
    f(x) = x * sigmoid(x)                              for x <  T
    f(x) = tanh(kappa * (x - T)) + silu(T)             for x >= T,   kappa = silu'(T)

Memory and passes: ``act(x)`` keeps only x (a ``torch.where`` composition would keep five
tensors of its size); its backward is one fused pass, and the derivative of that backward
(force training differentiates it once more) is written out from f' and f'' instead of being
left to autograd, which would keep four temporaries and take ~15 elementwise passes.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from dpa3_al.model.kernels import cpp as ckernels

from dpa3_al.model.kernels import compiled as fused
Activation = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------- silut's tail


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


class _Tail:
    """silut's tanh tail: its values and derivatives on the tail elements only (~1 % of them)."""

    def __init__(self, threshold: float):
        sig = 1.0 / (1.0 + math.exp(-threshold))
        self.threshold = threshold
        self.kappa = sig * (1.0 + threshold * (1.0 - sig))   # silu'(T)
        self.shift = threshold * sig                          # silu(T)

    def find(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        return _find_tail(x, y, self.threshold, self.shift)

    def values(self, x: torch.Tensor, idx: torch.Tensor, order: int) -> list[torch.Tensor]:
        """[f, f', f''][:order + 1] at the flat positions idx of x."""
        t = torch.tanh(self.kappa * (x.reshape(-1).index_select(0, idx) - self.threshold))
        slope = self.kappa * (1.0 - t * t)
        return [t + self.shift, slope, -2.0 * self.kappa * t * slope][:order + 1]


# ---------------------------------------------------------------------------- smooth activations


def _silu_derivs(x: torch.Tensor, order: int):
    """silu(x), silu'(x) [, silu''(x)] without autograd, sharing one sigmoid::

        f = x s,   f' = s + f (1 - s),   f'' = s (1 - s) (2 + x (1 - 2 s)),   s = sigmoid(x)
    """
    s = torch.sigmoid(x)
    f = x * s
    q = torch.rsub(s, 1.0)                                       # 1 - s
    f1 = torch.addcmul(s, f, q)
    f2 = q.sub(s).mul_(x).add_(2.0).mul_(s).mul_(q) if order > 1 else None
    return f, f1, f2


def _tanh_derivs(x: torch.Tensor, order: int):
    t = torch.tanh(x)
    f1 = torch.addcmul(torch.ones_like(t), t, t, value=-1.0)
    return t, f1, ((t * f1).mul_(-2.0) if order > 1 else None)


class SmoothActivation:
    """silu, silut or tanh with the pieces the fused operations need (see the module docstring)."""

    def __init__(self, name: str, value_fn, grad_times_fn, derivs_fn, tail: _Tail | None = None):
        self.name, self.tail = name, tail
        # the compiled kernels' description of this activation (model/kernels/compiled.py)
        self.kind = ("silut", tail.threshold, tail.kappa, tail.shift) if tail is not None else (name,)
        self._value, self._grad_times, self._derivs = value_fn, grad_times_fn, derivs_fn

    @property
    def params(self) -> tuple:
        """silut's (threshold, kappa, shift); () for silu and tanh."""
        return self.kind[1:]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _Act.apply(x, self)

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """act(x) without autograd, and silut's tail indices (None: no tail)."""
        y = self._value(x)
        idx = self.tail.find(x, y) if self.tail is not None else None
        return (y if idx is None else _put(y, idx, self.tail.values(x, idx, 0)[0])), idx

    def value(self, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """act(x) with the tail indices from :meth:`raw` (differentiable)."""
        y = self._value(x)
        return y if idx is None else _put(y, idx, self.tail.values(x, idx, 0)[0])

    def grad_times(self, grad: torch.Tensor, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """grad * act'(x) in one fused pass (plus the tail's elements), no autograd."""
        g = self._grad_times(grad, x)
        if idx is None:
            return g
        return _put(g, idx, grad.reshape(-1).index_select(0, idx) * self.tail.values(x, idx, 1)[1])

    def derivs(self, x: torch.Tensor, idx: torch.Tensor | None, order: int) -> list:
        """[f, f', f''] of x (f'' None when order < 2), no autograd."""
        out = list(self._derivs(x, order))
        if idx is not None:
            for k, v in enumerate(self.tail.values(x, idx, order)):
                out[k] = _put(out[k], idx, v)
        return out

    def backward(self, grad: torch.Tensor, x: torch.Tensor, idx: torch.Tensor | None,
                 tail_known: bool = True) -> torch.Tensor:
        """grad * act'(x); differentiable once more when a graph is being built (force training).
        ``tail_known=False``: ``idx`` was not searched (the forward ran in model/kernels/cpp.py)."""
        if torch.is_grad_enabled() and (grad.requires_grad or x.requires_grad):
            return _ActGradTimes.apply(grad, x, self, idx if tail_known else self.eager_tail(x))
        if use_ckernels(x, self):               # evaluation (forces): one C++ pass
            return ckernels.act_grad(grad, x, None, self.kind)[0]
        if fused.use_fused(x, self.kind):       # evaluation (forces) on large tensors: one compiled pass
            return fused.grad_times(grad, x, self.kind)
        return self.grad_times(grad, x, idx if tail_known else self.eager_tail(x))

    def eager_tail(self, x: torch.Tensor) -> torch.Tensor | None:
        """The tail indices the eager formulas need, searched now (None when the C++ or compiled
        kernels will serve x, which handle the tail themselves)."""
        if self.tail is None or use_ckernels(x, self) or fused.use_fused(x, self.kind):
            return None
        return self.tail.find(x, self._value(x))


def use_ckernels(x: torch.Tensor, act: "SmoothActivation") -> bool:
    """Whether model/kernels/cpp.py's C++ activation kernels serve x (CPU, float32/64, built)."""
    return x.device.type == "cpu" and x.numel() > 0 and ckernels.available(x.dtype, act.kind)


class _Act(torch.autograd.Function):
    """act(x), keeping x and the tail indices only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, act: SmoothActivation) -> torch.Tensor:
        ctx.tail_known = not use_ckernels(x, act)
        if not ctx.tail_known:                  # one C++ pass; the tail is searched later if ever needed
            y, idx = ckernels.act_value(x, None, act.kind), None
        else:
            y, idx = (fused.value(x, act.kind), None) if fused.use_fused(x, act.kind) else act.raw(x)
        ctx.save_for_backward(x, idx)
        ctx.act = act
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, idx = ctx.saved_tensors
        return ctx.act.backward(grad, x, idx, ctx.tail_known), None


class _ActGradTimes(torch.autograd.Function):
    """grad * act'(x), keeping (grad, x); its derivative: d grad = gg f',  d x = gg grad f''."""

    @staticmethod
    def forward(ctx, grad, x, act: SmoothActivation, idx):
        ctx.save_for_backward(grad, x, idx)
        ctx.act = act
        if use_ckernels(x, act):                 # one C++ pass (model/kernels/cpp.py), silut's tail included
            return ckernels.act_grad(grad, x, None, act.kind)[0]
        if fused.use_fused(x, act.kind):        # force training on large tensors: compiled kernels
            return fused.grad_times(grad, x, act.kind)
        return act.grad_times(grad, x, idx)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gg):
        grad, x, idx = ctx.saved_tensors
        if use_ckernels(x, ctx.act):
            d_grad, d_x, _ = ckernels.act_grad2(gg, grad, x, None, None, ctx.act.kind)
            return (d_grad if ctx.needs_input_grad[0] else None), (d_x if ctx.needs_input_grad[1] else None), None, None
        if fused.use_fused(x, ctx.act.kind):
            d_grad, d_x = fused.grad_times_bwd(gg, grad, x, ctx.act.kind)
            return d_grad, d_x, None, None
        _, f1, f2 = ctx.act.derivs(x, idx, 2)
        d_grad = gg * f1 if ctx.needs_input_grad[0] else None
        d_x = f2.mul_(gg).mul_(grad) if ctx.needs_input_grad[1] else None
        return d_grad, d_x, None, None


def _silu_grad_times(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.silu_backward(grad, x)


def _tanh_grad_times(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.tanh_backward(grad, torch.tanh(x))


def silut_reference(x: torch.Tensor, threshold: float, kappa: float, shift: float) -> torch.Tensor:
    """Plain composition (the reference in tests)."""
    tail = torch.tanh(kappa * (x - threshold)) + shift
    return torch.where(x < threshold, F.silu(x), tail)


def make_silut(threshold: float = 3.0) -> SmoothActivation:
    """silu with a tanh tail from ``threshold`` on (C^1 there); ``.params`` = (T, kappa, shift)."""
    return SmoothActivation(f"silut:{threshold}", F.silu, _silu_grad_times, _silu_derivs, _Tail(threshold))


_silu = SmoothActivation("silu", F.silu, _silu_grad_times, _silu_derivs)
_tanh = SmoothActivation("tanh", torch.tanh, _tanh_grad_times, _tanh_derivs)


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
