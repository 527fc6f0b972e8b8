"""Compiled activation kernels (model/kernels/compiled.py) give the eager formulas' numbers, first and
second derivatives included, and a toolchain failure falls back to the eager path."""

import logging
import shutil

import pytest
import torch

from dpa3_al.model.kernels import cpp as ckernels

from dpa3_al.model.kernels import compiled as fused
from dpa3_al.model.calculator import atoms_to_batch

from .helpers import random_periodic, tiny_model


@pytest.fixture(autouse=True)
def _without_cpp_kernels(monkeypatch):
    """Evaluation prefers model/kernels/cpp.py's C++ kernels; these tests are about the compiled ones."""
    monkeypatch.setitem(ckernels._STATE, "enabled", False)
    monkeypatch.setitem(ckernels._STATE, "ready", {})


def _training_quantities(model, atoms, mode):
    model.set_memory(mode)
    model.descriptor.chunk_triples = 60
    model.zero_grad()
    batch = atoms_to_batch(atoms, model.type_map)
    out = model(batch, create_graph=True)
    (out.forces.pow(2).sum() + out.energy.sum() + out.virial.pow(2).sum()).backward()
    return [out.energy.detach(), out.forces.detach(), out.virial.detach()] + \
        [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="no C++ compiler for torch.compile")
def test_fused_kernels_match_the_eager_path_in_evaluation_and_force_training(monkeypatch):
    model = tiny_model(activation_function="silut:1.0")          # many inputs in silut's tail
    atoms = random_periodic(10, seed=61)
    eager = _training_quantities(model, atoms, "default")
    monkeypatch.setattr(fused, "MIN_ELEMENTS", 0)                  # every tensor through the kernels
    monkeypatch.setitem(fused._STATE, "enabled", True)
    for mode in ("default", "low"):
        got = _training_quantities(model, atoms, mode)
        for a, b in zip(got, eager):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
    assert any(fused._STATE["ready"].values())                     # the compiled path really ran


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="no C++ compiler for torch.compile")
def test_fused_kernels_match_the_eager_path_in_evaluation(monkeypatch):
    """Energy, forces and virial (a backward that is not differentiated again) through the kernels."""
    model = tiny_model(activation_function="silut:1.0")
    batch = atoms_to_batch(random_periodic(10, seed=63), model.type_map)
    model.descriptor.chunk_triples = 60
    eager = model(batch)
    monkeypatch.setattr(fused, "MIN_ELEMENTS", 0)
    monkeypatch.setitem(fused._STATE, "enabled", True)
    calls, run = [], fused._run
    monkeypatch.setattr(fused, "_run", lambda fn, *args: calls.append(fn.__name__) or run(fn, *args))
    for mode in ("default", "low"):
        model.set_memory(mode)
        got = model(batch)
        for name in ("energy", "forces", "virial"):
            torch.testing.assert_close(getattr(got, name), getattr(eager, name), rtol=1e-11, atol=1e-12)
    assert {"_value", "_scaled_value", "_grad_times", "_act_scale_grad", "_outer_grad"} <= set(calls)


def test_a_compiler_failure_falls_back_to_the_eager_formulas(monkeypatch, caplog):
    model = tiny_model()
    atoms = random_periodic(8, seed=62)
    eager = _training_quantities(model, atoms, "default")
    monkeypatch.setattr(fused, "MIN_ELEMENTS", 0)
    monkeypatch.setitem(fused._STATE, "enabled", True)
    monkeypatch.setitem(fused._STATE, "ready", {})

    def broken(fn):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(fused, "_kernel", broken)
    with caplog.at_level(logging.WARNING, logger="dpa3_al.model.kernels.compiled"):
        got = _training_quantities(model, atoms, "default")
    assert "compiled activation kernels unavailable (RuntimeError: no C++ compiler found)" in caplog.text
    assert not fused._STATE["enabled"] and not any(fused._STATE["ready"].values())
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["silu", "tanh", "silut:1.0"])
def test_fused_formulas_equal_the_eager_activation_derivatives(name):
    """The formulas the kernels compile, run eagerly, against SmoothActivation.derivs."""
    from dpa3_al.model.activations import get_activation

    act = get_activation(name)
    x = 3 * torch.randn(50, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, tail = act.raw(x)
    for a, b in zip(fused._derivs(x, act.kind), act.derivs(x, tail, 2)):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)
