"""Hand-written C++ kernels (``model/kernels/csrc/kernels.cpp``) for the CPU: the angle stream's per-triple
work with its first and second derivatives, the activations, and the symmetrisation's outer products.

A RepFlow layer's per-triple work (~700 triples per atom) is, for the edge message (E2, dm
columns) and the angle update (A1, du columns)::

    x_t      = P[j] + Q[k] + a_t W_a           P, Q (Ea, dm + du) per angle edge, W_a (a_dim, dm + du)
    z[j]     = scale sum_k tw_t f(x_t[:dm])    (Ea, dm)
    a_new[t] = c0 a[t] + r f(x_t[dm:])         (T, du)

With torch operations that is a product, two gathers, an add, the activation and a scatter per
column group, each a full pass over (T, d) in main memory, and as many again in each backward
pass. :func:`triples` does it in one pass per layer: a triple's row of a W_a is computed in
registers, the sums over k (forward) and over j (backward) stay in cache, and the backward passes
recompute x from a (T, a_dim) instead of keeping the (T, dm + du) pre-activations. Its backward
is itself an operation with a C++ derivative (:class:`_TriplesGrad`), so force training (which
differentiates the force pass once more) runs it too. :func:`act_value`/:func:`act_grad` are the
activations (silu, silut, tanh) in one pass, and :func:`outer`/:func:`outer_grad` the outer
products per centre without the (E, 3, d) product.

The library is built on first use with the system C++ compiler (g++, ~3 s, cached under
``$XDG_CACHE_HOME/dpa3-al/kernels``, keyed by source, flags, compiler and CPU) and checked against
the torch formulas (values, first and second derivatives) on a small probe; any failure turns
the kernels off with one warning and the torch path runs (same numbers to rounding).
``DPA3_AL_COMPILE=0`` switches them off (the plain torch path then runs everywhere). float32 and
float64, CPU tensors. The probe's references are the plain formulas of model/activation_math.py and
the triple layout of model/kernels/layout.py; this module imports nothing else of the model.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from dpa3_al.model.activation_math import kind_derivs, kind_reference
from dpa3_al.model.kernels.layout import block_offsets, triple_index

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "csrc" / "kernels.cpp"
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp-simd", "-fPIC", "-shared", "-std=c++17", "-pthread"]
if platform.machine() in ("x86_64", "AMD64"):
    FLAGS.append("-mrecip=all")        # reciprocal estimate + one Newton step for the sigmoid's division
# Threads: OpenMP first, so that the kernels run on torch's pool (libgomp.so.1 resolves to the copy torch
# loaded); a compiler without OpenMP (Apple clang) builds the std::thread variant.
THREADING = (["-fopenmp"], [])
_KINDS = {"silu": 0, "silut": 1, "tanh": 2}
_STATE: dict = {"enabled": os.environ.get("DPA3_AL_COMPILE", "1") != "0", "lib": None, "ready": {}}


def available(dtype: torch.dtype, kind: tuple | None) -> bool:
    """Whether the kernels serve this dtype and activation (``kind`` as ``SmoothActivation.kind``).
    Builds and checks the library the first time it is asked."""
    if kind is None or kind[0] not in _KINDS or dtype not in (torch.float32, torch.float64):
        return False
    key = (dtype, kind)
    ready = _STATE["ready"].get(key)
    if ready is None:
        if not _STATE["enabled"]:
            return False
        _STATE["ready"][key] = False      # while probing, the reference's activations run eagerly
        ready = _STATE["ready"][key] = _check(dtype, kind)
    return ready


def serves(x: torch.Tensor, kind: tuple | None) -> bool:
    """Whether the C++ activation kernels serve x for the activation ``kind`` (CPU, float32/64, built)."""
    return x.device.type == "cpu" and x.numel() > 0 and available(x.dtype, kind)


# ------------------------------------------------------------------------------- the operation


class _Triples(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, w_a, P, Q, tw, r, a_off, t_off, dm: int, du: int, scale: float, c0: float, kind):
        a, w_a, P, Q, tw, r = (t.contiguous() for t in (a, w_a, P, Q, tw, r))
        z = a.new_empty((P.shape[0], dm))
        a_new = a.new_empty((a.shape[0], du))
        geo = _Geometry(a, w_a, P, Q, tw, r, a_off, t_off, dm, du, scale, c0, kind)
        geo.call(0, [], [z, a_new])
        ctx.save_for_backward(a, w_a, P, Q, tw, r, a_off, t_off)     # a (T, a_dim): x is recomputed
        ctx.meta = (dm, du, scale, c0, kind)
        return z, a_new

    @staticmethod
    def backward(ctx, gz, ga):
        saved, need = ctx.saved_tensors, ctx.needs_input_grad
        if torch.is_grad_enabled():      # force training: a backward that is differentiated again
            # the force pass asks for d/dpositions only: the weights' gradient is skipped when unused
            need_w = (need[1] and _engine_uses(saved[1])) or (need[5] and _engine_uses(saved[5]))
            g_a, gW, gP, gQ, gtw, gr = _TriplesGrad.apply(gz, ga, *saved, ctx.meta, need_w)
        else:
            geo = _Geometry(*saved, *ctx.meta)
            g_a, gW, gP, gQ, gtw, gr = geo.backward(gz.contiguous(), ga.contiguous(), need[1] or need[5], need[4])
        return (g_a if need[0] else None, gW if need[1] else None, gP, gQ, gtw if need[4] else None,
                gr if need[5] else None, None, None, None, None, None, None, None)


class _TriplesGrad(torch.autograd.Function):
    """The backward of :class:`_Triples` as an operation with its own (C++) derivative: force
    training differentiates it once more. Outputs (g_a, gW, gP, gQ, gtw, gr); the derivative of
    gW and gr (parameter gradients) is not implemented (nothing in training differentiates them)."""

    @staticmethod
    def forward(ctx, gz, ga, a, w_a, P, Q, tw, r, a_off, t_off, meta, need_w: bool):
        gz, ga = gz.contiguous(), ga.contiguous()
        geo = _Geometry(a, w_a, P, Q, tw, r, a_off, t_off, *meta)
        g_a, gW, gP, gQ, gtw, gr = geo.backward(gz, ga, need_w=need_w, need_tw=True)
        ctx.save_for_backward(gz, ga, a, w_a, P, Q, tw, r, a_off, t_off)
        ctx.meta = meta
        zeros = (lambda x, like: x if x is not None else torch.zeros_like(like))   # outputs must be tensors
        return g_a, zeros(gW, w_a), gP, gQ, zeros(gtw, tw), zeros(gr, r)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_a_bar, gW_bar, P_bar, Q_bar, tw_bar, gr_bar):
        if (gW_bar is not None and bool(gW_bar.any())) or (gr_bar is not None and bool(gr_bar.any())):
            raise NotImplementedError("the derivative of the per-triple kernel's parameter gradients (a third "
                                      "derivative of the energy) is not implemented")
        gz, ga, a, w_a, P, Q, tw, r, a_off, t_off = ctx.saved_tensors
        geo = _Geometry(a, w_a, P, Q, tw, r, a_off, t_off, *ctx.meta)
        return (*geo.second_order(gz, ga, g_a_bar.contiguous(), P_bar.contiguous(), Q_bar.contiguous(),
                                  tw_bar.contiguous()), None, None, None, None)


def _engine_uses(t: torch.Tensor) -> bool:
    """Will the running backward pass deliver a gradient through ``t``? (True when unsure.)"""
    try:
        return bool(torch._C._will_engine_execute_node(torch.autograd.graph.get_gradient_edge(t).node))
    except (AttributeError, RuntimeError):   # private API moved, or t is not part of a graph
        return True


class _Geometry:
    """One call's tensors and sizes, and the three C++ entry points on them."""

    def __init__(self, a, w_a, P, Q, tw, r, a_off, t_off, dm, du, scale, c0, kind):
        assert du in (0, a.shape[1]), "the angle update maps a_dim -> a_dim"
        self.a, self.w_a, self.P, self.Q, self.tw, self.r = a, w_a, P, Q, tw, r
        self.a_off, self.t_off, self.dm, self.du, self.scale, self.c0, self.kind = a_off, t_off, dm, du, scale, c0, kind
        self.threads = torch.get_num_threads()

    def call(self, mode: int, ins: list, outs: list) -> None:
        assert self.a_off.dtype == torch.int64 and self.t_off.dtype == torch.int64
        w_t = self.w_a.t().contiguous()
        arrays = [(ctypes.c_void_p * max(len(x), 1))(*[_ptr(t) for t in x]) for x in (ins, outs)]
        _entry("triples", self.a.dtype)(
            mode, _ptr(self.a_off), _ptr(self.t_off), self.a_off.shape[0] - 1, self.dm, self.du, self.a.shape[1],
            *(_ptr(t) for t in (self.P, self.Q, self.a, self.w_a, w_t, self.tw, self.r)), self.scale, self.c0,
            *_activation(self.kind), self.threads, *arrays)

    def backward(self, gz, ga, need_w: bool, need_tw: bool):
        """(g_a, gW, gP, gQ, gtw, gr); gW and gr None unless need_w, gtw None unless need_tw (and a message)."""
        a, w = self.a, self.dm + self.du
        g_a, gP, gQ = torch.empty_like(a), torch.empty_like(self.P), torch.empty_like(self.Q)
        gtw = torch.empty_like(self.tw) if need_tw and self.dm else None
        GX = a.new_empty((a.shape[0], w)) if need_w else None
        gr = a.new_zeros((self.threads, self.du)) if need_w else None
        self.call(1, [gz, ga], [g_a, gP, gQ, gtw, GX, gr])
        return g_a, (a.t() @ GX if need_w else None), gP, gQ, gtw, (gr.sum(0) if need_w and self.du else None)

    def second_order(self, gz, ga, g_a_bar, P_bar, Q_bar, tw_bar):
        """Derivatives of <(g_a, gP, gQ, gtw), (g_a_bar, P_bar, Q_bar, tw_bar)> against
        (gz, ga, a, w_a, P, Q, tw, r)."""
        a, w, T = self.a, self.dm + self.du, self.a.shape[0]
        gzb, gab = torch.empty_like(gz), torch.empty_like(ga)
        Xb, GX = a.new_empty((T, w)), a.new_empty((T, w))
        Pout, Qout, twb = torch.empty_like(self.P), torch.empty_like(self.Q), torch.empty_like(self.tw)
        rb = a.new_zeros((self.threads, self.du))
        self.call(2, [gz, ga, g_a_bar @ self.w_a, P_bar, Q_bar, tw_bar if self.dm else None],
                  [gzb, gab, Xb, GX, Pout, Qout, twb, rb])
        if self.du:
            gab.add_(g_a_bar, alpha=self.c0)                 # g_a = gx W^T + c0 ga
        a_bar = Xb @ self.w_a.t()
        w_bar = torch.addmm(a.t() @ Xb, g_a_bar.t(), GX)   # x = ... + a W, and g_a = gx W^T
        return gzb, gab, a_bar, w_bar, Pout, Qout, (twb if self.dm else None), (rb.sum(0) if self.du else None)


