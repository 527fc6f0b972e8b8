"""Activation functions by deepmd-kit name, memory-lean and twice differentiable.

Names and formulas: model/activation_math.py. silu, silut and tanh are :class:`SmoothActivation`
objects: besides ``act(x)`` they give ``raw(x) -> (value, tail)``, ``grad_times(grad, x, tail)``,
``value(x, tail)`` and ``derivs(x, tail, order) -> (f, f', f'')`` without autograd, and
``backward(grad, x, tail)`` (grad * f'(x), differentiable once more), used by the memory-lean
operations of model/kernels/ops.py. ``tail`` holds the flat indices where a silut input reached
its tail (None: nowhere).

Two paths per pass: the C++ kernels (model/kernels/cpp.py; CPU, float32/64, when built and
checked) and the plain torch formulas (everywhere else: CUDA, no compiler, probe failed).

Memory and passes: ``act(x)`` keeps only x (a ``torch.where`` composition would keep five
tensors of its size); its backward is one pass, and the derivative of that backward
(force training differentiates it once more) is written out from f' and f'' instead of being
left to autograd, which would keep four temporaries and take ~15 elementwise passes.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from dpa3_al.model.activation_math import Tail, parse_activation, put, silu_derivs, tanh_derivs
from dpa3_al.model.kernels import cpp as ckernels
from dpa3_al.model.kernels.cpp import serves as use_ckernels

Activation = Callable[[torch.Tensor], torch.Tensor]


class SmoothActivation:
    """silu, silut or tanh with the pieces the fused operations need (see the module docstring)."""

    def __init__(self, name: str, value_fn, grad_times_fn, derivs_fn, tail: Tail | None = None):
        self.name, self.tail = name, tail
        # the description the C++ kernels take (model/activation_math.py)
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
        return (y if idx is None else put(y, idx, self.tail.values(x, idx, 0)[0])), idx

    def value(self, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """act(x) with the tail indices from :meth:`raw` (differentiable)."""
        y = self._value(x)
        return y if idx is None else put(y, idx, self.tail.values(x, idx, 0)[0])

    def grad_times(self, grad: torch.Tensor, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """grad * act'(x) in one fused pass (plus the tail's elements), no autograd."""
        g = self._grad_times(grad, x)
        if idx is None:
            return g
        return put(g, idx, grad.reshape(-1).index_select(0, idx) * self.tail.values(x, idx, 1)[1])

    def derivs(self, x: torch.Tensor, idx: torch.Tensor | None, order: int) -> list:
        """[f, f', f''] of x (f'' None when order < 2), no autograd."""
        out = list(self._derivs(x, order))
        if idx is not None:
            for k, v in enumerate(self.tail.values(x, idx, order)):
                out[k] = put(out[k], idx, v)
        return out

    def backward(self, grad: torch.Tensor, x: torch.Tensor, idx: torch.Tensor | None,
                 tail_known: bool = True) -> torch.Tensor:
        """grad * act'(x); differentiable once more when a graph is being built (force training).
        ``tail_known=False``: ``idx`` was not searched (the forward ran in model/kernels/cpp.py)."""
        if torch.is_grad_enabled() and (grad.requires_grad or x.requires_grad):
            return _ActGradTimes.apply(grad, x, self, idx if tail_known else self.eager_tail(x))
        if use_ckernels(x, self.kind):          # evaluation (forces): one C++ pass
            return ckernels.act_grad(grad, x, None, self.kind)[0]
        return self.grad_times(grad, x, idx if tail_known else self.eager_tail(x))

    def eager_tail(self, x: torch.Tensor) -> torch.Tensor | None:
        """The tail indices the eager formulas need, searched now (None when the C++ kernels will
        serve x, which handle the tail themselves)."""
        if self.tail is None or use_ckernels(x, self.kind):
            return None
        return self.tail.find(x, self._value(x))


class _Act(torch.autograd.Function):
    """act(x), keeping x and the tail indices only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, act: SmoothActivation) -> torch.Tensor:
        ctx.tail_known = not use_ckernels(x, act.kind)
        if not ctx.tail_known:                  # one C++ pass; the tail is searched later if ever needed
            y, idx = ckernels.act_value(x, None, act.kind), None
        else:
            y, idx = act.raw(x)
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
        if use_ckernels(x, act.kind):            # one C++ pass (model/kernels/cpp.py), silut's tail included
            return ckernels.act_grad(grad, x, None, act.kind)[0]
        return act.grad_times(grad, x, idx)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gg):
        grad, x, idx = ctx.saved_tensors
        if use_ckernels(x, ctx.act.kind):
            d_grad, d_x, _ = ckernels.act_grad2(gg, grad, x, None, None, ctx.act.kind)
            return (d_grad if ctx.needs_input_grad[0] else None), (d_x if ctx.needs_input_grad[1] else None), None, None
        _, f1, f2 = ctx.act.derivs(x, idx, 2)
        d_grad = gg * f1 if ctx.needs_input_grad[0] else None
        d_x = f2.mul_(gg).mul_(grad) if ctx.needs_input_grad[1] else None
        return d_grad, d_x, None, None


def _silu_grad_times(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.silu_backward(grad, x)


def _tanh_grad_times(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.tanh_backward(grad, torch.tanh(x))


def make_silut(threshold: float = 3.0) -> SmoothActivation:
    """silu with a tanh tail from ``threshold`` on (C^1 there); ``.params`` = (T, kappa, shift)."""
    return SmoothActivation(f"silut:{threshold}", F.silu, _silu_grad_times, silu_derivs, Tail(threshold))


_silu = SmoothActivation("silu", F.silu, _silu_grad_times, silu_derivs)
_tanh = SmoothActivation("tanh", torch.tanh, _tanh_grad_times, tanh_derivs)


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
    """Activation function from its deepmd-kit name (model/activation_math.py lists them)."""
    key, threshold = parse_activation(name)
    return make_silut(threshold) if key == "silut" else _SIMPLE[key]
