"""C++ evaluation kernels (model/kernels/cpp.py): each kernel equals the torch formulas it replaces,
the model gives the same energy, forces and virial with them as without (both memory modes,
chunked), and a build failure falls back to the torch path with one warning."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpa3_al.model.kernels import cpp as ckernels
from dpa3_al.model.activations import get_activation
from dpa3_al.model.calculator import atoms_to_batch
from dpa3_al.model.repflow import RepFlowLayer

from .helpers import random_periodic, tiny_model

needs_compiler = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="no C++ compiler")
F64 = torch.float64


@needs_compiler
@pytest.mark.parametrize("name", ["silu", "silut:1.0", "tanh"])
@pytest.mark.parametrize("dm,du", [(5, 3), (5, 0), (0, 3)])
def test_triple_kernel_equals_the_gather_scatter_formulas(name, dm, du):
    """Values and first derivatives (a, P, Q, tw) against ckernels.reference (index_select/index_add),
    with a centre without angle edges and message-only / update-only calls (the low mode's split)."""
    act = get_activation(name)
    assert ckernels.available(F64, act.kind)
    gen = torch.Generator().manual_seed(7)
    a_off, t_off = ckernels.block_offsets([3, 0, 5, 1, 2])
    n_t, n_e, ad = int(t_off[-1]), int(a_off[-1]), 3
    a, w_a = torch.randn(n_t, ad, dtype=F64, generator=gen), torch.randn(ad, dm + du, dtype=F64, generator=gen)
    P, Q = (2 * torch.randn(n_e, dm + du, dtype=F64, generator=gen) for _ in range(2))
    tw, r = torch.rand(n_t, dtype=F64, generator=gen), torch.rand(du, dtype=F64, generator=gen)
    inputs = [t.requires_grad_(True) for t in (a, P, Q, tw)]
    rest = (w_a, a_off, t_off, dm, du, 0.6, 0.8)

    def run(fn, *extra):
        z, a_new = fn(a, rest[0], P, Q, tw, r, *rest[1:], *extra)
        loss = (z * torch.linspace(-1, 1, z.numel(), dtype=F64).view_as(z)).sum() + (a_new ** 2).sum()
        return [z, a_new, *torch.autograd.grad(loss, inputs, allow_unused=True)]

    got, ref = run(ckernels.triples, act.kind), run(ckernels.reference, act)
    for x, y in zip(got, ref):
        if x is None or y is None:
            assert (x is None or not x.abs().sum()) and (y is None or not y.abs().sum())
            continue
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


@needs_compiler
@pytest.mark.parametrize("name", ["silu", "silut:1.0", "tanh"])
def test_activation_kernels_equal_the_eager_derivatives(name):
    act = get_activation(name)
    assert ckernels.available(F64, act.kind)
    gen = torch.Generator().manual_seed(3)
    x, g = 3 * torch.randn(40, 7, dtype=F64, generator=gen), torch.randn(40, 7, dtype=F64, generator=gen)
    w = torch.rand(40, dtype=F64, generator=gen)
    f, f1, _ = act.derivs(x, act.tail.find(x, act.value(x, None)) if act.tail is not None else None, 1)
    torch.testing.assert_close(ckernels.act_value(x, None, act.kind), f, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(ckernels.act_value(x, w, act.kind), f * w[:, None], rtol=1e-13, atol=1e-14)
    gx, gw = ckernels.act_grad(g, x, w, act.kind, need_w=True)
    torch.testing.assert_close(gx, g * w[:, None] * f1, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(gw, (g * f).sum(-1), rtol=1e-13, atol=1e-14)


@needs_compiler
@pytest.mark.parametrize("name", ["silu", "silut:1.0", "tanh"])
def test_the_activation_gradient_kernel_has_autograds_derivative(name):
    """act_grad2 is the derivative of (gx, gw) = act_grad(g, x, w) (force training differentiates
    the activations' backward): against autograd through the eager formulas, with and without w."""
    act = get_activation(name)
    assert ckernels.available(F64, act.kind)
    gen = torch.Generator().manual_seed(4)
    x, g = 3 * torch.randn(30, 6, dtype=F64, generator=gen), torch.randn(30, 6, dtype=F64, generator=gen)
    w = torch.rand(30, dtype=F64, generator=gen)
    gg, ggw = torch.randn(30, 6, dtype=F64, generator=gen), torch.randn(30, dtype=F64, generator=gen)
    for scaled in (True, False):
        inputs = [t.clone().requires_grad_(True) for t in ((g, x, w) if scaled else (g, x))]
        gi, xi, wi = inputs if scaled else (*inputs, None)
        tail = act.tail.find(x, act.value(x, None)) if act.tail is not None else None
        y = act.value(xi, tail)
        gx = torch.autograd.grad((y * (wi[:, None] if scaled else 1) * gi).sum(), xi, create_graph=True)[0]
        gw = (gi * y).sum(-1) if scaled else None
        loss = (gx * gg).sum() + ((gw * ggw).sum() if scaled else 0)
        ref = torch.autograd.grad(loss, inputs)
        got = ckernels.act_grad2(gg, g, x, w if scaled else None, ggw if scaled else None, act.kind, scaled)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@needs_compiler
def test_outer_product_kernel_equals_index_add():
    assert ckernels.ready(F64)
    gen = torch.Generator().manual_seed(5)
    centre = torch.tensor([0, 0, 2, 2, 2, 3, 5, 5])                  # centres 1 and 4 have no edge
    e_off = torch.cat([torch.zeros(1, dtype=torch.int64), torch.bincount(centre, minlength=6).cumsum(0)])
    hw, feat = torch.randn(8, 3, dtype=F64, generator=gen), torch.randn(4, 5, dtype=F64, generator=gen)
    gather = torch.tensor([3, 1, 0, 0, 2, 3, 1, 2])
    for gat, fe in ((gather, feat), (None, feat[gather])):
        f = feat[gather]
        ref = hw.new_zeros(6, 3, 5).index_add_(0, centre, hw[:, :, None] * f[:, None, :])
        torch.testing.assert_close(ckernels.outer(hw, fe, gat, e_off, 6), ref, rtol=1e-13, atol=1e-14)
        g = torch.randn(6, 3, 5, dtype=F64, generator=gen)
        ghw, gf = ckernels.outer_grad(g, hw, fe, gat, e_off)
        torch.testing.assert_close(ghw, (g[centre] * f[:, None, :]).sum(-1), rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(gf, (hw[:, :, None] * g[centre]).sum(1), rtol=1e-13, atol=1e-14)


def _evaluate(model, batch, mode, use_kernels, monkeypatch):
    monkeypatch.setitem(ckernels._STATE, "enabled", use_kernels)
    monkeypatch.setitem(ckernels._STATE, "ready", {})
    model.set_memory(mode)
    return model(batch)


@needs_compiler
@pytest.mark.parametrize("style", ["res_residual", "res_avg"])
def test_model_evaluation_with_the_kernels_equals_the_torch_path(style, monkeypatch):
    """E, F, V in float64, default and low mode (with the low mode's deferred angle updates), chunked,
    with silut's tail reached; and every kernel was really called."""
    model = tiny_model(activation_function="silut:1.0", nlayers=4, update_style=style)
    for p in model.parameters():
        p.requires_grad_(False)                     # as the calculators do: evaluation
    batch = atoms_to_batch(random_periodic(10, seed=64), model.type_map)
    model.descriptor.chunk_triples = 60
    ref = _evaluate(model, batch, "default", False, monkeypatch)
    calls = []
    for owner, name in ((ckernels._Geometry, "call"), (ckernels, "_act"), (ckernels, "_outer")):
        real = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    for mode in ("default", "low"):
        got = _evaluate(model, batch, mode, True, monkeypatch)
        for key in ("energy", "forces", "virial"):
            torch.testing.assert_close(getattr(got, key), getattr(ref, key), rtol=1e-10, atol=1e-12)
    assert {"call", "_act", "_outer"} <= set(calls)


def _training_quantities(model, batch, mode, use_kernels, monkeypatch):
    monkeypatch.setitem(ckernels._STATE, "enabled", use_kernels)
    monkeypatch.setitem(ckernels._STATE, "ready", {})
    model.set_memory(mode)
    model.zero_grad()
    out = model(batch, create_graph=True)
    (out.forces.pow(2).sum() + out.energy.sum() + out.virial.pow(2).sum()).backward()
    return [out.energy.detach(), out.forces.detach(), out.virial.detach()] + \
        [p.grad.clone() for p in model.parameters() if p.grad is not None]


@needs_compiler
@pytest.mark.parametrize("style", ["res_residual", "res_avg"])
def test_force_training_through_the_kernels_equals_the_torch_path(style, monkeypatch):
    """A force-training step (E + F + V loss, parameter gradients through the second derivative of
    the per-triple kernel) gives the torch path's numbers, default and low mode, chunked."""
    model = tiny_model(activation_function="silut:1.0", nlayers=4, update_style=style)
    model.descriptor.chunk_triples = 60
    batch = atoms_to_batch(random_periodic(10, seed=67), model.type_map)
    ref = _training_quantities(model, batch, "default", False, monkeypatch)
    calls = []
    real = RepFlowLayer._triples_fused
    monkeypatch.setattr(RepFlowLayer, "_triples_fused", lambda *a, **k: calls.append(1) or real(*a, **k))
    real2 = ckernels.act_grad2
    monkeypatch.setattr(ckernels, "act_grad2", lambda *a, **k: calls.append(2) or real2(*a, **k))
    for mode in ("default", "low"):
        got = _training_quantities(model, batch, mode, True, monkeypatch)
        assert len(got) == len(ref)
        for x, y in zip(got, ref):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    assert {1, 2} <= set(calls)


def test_a_build_failure_falls_back_to_the_torch_path(monkeypatch, caplog):
    model = tiny_model()
    for p in model.parameters():
        p.requires_grad_(False)
    batch = atoms_to_batch(random_periodic(8, seed=66), model.type_map)
    ref = _evaluate(model, batch, "default", False, monkeypatch)
    monkeypatch.setitem(ckernels._STATE, "lib", None)

    def broken():
        raise RuntimeError("g++ failed: no space left on device")

    monkeypatch.setattr(ckernels, "_build", broken)
    with caplog.at_level(logging.WARNING, logger="dpa3_al.model.kernels.cpp"):
        got = _evaluate(model, batch, "default", True, monkeypatch)
    assert caplog.text.count("C++ kernels unavailable (RuntimeError: g++ failed") == 1
    assert not ckernels._STATE["enabled"]
    for key in ("energy", "forces", "virial"):
        torch.testing.assert_close(getattr(got, key), getattr(ref, key), rtol=1e-12, atol=1e-13)


def test_tensors_off_the_cpu_never_reach_the_kernels(monkeypatch):
    """The kernels read raw CPU pointers: other devices (CUDA; here the shape-only 'meta' device)
    must take the torch path."""
    from dpa3_al.model.kernels.ops import act_scale, outer_scatter

    def forbidden(*args, **kwargs):
        raise AssertionError("a C++ kernel was called with a non-CPU tensor")

    for name in ("outer", "outer_grad", "act_value", "act_grad", "triples"):
        monkeypatch.setattr(ckernels, name, forbidden)
    meta = dict(device="meta", dtype=F64)
    hw, feat = torch.randn(4, 3, **meta), torch.randn(3, 2, **meta)
    scatter, gather = torch.tensor([0, 0, 1, 1], device="meta"), torch.tensor([0, 1, 2, 0], device="meta")
    assert outer_scatter(hw, feat, gather, scatter, 2, torch.tensor([0, 2, 4], device="meta")).shape == (2, 3, 2)
    assert act_scale(torch.randn(4, 5, **meta), torch.rand(4, **meta), get_activation("silu")).shape == (4, 5)


def test_an_unwritable_cache_falls_back_to_a_temporary_directory(tmp_path, monkeypatch):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    path = ckernels._cache_dir()
    assert blocked not in path.parents and path.name.startswith("dpa3-al-kernels")


_MAPPED_OMP = """
import json
import torch
from pathlib import Path
from dpa3_al.model.kernels import cpp as ckernels
from dpa3_al.model.activations import get_activation
assert ckernels.available(torch.float32, get_activation("silu").kind)
maps = Path("/proc/self/maps").read_text().splitlines()
print(json.dumps(sorted({l.split()[-1] for l in maps if any(k in l for k in ("libgomp", "libiomp", "libomp"))})))
print(ckernels._STATE["lib"]._name)
"""


@needs_compiler
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's mapped libraries (Linux)")
def test_the_kernels_run_on_torchs_openmp_runtime():
    """Built with -fopenmp, the library's libgomp.so.1 must resolve to the copy torch loaded: a
    second OpenMP runtime would bring a second thread pool competing with torch's for the cores.
    A fresh process (other packages, e.g. pyscf, bring their own vendored runtimes)."""
    out = subprocess.run([sys.executable, "-c", _MAPPED_OMP], capture_output=True, text=True, check=True)
    runtimes_line, lib_path = out.stdout.strip().splitlines()[-2:]
    if "libgomp" not in subprocess.run(["ldd", lib_path], capture_output=True, text=True).stdout:
        pytest.skip("the compiler built the std::thread variant (no OpenMP)")
    runtimes = json.loads(runtimes_line)
    assert len(runtimes) == 1, runtimes


@needs_compiler
def test_a_compiler_without_openmp_builds_the_thread_variant_once(tmp_path, monkeypatch):
    """-fopenmp rejected (Apple clang): the std::thread variant is built and gives the same numbers.
    The library is cached under XDG_CACHE_HOME by source, flags and CPU: a second build reuses the file
    (one compilation in this test, ~20 s, serves both checks)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(ckernels, "THREADING", (["-fopenmp=no-such-runtime"], []))
    lib = ckernels._build()
    assert "libgomp" not in subprocess.run(["ldd", lib._name], capture_output=True, text=True).stdout
    built = list((tmp_path / "dpa3-al" / "kernels").glob("kernels-*.so"))
    assert [str(b) for b in built] == [lib._name]
    stamp = built[0].stat().st_mtime_ns
    assert ckernels._build()._name == lib._name and built[0].stat().st_mtime_ns == stamp
    act = get_activation("silu")
    assert ckernels.available(F64, act.kind)
    x = 3 * torch.randn(300, 70, dtype=F64, generator=torch.Generator().manual_seed(5))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)                   # rows * cols > 16384: two workers
    try:
        outs = []
        for library in (ckernels._STATE["lib"], lib):
            monkeypatch.setitem(ckernels._STATE, "lib", library)
            outs.append(ckernels.act_value(x, None, act.kind))
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
    torch.testing.assert_close(outs[1], act.value(x, None), rtol=1e-12, atol=1e-12)


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_a_kernel_that_disagrees_with_the_probe_is_not_used(dtype, monkeypatch, caplog):
    """The probe compares every kernel with the torch formulas before use: a wrong result (here the
    activation gradient kernel's, off by 1 %) leaves the torch path, with one warning."""
    monkeypatch.setitem(ckernels._STATE, "ready", {})
    monkeypatch.setitem(ckernels._STATE, "enabled", True)
    real = ckernels.act_grad2
    monkeypatch.setattr(ckernels, "act_grad2", lambda *a, **k: tuple(None if t is None else t * 1.01
                                                                     for t in real(*a, **k)))
    with caplog.at_level(logging.WARNING, logger="dpa3_al.model.kernels.cpp"):
        assert not ckernels.available(dtype, get_activation("silu").kind)
    assert "C++ kernels unavailable (AssertionError: probe: kernel and reference differ" in caplog.text
    assert not ckernels._STATE["enabled"]