def triples(a, w_a, P, Q, tw, r, a_off, t_off, dm: int, du: int, scale: float, c0: float, kind: tuple):
    """(z (Ea, dm), a_new (T, du)) of the module docstring.

    a (T, a_dim); w_a (a_dim, dm + du); P, Q (Ea, dm + du); tw (T,); r (du,); a_off, t_off
    (centres + 1,) int64 angle-edge and triple offsets per centre (triples centre by centre,
    j-major). Differentiable in every tensor input, twice in a, P, Q and tw (force training)."""
    return _Triples.apply(a, w_a, P, Q, tw, r, a_off, t_off, dm, du, scale, c0, kind)


def act_value(x: torch.Tensor, w: torch.Tensor | None, kind: tuple) -> torch.Tensor:
    """f(x) [* w[:, None]] for x (R, C) (or any shape when w is None), one pass, no autograd."""
    x = x.contiguous()
    out = torch.empty_like(x)
    _act(None, x, w, out, None, kind)
    return out


def act_grad(grad: torch.Tensor, x: torch.Tensor, w: torch.Tensor | None, kind: tuple, need_w: bool = False):
    """(grad [w] f'(x), sum_c grad f(x) or None): the backward of :func:`act_value`, no autograd."""
    x, grad = x.contiguous(), grad.contiguous()
    gx = torch.empty_like(x)
    gw = x.new_empty(x.shape[0]) if need_w else None
    _act(grad, x, w, gx, gw, kind)
    return gx, gw


