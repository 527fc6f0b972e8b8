"""Memory-lean autograd operations for the flat graph.

PyTorch's generic formulas keep more than the mathematics needs: ``index_add`` keeps its whole
source for the backward pass, ``act(x) * w`` keeps both x and act(x), and an outer product
``h (x) f[j]`` keeps the gathered copy of f. On graphs with ~700 angle triples per atom
these copies dominate memory. The functions here save only what their backward needs and
recompute cheap values instead. Their backward passes are written with differentiable torch
operations or by functions with their own derivative, so a second derivative (force training)
works through them.

Each operation has two paths: the C++ kernels of model/kernels/cpp.py (CPU, when built and
checked) and the plain torch formulas (CUDA, no compiler, or the probe rejected the kernels).
``act`` arguments are model/activations.py's activations (smooth ones carry ``kind``, ``raw``,
``value``, ``grad_times``, ``derivs`` and ``eager_tail``; others are plain callables).
"""

from __future__ import annotations

import torch

from dpa3_al.model.kernels import cpp as ckernels
from dpa3_al.model.kernels.cpp import serves as use_ckernels


class _ScatterSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
        ctx.save_for_backward(index)
        return src.new_zeros((size, *src.shape[1:])).index_add_(0, index, src)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


def scatter_sum(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """out[index[r]] += src[r]: (R, ...) -> (size, ...). Saves only ``index``."""
    return _ScatterSum.apply(src, index, size)


class _ActScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, act) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.act, ctx.tail, ctx.tail_known = act, None, True
        if use_ckernels(x, act.kind):            # one C++ pass (model/kernels/cpp.py); tail searched if needed
            ctx.tail_known = False
            return ckernels.act_value(x, w, act.kind)
        y, ctx.tail = act.raw(x)
        return y.mul_(w[:, None])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        act, need_w = ctx.act, ctx.needs_input_grad[1]
        if torch.is_grad_enabled():      # force training: a backward that is differentiated again
            tail = ctx.tail if ctx.tail_known else act.eager_tail(x)
            gx, gw = _ActScaleGrad.apply(grad, x, w, act, tail, need_w)
            return gx, (gw if need_w else None), None
        if use_ckernels(x, act.kind):            # evaluation (forces): one C++ pass
            gx, gw = ckernels.act_grad(grad, x, w, act.kind, need_w)
            return gx, gw, None
        gx, gw = _act_scale_grad_eager(grad, x, w, act, ctx.tail, need_w)   # (forward was eager: tail known)
        return gx, gw, None


def _act_scale_grad_eager(grad, x, w, act, tail, need_w: bool):
    """(grad w act'(x), sum_c grad act(x)) without autograd; gw None when not needed."""
    gx = act.grad_times(grad * w[:, None], x, tail)
    return gx, ((grad * act.value(x, tail)).sum(-1) if need_w else None)


class _ActScaleGrad(torch.autograd.Function):
    """The backward of act(x) * w, (grad, x, w) -> (gx, gw), with its own derivative::

        gx = grad w f'(x),   gw = sum_c grad f(x)
        d grad = ggx w f' + ggw f,   d x = grad (ggx w f'' + ggw f'),   d w = sum_c ggx grad f'

    Keeps (grad, x, w) instead of autograd's five temporaries, and its derivative takes ~18
    elementwise passes instead of ~35 (this is the largest per-triple cost of a force-training step).
    """

    @staticmethod
    def forward(ctx, grad, x, w, act, tail, need_w: bool):
        ctx.save_for_backward(grad, x, w, tail)
        ctx.act, ctx.need_w = act, need_w
        if use_ckernels(x, act.kind):            # one C++ pass (model/kernels/cpp.py), silut's tail included
            gx, gw = ckernels.act_grad(grad, x, w, act.kind, need_w)
            return gx, (gw if need_w else w.new_zeros(w.shape))
        gx, gw = _act_scale_grad_eager(grad, x, w, act, tail, need_w)
        return gx, (gw if need_w else w.new_zeros(w.shape))     # a Function's outputs must be tensors

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, ggx, ggw):
        grad, x, w, tail = ctx.saved_tensors
        need_grad, need_x, need_w = ctx.needs_input_grad[:3]
        if use_ckernels(x, ctx.act.kind):        # one C++ pass for all three
            d_grad, d_x, d_w = ckernels.act_grad2(ggx, grad, x, w, ggw if ctx.need_w else None, ctx.act.kind, need_w)
            return (d_grad if need_grad else None), (d_x if need_x else None), d_w, None, None, None
        f, f1, f2 = ctx.act.derivs(x, tail, 2)
        ggw = ggw[:, None] if ctx.need_w else None
        gxw = ggx * w[:, None]
        d_x = d_grad = d_w = None
        if need_x:
            d_x = f2.mul_(gxw)
            if ggw is not None:
                d_x.addcmul_(ggw, f1)
            d_x.mul_(grad)
        if need_w:
            d_w = (ggx * grad).mul_(f1).sum(-1)
        if need_grad:
            d_grad = gxw.mul_(f1)
            if ggw is not None:
                d_grad.addcmul_(ggw, f)
        return d_grad, d_x, d_w, None, None, None


