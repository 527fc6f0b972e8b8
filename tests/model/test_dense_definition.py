"""Production (flat graph, chunks, C++ kernels on and off) agrees with the dense definition of the
layer (dpa3_al.model.reference) on small random periodic systems; sel normalisation semantics."""

import shutil

import numpy as np
import pytest

from dpa3_al.model.calculator import atoms_to_batch
from dpa3_al.model.kernels import cpp as ckernels
from dpa3_al.model.reference import reference_energy_forces

from .helpers import evaluate, random_periodic, tiny_model

HAS_COMPILER = bool(shutil.which("g++") or shutil.which("c++"))
KERNELS = [pytest.param(False, id="plain"),
           pytest.param(True, id="cpp", marks=pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler"))]


@pytest.mark.parametrize("cpp", KERNELS)
@pytest.mark.parametrize("opts", [
    dict(e_sel=40, a_sel=12),                                       # no truncation, lots of padding
    dict(e_sel=10, a_sel=4),                                        # truncation: nearest-N rule on both sides
    dict(e_sel=40, a_sel=12, smooth_edge_update=False, a_compress_rate=1, a_compress_e_rate=2,
         a_compress_use_split=True, n_multi_edge_message=2),
    dict(e_sel=40, a_sel=12, use_exp_switch=True, edge_init_use_dist=True, a_compress_rate=2,
         a_compress_use_split=False),
    dict(e_sel=40, a_sel=12, update_style="res_avg", activation_function="silut:1.0", nlayers=4),
], ids=["padding", "truncation", "legacy-split-heads", "exp-linear-compress", "res-avg-silut-tail"])
def test_production_equals_the_dense_definition(opts, cpp, monkeypatch):
    monkeypatch.setitem(ckernels._STATE, "enabled", cpp)
    monkeypatch.setitem(ckernels._STATE, "ready", {})
    model = tiny_model(**opts)
    atoms = random_periodic(7, seed=21, cell=np.diag([3.6, 3.9, 4.2]) + 0.3)
    e_flat, f_flat, _ = evaluate(model, atoms)
    assert any(ckernels._STATE["ready"].values()) == cpp           # the C++ kernels served (or not) as asked
    e_dense, f_dense = reference_energy_forces(model, atoms)
    assert abs(e_flat - e_dense) < 1e-9
    np.testing.assert_allclose(f_flat, f_dense, atol=1e-9)


@pytest.mark.parametrize("memory", ["default", "low"])
def test_chunked_production_equals_the_dense_definition(memory):
    """Chunks of a few centres (and the low mode's deferred angle updates) change nothing."""
    model = tiny_model(e_sel=40, a_sel=12, nlayers=4)
    model.set_memory(memory)
    model.descriptor.chunk_triples = 60
    atoms = random_periodic(7, seed=23, cell=np.diag([3.6, 3.9, 4.2]) + 0.3)
    assert model.build_graph(atoms_to_batch(atoms, model.type_map)).n_triples > 3 * 60     # several chunks
    e_flat, f_flat, _ = evaluate(model, atoms)
    e_dense, f_dense = reference_energy_forces(model, atoms)
    assert abs(e_flat - e_dense) < 1e-9
    np.testing.assert_allclose(f_flat, f_dense, atol=1e-9)


def test_dynamic_large_sel_equals_static_when_nothing_truncated():
    static = tiny_model(e_sel=30, a_sel=12)
    dynamic = tiny_model(e_sel=300, a_sel=120, use_dynamic_sel=True, sel_reduce_factor=10.0)
    dynamic.load_state_dict(static.state_dict())          # weights do not depend on sel
    atoms = random_periodic(6, seed=22)
    e_s, f_s, v_s = evaluate(static, atoms)
    e_d, f_d, v_d = evaluate(dynamic, atoms)
    assert abs(e_s - e_d) < 1e-10
    np.testing.assert_allclose(f_s, f_d, atol=1e-10)
    # sel is part of the function (the normalisers), not just a buffer size
    other = tiny_model(e_sel=40, a_sel=12)
    other.load_state_dict(static.state_dict())
    assert abs(evaluate(other, atoms)[0] - e_s) > 1e-6