def act_grad2(gg: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, w: torch.Tensor | None,
              ggw: torch.Tensor | None, kind: tuple, need_w: bool = False):
    """The derivative of :func:`act_grad` against the cotangents gg (of gx) and ggw (of gw; None: 0),
    no autograd: (d grad, d x, d w or None) with d grad = gg w f' + ggw f, d x = grad (gg w f'' + ggw f'),
    d w = sum_c gg grad f' (w None: 1)."""
    gg, grad, x = gg.contiguous(), grad.contiguous(), x.contiguous()
    d_grad, d_x = torch.empty_like(x), torch.empty_like(x)
    d_w = x.new_empty(x.shape[0]) if need_w else None
    w, ggw = (None if t is None else t.contiguous() for t in (w, ggw))     # kept alive for the call
    _entry("act2", x.dtype)(_ptr(gg), _ptr(grad), _ptr(x), _ptr(w), _ptr(ggw), _ptr(d_grad), _ptr(d_x), _ptr(d_w),
                            *_rows_cols(x), *_activation(kind), torch.get_num_threads())
    return d_grad, d_x, d_w


def _act(grad, x, w, out, gw, kind):
    w = None if w is None else w.contiguous()        # a name keeps a copy alive until the call returns
    _entry("act", x.dtype)(_ptr(grad), _ptr(x), _ptr(w), _ptr(out), _ptr(gw), *_rows_cols(x), *_activation(kind),
                           torch.get_num_threads())