def act_scale(x: torch.Tensor, w: torch.Tensor, act) -> torch.Tensor:
    """act(x) * w[:, None] for x (R, d), w (R,); keeps only x and w for backward."""
    if getattr(act, "raw", None) is None:
        return act(x) * w[:, None]
    return _ActScale.apply(x, w, act)


class _OuterScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hw, feat, gather, scatter, size, offsets):
        ctx.save_for_backward(hw, feat, *(t for t in (gather, scatter, offsets) if t is not None))
        ctx.has_gather = gather is not None
        ctx.c = offsets is not None and hw.device.type == "cpu" and ckernels.ready(hw.dtype)   # C++: CPU only
        if ctx.c:                      # one C++ pass per centre, no (E, 3, d) product (model/kernels/cpp.py)
            return ckernels.outer(hw, feat, gather, offsets, size)
        f = feat if gather is None else feat.index_select(0, gather)                 # (E, d)
        out = hw.new_zeros((size, 3, feat.shape[-1]))
        return out.index_add_(0, scatter, hw[:, :, None] * f[:, None, :])

    @staticmethod
    def backward(ctx, grad):
        hw, feat, *idx = ctx.saved_tensors
        gather = idx.pop(0) if ctx.has_gather else None
        scatter, offsets = idx[0], (idx[1] if len(idx) > 1 else None)
        if ctx.c:        # one C++ pass per centre; force training differentiates it through _OuterGrad
            g_hw, g_f = (_OuterGrad.apply(grad, hw, feat, gather, offsets) if torch.is_grad_enabled()
                         else ckernels.outer_grad(grad, hw, feat, gather, offsets))
        else:                            # differentiable: force training differentiates it again
            f = feat if gather is None else feat.index_select(0, gather)
            g = grad.index_select(0, scatter)                                          # (E, 3, d)
            g_hw = (g * f[:, None, :]).sum(-1) if ctx.needs_input_grad[0] else None
            g_f = (hw[:, :, None] * g).sum(1)                                          # (E, d)
        if gather is not None:
            g_f = scatter_sum(g_f, gather, feat.shape[0])
        return (g_hw if ctx.needs_input_grad[0] else None), g_f, None, None, None, None


class _OuterGrad(torch.autograd.Function):
    """The C++ backward of outer_scatter, (grad (S, 3, d), hw, feat) -> (d hw (E, 3), d f (E, d) per edge),
    with its own derivative, built from the same two kernels (the map is bilinear)::

        d grad = outer(hw_bar, f) + outer(hw, f_bar),  d hw = <grad, f_bar>,  d f_e = sum_i hw_bar grad

    It keeps grad, hw and feat, where the torch formulas keep (E, 3, d) products for force training."""

    @staticmethod
    def forward(ctx, grad, hw, feat, gather, offsets):
        ctx.save_for_backward(grad, hw, feat, gather, offsets)
        return ckernels.outer_grad(grad, hw, feat, gather, offsets)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, hw_bar, f_bar):
        grad, hw, feat, gather, offsets = ctx.saved_tensors
        size = grad.shape[0]
        d_grad = ckernels.outer(hw_bar, feat, gather, offsets, size) + ckernels.outer(hw, f_bar, None, offsets, size)
        d_hw = ckernels.outer_grad(grad, hw, f_bar, None, offsets)[0]
        d_f = ckernels.outer_grad(grad, hw_bar, feat, gather, offsets)[1]            # per edge
        if gather is not None:
            d_f = feat.new_zeros(feat.shape).index_add_(0, gather, d_f)
        return d_grad, d_hw, d_f, None, None


def outer_scatter(hw: torch.Tensor, feat: torch.Tensor, gather: torch.Tensor | None, scatter: torch.Tensor,
                  size: int, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """H[s] = sum_{e: scatter[e]=s} hw[e] (x) feat[gather[e]]  ->  (size, 3, d).

    hw (E, 3); feat (M, d) gathered by ``gather`` (E,) (or used as is, (E, d), when None).
    ``offsets`` (size + 1,): when given, ``scatter`` is sorted and centre s owns edges
    [offsets[s], offsets[s + 1]), which lets the C++ kernels (model/kernels/cpp.py) serve the call.
    Saves hw, feat and the indices; the (E, 3, d) product is never kept.
    """
    return _OuterScatter.apply(hw, feat, gather, scatter, size, offsets)
