"""Energy and forces are continuous as a neighbour crosses e_rcut and a_rcut.

Pattern of deepmd-kit's smoothness test: put a neighbour eps/2 inside a cutoff, move it by
eps across, and compare. With the polynomial switch and smooth_edge_update the jump is at
round-off level; with the legacy edge update the energy jumps at a_rcut.
"""

import numpy as np
import pytest
from ase import Atoms

from .helpers import evaluate, tiny_model

EPS = 1e-5


def _triangle(r_probe: float) -> Atoms:
    # atom 0 at the origin with a fixed close neighbour; atom 2 is the probe at distance r_probe
    return Atoms("OHH", positions=[[0, 0, 0], [0.95, 0.25, 0.1], [r_probe * np.cos(0.6), r_probe * np.sin(0.6), 0.3]])


def _probe_at(r: float) -> Atoms:
    a = _triangle(1.0)
    d = a.positions[2] / np.linalg.norm(a.positions[2])
    a.positions[2] = d * r
    return a


@pytest.mark.parametrize("which", ["e_rcut", "a_rcut"])
def test_continuous_across_cutoffs(which):
    model = tiny_model(smooth_edge_update=True, use_exp_switch=False)
    rc = getattr(model.config.descriptor, which)
    e_in, f_in, v_in = evaluate(model, _probe_at(rc - EPS / 2))
    e_out, f_out, v_out = evaluate(model, _probe_at(rc + EPS / 2))
    assert abs(e_in - e_out) < 1e-7
    np.testing.assert_allclose(f_in, f_out, atol=1e-6)
    np.testing.assert_allclose(v_in, v_out, atol=1e-6)


def test_legacy_edge_update_jumps_at_angle_cutoff():
    model = tiny_model(smooth_edge_update=False, use_exp_switch=False)
    rc = model.config.descriptor.a_rcut
    jump = abs(evaluate(model, _probe_at(rc - EPS / 2))[0] - evaluate(model, _probe_at(rc + EPS / 2))[0])
    assert jump > 1e-4, "legacy (non-smooth) edge update should be discontinuous at a_rcut"


def test_exp_switch_residual_jump_is_tiny():
    model = tiny_model(use_exp_switch=True, e_rcut=4.0, e_rcut_smth=3.5, a_rcut=3.0, a_rcut_smth=2.6)
    rc = model.config.descriptor.e_rcut
    jump = abs(evaluate(model, _probe_at(rc - EPS / 2))[0] - evaluate(model, _probe_at(rc + EPS / 2))[0])
    assert jump < 1e-4   # s(r_c) ~ 1e-6: a tiny, documented step