def _rows_cols(x: torch.Tensor) -> tuple[int, int]:
    """x as the activation kernels see it: (rows, cols), one weight w per row (a 1-D x is one row)."""
    cols = x.shape[-1] if x.dim() > 1 else x.numel()
    return x.numel() // max(cols, 1), cols


def ready(dtype: torch.dtype) -> bool:
    """Whether the library serves this dtype (built and checked; any activation kind will do)."""
    return available(dtype, ("silu",))


def outer(hw: torch.Tensor, feat: torch.Tensor, gather: torch.Tensor | None, e_off: torch.Tensor,
          size: int) -> torch.Tensor:
    """H[s] = sum_{e in segment s} hw[e] (x) feat[gather[e]] (feat[e] when gather is None) -> (size, 3, d).
    e_off (size + 1,): the edges of centre s are [e_off[s], e_off[s + 1]) (edges sorted by centre)."""
    hw, feat = hw.contiguous(), feat.contiguous()
    H = hw.new_empty((size, 3, feat.shape[-1]))
    _outer(e_off, size, gather, hw, feat, H, None, None, None)
    return H


def outer_grad(g: torch.Tensor, hw: torch.Tensor, feat: torch.Tensor, gather: torch.Tensor | None,
               e_off: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d hw (E, 3), d f (E, d) per edge) of :func:`outer` against g (size, 3, d); no autograd."""
    hw, feat, g = hw.contiguous(), feat.contiguous(), g.contiguous()
    ghw, gf = torch.empty_like(hw), hw.new_empty((hw.shape[0], feat.shape[-1]))
    _outer(e_off, g.shape[0], gather, hw, feat, None, g, ghw, gf)
    return ghw, gf


def _outer(e_off, size, gather, hw, feat, H, g, ghw, gf):
    assert e_off.dtype == torch.int64 and e_off.shape[0] == size + 1 and (gather is None or gather.dtype == torch.int64)
    e_off, gather = e_off.contiguous(), None if gather is None else gather.contiguous()   # alive for the call
    _entry("outer", hw.dtype)(_ptr(e_off), size, _ptr(gather), _ptr(hw), _ptr(feat), feat.shape[-1], _ptr(H),
                              _ptr(g), _ptr(ghw), _ptr(gf), torch.get_num_threads())


def _entry(name: str, dtype: torch.dtype):
    """The library's ``dpa3_<name>_f32`` or ``_f64`` function."""
    return getattr(_STATE["lib"], f"dpa3_{name}_{'f32' if dtype == torch.float32 else 'f64'}")


def _ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr() if t is not None else 0)


def _activation(kind: tuple) -> tuple:
    """(kind code, threshold, kappa, shift) as the C functions take them (silut's parameters, else 0)."""
    params = [float(v) for v in kind[1:4]] if kind[0] == "silut" else [0.0, 0.0, 0.0]
    return (_KINDS[kind[0]], *params)


def reference(a, w_a, P, Q, tw, r, a_off, t_off, dm, du, scale, c0, act):
    """The same with torch operations (the eager path's formulas), for checks and tests."""
    tj, tk = triple_index(a_off)
    x = P.index_select(0, tj) + Q.index_select(0, tk) + a @ w_a
    f = act(x)
    z = a.new_zeros((P.shape[0], dm)).index_add(0, tj, f[:, :dm] * tw[:, None]) * scale
    return z, (c0 * a + r * f[:, dm:]) if du else a.new_empty((a.shape[0], 0))


