"""Compiled (fused) elementwise kernels for the activations on large tensors, CPU.

On a CPU the per-triple tensors (~700 angle triples per atom, 64 channels) make every
elementwise pass a trip through main memory: the backward of ``act(x) * w`` differentiated once
more (force training) is ~18 eager passes of 5-17 ms each at 100k triples. ``torch.compile``
(inductor) turns each formula below into one loop over the data (measured: 75 ms -> 7.4 ms for
the double backward of act_scale at 99,334 x 64, float32, 2 threads).

The formulas are written for a fused kernel: silut's tail is a ``torch.where`` here (free in a
fused loop), where the eager path patches the ~1 % tail elements by index to avoid full passes.

Used for every activation pass on CPU tensors of at least :data:`MIN_ELEMENTS` elements: the
value (``act(x)``, ``act(x) * w``), the gradient of evaluation's force pass, and in force training
the activation backward and its derivative; also the evaluation backward of
``ops.outer_scatter`` (:func:`outer_grad`). Small systems and the test suite's tiny models never
pay the compilation (~20 s per dtype and activation on first use; ~5 s in later processes, from
inductor's on-disk cache). Measured gains (``python bench/bench_kernels.py [--train]``: kernels on
and off interleaved in one process, 2 threads, 192 atoms): DPA-3.1-3M shape E+F+V 1.09-1.14x, one
training step 1.23x; water example E+F+V 1.17x. silut's tail ``tanh`` is written through
``exp`` (inductor's CPU tanh is ~3x slower than its exp). Disabled by ``DPA3_AL_COMPILE=0``, and
automatically, with one warning, if compilation fails (no C++ compiler, unsupported platform): the
eager formulas of model/activations.py (silut's tail patched by index) then run, with the same
results to rounding.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import torch

log = logging.getLogger(__name__)

#: tensors smaller than this run the eager formulas
MIN_ELEMENTS = 1 << 22
_STATE: dict = {"enabled": os.environ.get("DPA3_AL_COMPILE", "1") != "0", "compiled": {}, "ready": {}}

Kind = tuple   # ("silu",), ("tanh",) or ("silut", threshold, kappa, shift)


def use_fused(x: torch.Tensor, kind: Kind | None, numel: int | None = None) -> bool:
    """Whether the compiled kernels serve ``x`` (CPU, ``numel`` (default: x's) large, not switched
    off, compiled for its dtype). ``kind``: the activation, or None for the geometric kernels.

    The first large tensor of a dtype/activation compiles the kernels at once on a small probe,
    so that a toolchain failure switches the path off before any of its results are used."""
    if x.device.type != "cpu" or (x.numel() if numel is None else numel) < MIN_ELEMENTS:
        return False
    key = (x.dtype, kind)
    ready = _STATE["ready"].get(key)
    if ready is None:      # once a key is ready it stays so: a forward and its backward agree
        if not _STATE["enabled"]:
            return False
        ready = _STATE["ready"][key] = _warm_up(x.dtype, kind)
    return ready


def _probes(dtype: torch.dtype, kind: Kind | None) -> list[tuple[Callable, tuple]]:
    """(kernel, arguments) on small random data: what :func:`_warm_up` compiles and checks."""
    gen = torch.Generator().manual_seed(0)
    if kind is None:     # outer_grad: 37 edges, 5 centres, 9 neighbour rows, d = 2; without and with a gather
        grad, hw, feat = (torch.randn(*shape, generator=gen, dtype=dtype) for shape in ((5, 3, 2), (37, 3), (9, 2)))
        scatter, gather = torch.randint(0, 5, (37,), generator=gen), torch.randint(0, 9, (37,), generator=gen)
        return [(_outer_grad, (grad, scatter, hw, feat[gather], None)), (_outer_grad, (grad, scatter, hw, feat, gather))]
    t = [torch.randn(37, 8, generator=gen, dtype=dtype) * 4 for _ in range(4)]
    w, v = torch.rand(37, generator=gen, dtype=dtype), torch.randn(37, generator=gen, dtype=dtype)
    return [(fn, (*args, kind)) for fn, args in (
        (_value, (t[0],)), (_scaled_value, (t[0], w)), (_grad_times, (t[1], t[0])),
        (_grad_times_bwd, (t[2], t[1], t[0])), (_act_scale_grad, (t[1], t[0], w)),
        (_act_scale_grad_bwd, (t[3], v, t[1], t[0], w)))]


def _warm_up(dtype: torch.dtype, kind: Kind | None) -> bool:
    what = "geometric" if kind is None else f"{kind[0]} activation"
    log.info("compiling the %s kernels for %s (first large tensor of this process: ~20 s, ~5 s when cached; "
             "DPA3_AL_COMPILE=0 skips them)", what, str(dtype).replace("torch.", ""))
    try:
        with torch.no_grad():
            for fn, args in _probes(dtype, kind):
                got, ref = _kernel(fn)(*args), fn(*args)
                for a, b in zip(got if isinstance(got, tuple) else (got,), ref if isinstance(ref, tuple) else (ref,)):
                    torch.testing.assert_close(a, b)
        return True
    except Exception as err:   # noqa: BLE001 - any compiler/toolchain failure: stay eager
        _STATE["enabled"] = False
        log.warning("compiled activation kernels unavailable (%s: %s); using the eager formulas "
                    "(same results, slower on large systems)", type(err).__name__, str(err).splitlines()[0][:200])
        return False


def _derivs(x: torch.Tensor, kind: Kind):
    """f, f', f'' of the activation ``kind`` (unused ones are dropped by the compiler)."""
    if kind[0] == "tanh":
        t = torch.tanh(x)
        f1 = 1.0 - t * t
        return t, f1, -2.0 * t * f1
    s = torch.sigmoid(x)
    q = 1.0 - s
    f = x * s
    f1 = s + f * q
    f2 = s * q * (2.0 + x * (q - s))
    if kind[0] == "silut":
        threshold, kappa, shift = kind[1:]
        tail = x >= threshold
        # tanh(k (x - T)) through exp: inductor's CPU tanh is ~3x slower than its exp. The argument
        # is clamped at 0 (only the tail's values are kept), so exp cannot overflow below T.
        t = 1.0 - 2.0 / (torch.exp(2.0 * kappa * torch.clamp(x - threshold, min=0.0)) + 1.0)
        slope = kappa * (1.0 - t * t)
        f = torch.where(tail, t + shift, f)
        f1 = torch.where(tail, slope, f1)
        f2 = torch.where(tail, -2.0 * kappa * t * slope, f2)
    return f, f1, f2


def _value(x, kind):
    return _derivs(x, kind)[0]


def _scaled_value(x, w, kind):
    return _derivs(x, kind)[0] * w[:, None]


def _grad_times(grad, x, kind):
    return grad * _derivs(x, kind)[1]


def _grad_times_bwd(gg, grad, x, kind):
    _, f1, f2 = _derivs(x, kind)
    return gg * f1, gg * grad * f2


def _act_scale_grad(grad, x, w, kind):
    f, f1, _ = _derivs(x, kind)
    return grad * w[:, None] * f1, (grad * f).sum(-1)


def _act_scale_grad_bwd(ggx, ggw, grad, x, w, kind):
    f, f1, f2 = _derivs(x, kind)
    gxw = ggx * w[:, None]
    g = ggw[:, None]
    return gxw * f1 + g * f, grad * (gxw * f2 + g * f1), (ggx * grad * f1).sum(-1)


def _outer_grad(grad, scatter, hw, feat, gather):
    """Gradient of H[s] = sum_{e: scatter[e] = s} hw[e] (x) f[e], f = feat[gather] (or feat):
    grad (S, 3, d) -> (d hw (E, 3), d f (E, d)), without the (E, 3, d) gathered copy of grad."""
    g = grad[scatter]
    f = feat if gather is None else feat[gather]
    return (g * f[:, None, :]).sum(-1), (hw[:, :, None] * g).sum(1)


def _kernel(fn: Callable) -> Callable:
    compiled = _STATE["compiled"].get(fn)
    if compiled is None:
        compiled = _STATE["compiled"][fn] = torch.compile(fn, dynamic=True)
    return compiled


def _run(fn: Callable, *args):
    """``fn(*args)`` compiled (after :func:`use_fused` said yes); should a later recompilation
    fail, the same formula runs eagerly (same result, slower)."""
    with torch.no_grad():
        try:
            return _kernel(fn)(*args)
        except Exception as err:   # noqa: BLE001
            log.warning("compiled %s failed (%s); running it eagerly", fn.__name__, type(err).__name__)
            return fn(*args)


def outer_grad(grad, scatter, hw, feat, gather):    # (d hw, d f) of ops.outer_scatter
    return _run(_outer_grad, grad, scatter, hw, feat, gather)


def value(x, kind):                                 # f(x)
    return _run(_value, x, kind)


def scaled_value(x, w, kind):                       # f(x) w[:, None]
    return _run(_scaled_value, x, w, kind)


def grad_times(grad, x, kind):                      # grad f'(x)
    return _run(_grad_times, grad, x, kind)


def grad_times_bwd(gg, grad, x, kind):              # d/dgrad, d/dx of grad f'(x) against gg
    return _run(_grad_times_bwd, gg, grad, x, kind)


def act_scale_grad(grad, x, w, kind):               # (grad w f'(x), sum_c grad f(x))
    return _run(_act_scale_grad, grad, x, w, kind)


def act_scale_grad_bwd(ggx, ggw, grad, x, w, kind):  # derivative of act_scale_grad against (ggx, ggw)
    return _run(_act_scale_grad_bwd, ggx, ggw, grad, x, w, kind)
