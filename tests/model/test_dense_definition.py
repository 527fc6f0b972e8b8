"""Flat (production) and padded (naive oracle) evaluations agree; sel normalisation semantics."""

import numpy as np
import pytest

from .dense_reference import dense_energy_forces
from .helpers import evaluate, random_periodic, tiny_model


@pytest.mark.parametrize("opts", [
    dict(e_sel=40, a_sel=12),                                       # no truncation, lots of padding
    dict(e_sel=10, a_sel=4),                                        # truncation: nearest-N rule on both sides
    dict(e_sel=40, a_sel=12, smooth_edge_update=False, a_compress_rate=1, a_compress_e_rate=2,
         a_compress_use_split=True, n_multi_edge_message=2),
    dict(e_sel=40, a_sel=12, use_exp_switch=True, edge_init_use_dist=True, a_compress_rate=2,
         a_compress_use_split=False),
], ids=["padding", "truncation", "legacy-split-heads", "exp-linear-compress"])
def test_flat_equals_padded(opts):
    model = tiny_model(**opts)
    atoms = random_periodic(7, seed=21, cell=np.diag([3.6, 3.9, 4.2]) + 0.3)
    e_flat, f_flat, _ = evaluate(model, atoms)
    e_dense, f_dense = dense_energy_forces(model, atoms)
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