# ------------------------------------------------------------------------------- the library


def _cache_dir() -> Path:
    """$XDG_CACHE_HOME/dpa3-al/kernels (~/.cache/...), or a per-user temporary directory when that
    cannot be created (read-only home on some clusters and containers)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "dpa3-al" / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"dpa3-al-kernels-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def _cpu_id() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor()


def _build() -> ctypes.CDLL:
    """Compile (or reuse) the shared library; raises on any toolchain problem."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++) on PATH")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    def target_for(flags: list[str]) -> Path:
        key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(flags), version, _cpu_id(),
                                        platform.machine()]).encode()).hexdigest()[:16]
        return _cache_dir() / f"kernels-{key}.so"

    candidates = [(FLAGS + threading, target_for(FLAGS + threading)) for threading in THREADING]
    built = [target for _, target in candidates if target.exists()]
    target = built[0] if built else _compile(compiler, candidates)
    lib = ctypes.CDLL(str(target))
    for suffix in ("f32", "f64"):
        fn = getattr(lib, f"dpa3_triples_{suffix}")
        fn.restype = None
        fn.argtypes = ([ctypes.c_int] + [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 4 + [ctypes.c_void_p] * 7
                       + [ctypes.c_double] * 2 + [ctypes.c_int] + [ctypes.c_double] * 3 + [ctypes.c_int]
                       + [ctypes.c_void_p] * 2)
    lib.dpa3_act_f32.restype = lib.dpa3_act_f64.restype = None
    lib.dpa3_act_f32.argtypes = lib.dpa3_act_f64.argtypes = (
        [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 2 + [ctypes.c_int] + [ctypes.c_double] * 3 + [ctypes.c_int])
    lib.dpa3_act2_f32.restype = lib.dpa3_act2_f64.restype = None
    lib.dpa3_act2_f32.argtypes = lib.dpa3_act2_f64.argtypes = (
        [ctypes.c_void_p] * 8 + [ctypes.c_int64] * 2 + [ctypes.c_int] + [ctypes.c_double] * 3 + [ctypes.c_int])
    lib.dpa3_outer_f32.restype = lib.dpa3_outer_f64.restype = None
    lib.dpa3_outer_f32.argtypes = lib.dpa3_outer_f64.argtypes = (
        [ctypes.c_void_p, ctypes.c_int64] + [ctypes.c_void_p] * 3 + [ctypes.c_int64] + [ctypes.c_void_p] * 4
        + [ctypes.c_int])
    return lib


def _compile(compiler: str, candidates: list[tuple[list[str], Path]]) -> Path:
    """Build with the first flag set the compiler accepts; raises with every compiler error."""
    errors = []
    for flags, target in candidates:
        log.info("building the C++ kernels into %s (%s, once per machine, ~3 s)", target.parent, compiler)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            out = Path(tmp) / target.name
            proc = subprocess.run([compiler, *flags, str(SOURCE), "-o", str(out)], capture_output=True, text=True)
            if proc.returncode == 0:
                os.replace(out, target)          # atomic: a concurrent process sees all of it or nothing
                return target
            errors.append(f"{compiler} failed: {(proc.stderr or proc.stdout).strip()[:300]}")
    raise RuntimeError("; ".join(errors))


def _check(dtype: torch.dtype, kind: tuple) -> bool:
    """Build the library if needed and compare it with :func:`reference` on a small probe."""
    try:
        with torch.enable_grad():         # may be asked inside a no-grad region (a Function's forward)
            return _probe(dtype, kind)
    except Exception as err:  # noqa: BLE001 - any toolchain or numerical failure: stay eager
        _STATE["enabled"] = False
        log.warning("C++ kernels unavailable (%s: %s); using the torch path (same results, slower)",
                    type(err).__name__, str(err).splitlines()[0][:200] if str(err) else "")
        return False


def _probe(dtype: torch.dtype, kind: tuple) -> bool:
    """Build the library if needed; compare kernels and reference (values and gradients), dm, du > 0."""
    if _STATE["lib"] is None:
        _STATE["lib"] = _build()
    gen = torch.Generator().manual_seed(0)
    a_off, t_off = block_offsets([3, 1, 4, 2])
    n_t, n_e, dm, du = int(t_off[-1]), int(a_off[-1]), 5, 3
    ad = du                                   # the angle update maps a_dim -> a_dim
    args = [torch.randn(*s, generator=gen, dtype=dtype) * 3 for s in ((n_t, ad), (ad, dm + du), (n_e, dm + du),
                                                                      (n_e, dm + du))]
    args += [torch.rand(n_t, generator=gen, dtype=dtype), torch.rand(du, generator=gen, dtype=dtype)]
    for t in args:
        t.requires_grad_(True)
    rest = (a_off, t_off, dm, du, 0.7, 0.9)
    for x, y in zip(_derivatives(triples, args, rest, kind, gen), _derivatives(reference, args, rest,
                                                                                   kind_reference(kind), gen)):
        _close(x, y)
    x = args[0].detach()
    w, grad = args[4].detach(), torch.randn(x.shape, generator=gen, dtype=dtype)
    f, f1, f2 = kind_derivs(x, kind)
    _close(act_value(x, None, kind), f)
    _close(act_value(x, w, kind), f * w[:, None])
    for got_g, ref_g in zip(act_grad(grad, x, w, kind, True), (grad * w[:, None] * f1, (grad * f).sum(-1))):
        _close(got_g, ref_g)
    gg, ggw = torch.randn(x.shape, generator=gen, dtype=dtype), torch.randn(w.shape, generator=gen, dtype=dtype)
    ref2 = (gg * w[:, None] * f1 + ggw[:, None] * f, grad * (gg * w[:, None] * f2 + ggw[:, None] * f1),
            (gg * grad * f1).sum(-1))
    for got_g, ref_g in zip(act_grad2(gg, grad, x, w, ggw, kind, True), ref2):
        _close(got_g, ref_g)
    # outer products: 4 centres with 3, 0, 2, 4 edges, features gathered from 5 rows
    e_off, hw = torch.tensor([0, 3, 3, 5, 9]), torch.randn(9, 3, generator=gen, dtype=dtype)
    feat, gather = torch.randn(5, 6, generator=gen, dtype=dtype), torch.tensor([4, 0, 2, 2, 1, 3, 0, 4, 1])
    centre, f = torch.tensor([0, 0, 0, 2, 2, 3, 3, 3, 3]), feat[gather]
    ref = hw.new_zeros((4, 3, 6)).index_add_(0, centre, hw[:, :, None] * f[:, None, :])
    _close(outer(hw, feat, gather, e_off, 4), ref)
    g = torch.randn(4, 3, 6, generator=gen, dtype=dtype)
    for got_g, ref_g in zip(outer_grad(g, hw, feat, gather, e_off), ((g[centre] * f[:, None, :]).sum(-1),
                                                                     (hw[:, :, None] * g[centre]).sum(1))):
        _close(got_g, ref_g)
    return True


def _derivatives(fn, args, rest, act, gen_seed) -> list[torch.Tensor]:
    """Outputs, first derivatives (against every input, weights included) and second derivatives
    (of a weighted sum of the positional first derivatives, against every input) of ``fn``."""
    gen = torch.Generator().manual_seed(1)
    out = fn(*args, *rest, act)
    weights = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in out]
    first = torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, weights)), args, create_graph=True)
    probe = [torch.randn(g.shape, generator=gen, dtype=g.dtype) for g in first]
    positional = [0, 2, 3, 4]                    # a, P, Q, tw: what a force pass differentiates
    second = torch.autograd.grad(sum((first[i] * probe[i]).sum() for i in positional), args, allow_unused=True)
    return [*out, *first, *(torch.zeros_like(a) if g is None else g for g, a in zip(second, args))]


def _close(x: torch.Tensor, y: torch.Tensor) -> None:
    """float64: |x - y| <= 1e-7 |y| + 1e-7; float32: within 1e-4 of the largest value (the kernels' exp and
    reciprocal are accurate to a few ulp, and second derivatives sum many such terms). Plain tensor
    arithmetic: torch.testing.assert_close imports torch.distributed on first use (~1 s per process)."""
    x, y = x.detach(), y.detach()
    if x.shape != y.shape:
        raise AssertionError(f"probe: shape {tuple(x.shape)} != {tuple(y.shape)}")
    if not y.numel():
        return
    if x.dtype == torch.float64:
        tol = 1e-7 * y.abs() + 1e-7
    else:
        tol = torch.full_like(y, 1e-4 * max(1.0, float(y.abs().max())))
    err = (x - y).abs()
    if not bool((err <= tol).all()):          # NaN fails too
        raise AssertionError(f"probe: kernel and reference differ by up to {float(err.max()):.3g}")