"""Recomputation ("checkpointing") that also works for second derivatives.

``recompute(fn, inputs, params)`` runs ``fn(*inputs)`` without keeping its activations; the
backward pass recomputes ``fn`` and takes the vector-Jacobian product. It differs from
``torch.utils.checkpoint`` in one respect that matters for training on forces: when the
backward pass itself is differentiated (``create_graph=True``, as for F = -dE/dx in a force
loss), torch's checkpoint keeps the whole recomputed graph *and* the graph of its derivative
alive until the loss backward, which is where training memory goes. Here the differentiable
backward is itself a recomputed operation (:class:`_VJP`): it keeps only its inputs and the
incoming gradients, and its own backward (the second derivative) recomputes the function, its
VJP with a graph, and differentiates that. Every layer's graph then exists only while that layer
is being differentiated: memory is the stored layer inputs plus one layer's graph.

Cost: the function runs once in the forward pass and once more in each backward that reaches it
(three times in a force-training step instead of once).

``fn`` must be deterministic and take/return tensors (``None`` inputs allowed). ``params`` are
the parameters ``fn`` reads from its module(s): they are passed explicitly so that
``torch.autograd.grad`` and ``.backward()`` both see their gradients. Parameter gradients are
computed only when the running backward pass will use them (a force pass that asks for
d/dpositions skips them), which the autograd engine tells us per node.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

Fn = Callable[..., tuple[torch.Tensor, ...]]


def recompute(fn: Fn, inputs: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``fn(*inputs)`` whose activations are recomputed in every backward pass (first and second order)."""
    params = [p for p in params if p.requires_grad]
    return _Recompute.apply(fn, len(inputs), *inputs, *params)


def _engine_uses(t: torch.Tensor) -> bool:
    """Will the running backward pass deliver a gradient to leaf/intermediate ``t``?"""
    try:
        return bool(torch._C._will_engine_execute_node(torch.autograd.graph.get_gradient_edge(t).node))
    except (AttributeError, RuntimeError):   # private API moved: compute the gradient anyway
        return True


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _vjp(fn: Fn, inputs, want: Sequence[bool], grad_out, params, want_params: Sequence[bool], create_graph: bool):
    """Recompute ``fn`` and return (d inputs, d params) for the wanted ones (None elsewhere), plus
    the detached leaves used, so a caller can differentiate the result once more."""
    # the recomputed graph is transient: hide it from any outer saved-tensor hooks (memory.unit_costs
    # counts what the forward pass keeps with such hooks)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_identity, _identity):
        x = [t.detach().requires_grad_(w) if t is not None else None for t, w in zip(inputs, want)]
        outs = fn(*x)
        targets = [t for t, w in zip(x, want) if w] + [p for p, w in zip(params, want_params) if w]
        pairs = [(o, g) for o, g in zip(outs, grad_out) if o.requires_grad and g is not None]
        grads = torch.autograd.grad([o for o, _ in pairs], targets, [g for _, g in pairs], allow_unused=True,
                                    create_graph=create_graph) if targets and pairs else [None] * len(targets)
    it = iter(grads)
    g_in = [next(it) if w else None for w in want]
    g_par = [next(it) if w else None for w in want_params]
    return g_in, g_par, x


class _Recompute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn: Fn, n_in: int, *args):
        ctx.fn, ctx.n_in = fn, n_in
        ctx.save_for_backward(*args)
        with torch.no_grad():
            outs = fn(*args[:n_in])
        # an output that is (a view of) an input must be a new tensor, or autograd rewires it
        return tuple(o.clone() if o._base is not None or any(o is t for t in args[:n_in]) else o for o in outs)

    @staticmethod
    def backward(ctx, *grad_out):
        args = ctx.saved_tensors
        inputs, params = args[:ctx.n_in], args[ctx.n_in:]
        want = ctx.needs_input_grad[2:2 + ctx.n_in]
        want_params = [w and _engine_uses(p) for w, p in zip(ctx.needs_input_grad[2 + ctx.n_in:], params)]
        if torch.is_grad_enabled():       # create_graph: the backward must itself be differentiable
            grads = _VJP.apply(ctx.fn, ctx.n_in, len(grad_out), tuple(want), tuple(want_params),
                               *inputs, *grad_out, *params)
            it = iter(grads)
            g_in = [next(it) if w else None for w in want]
            g_par = [next(it) if w else None for w in want_params]
        else:
            g_in, g_par, _ = _vjp(ctx.fn, inputs, want, grad_out, params, want_params, create_graph=False)
        return (None, None, *g_in, *g_par)


class _VJP(torch.autograd.Function):
    """(inputs, grad_out, params) -> the wanted gradients of fn's inputs/params; stores only its inputs."""

    @staticmethod
    def forward(ctx, fn: Fn, n_in: int, n_out: int, want, want_params, *args):
        ctx.fn, ctx.n_in, ctx.n_out, ctx.want, ctx.want_params = fn, n_in, n_out, want, want_params
        ctx.save_for_backward(*args)
        inputs, grad_out, params = args[:n_in], args[n_in:n_in + n_out], args[n_in + n_out:]
        g_in, g_par, _ = _vjp(fn, inputs, want, grad_out, params, want_params, create_graph=False)
        like = [t for t, w in zip(inputs, want) if w] + [p for p, w in zip(params, want_params) if w]
        return tuple(torch.zeros_like(t) if g is None else g
                     for g, t in zip([g for g, w in zip(g_in, want) if w] + [g for g, w in zip(g_par, want_params) if w],
                                     like))

    @staticmethod
    def backward(ctx, *v):
        args = ctx.saved_tensors
        n_in, n_out = ctx.n_in, ctx.n_out
        inputs, grad_out, params = args[:n_in], args[n_in:n_in + n_out], args[n_in + n_out:]
        need_in = ctx.needs_input_grad[5:5 + n_in]
        need_go = ctx.needs_input_grad[5 + n_in:5 + n_in + n_out]
        need_par = [w and _engine_uses(p) for w, p in zip(ctx.needs_input_grad[5 + n_in + n_out:], params)]
        with torch.enable_grad():
            go = [g.detach().requires_grad_(w) for g, w in zip(grad_out, need_go)]
            # the first derivative with a graph, w.r.t. the inputs whose gradient the forward returned
            want_x = [w or n for w, n in zip(ctx.want, need_in)]
            g_in, g_par, x = _vjp(ctx.fn, inputs, want_x, go, params, ctx.want_params, create_graph=True)
            firsts = [g for g, w in zip(g_in, ctx.want) if w] + [g for g, w in zip(g_par, ctx.want_params) if w]
            pairs = [(f, c) for f, c in zip(firsts, v) if f is not None and f.requires_grad and c is not None]
            targets = ([t for t, w in zip(x, need_in) if w] + [g for g, w in zip(go, need_go) if w]
                       + [p for p, w in zip(params, need_par) if w])
            grads = (torch.autograd.grad([f for f, _ in pairs], targets, [c for _, c in pairs], allow_unused=True)
                     if pairs and targets else [None] * len(targets))
        it = iter(grads)
        return (None, None, None, None, None,
                *[next(it) if w else None for w in need_in],
                *[next(it) if w else None for w in need_go],
                *[next(it) if w else None for w in need_par])
