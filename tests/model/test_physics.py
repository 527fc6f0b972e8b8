"""Symmetries and derivatives of the energy model (float64)."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from .helpers import evaluate, random_cluster, random_periodic, tiny_model

OPTION_SETS = {
    "default-like": {},
    "exp-dist-compress": dict(use_exp_switch=True, edge_init_use_dist=True, a_compress_rate=1, a_compress_e_rate=2,
                              a_compress_use_split=True),
    "compress-linear-heads": dict(a_compress_rate=2, a_compress_e_rate=1, a_compress_use_split=False,
                                  n_multi_edge_message=2, activation_function="silu"),
    "dynamic-legacy-styles": dict(use_dynamic_sel=True, sel_reduce_factor=5.0, update_style="res_avg",
                                  activation_function="tanh"),
    "sequential": dict(sequential_update=True, update_residual_init="norm"),
    "legacy-edge-incr": dict(smooth_edge_update=False, update_style="res_incr", concat_output_tebd=True),
}


@pytest.fixture(params=list(OPTION_SETS), ids=list(OPTION_SETS))
def model(request):
    return tiny_model(**OPTION_SETS[request.param])


def test_translation_and_wrapping(model):
    atoms = random_periodic(10, seed=1)
    e0, f0, v0 = evaluate(model, atoms)
    moved = atoms.copy()
    moved.positions += np.array([0.37, -1.2, 2.9])
    e1, f1, v1 = evaluate(model, moved)
    moved.wrap()
    e2, f2, v2 = evaluate(model, moved)
    for e, f, v in ((e1, f1, v1), (e2, f2, v2)):
        assert abs(e - e0) < 1e-10
        np.testing.assert_allclose(f, f0, atol=1e-10)
        np.testing.assert_allclose(v, v0, atol=1e-10)


def test_rotation(model):
    atoms = random_periodic(10, seed=2)
    q = Rotation.random(random_state=3).as_matrix()
    rot = atoms.copy()
    rot.set_cell(atoms.cell.array @ q.T, scale_atoms=False)
    rot.positions = atoms.positions @ q.T
    e0, f0, v0 = evaluate(model, atoms)
    e1, f1, v1 = evaluate(model, rot)
    assert abs(e1 - e0) < 1e-10
    np.testing.assert_allclose(f1, f0 @ q.T, atol=1e-10)
    np.testing.assert_allclose(v1, q @ v0 @ q.T, atol=1e-9)


def test_permutation(model):
    atoms = random_cluster(14, seed=4)
    perm = np.random.default_rng(5).permutation(len(atoms))
    e0, f0, v0 = evaluate(model, atoms)
    e1, f1, v1 = evaluate(model, atoms[perm])
    assert abs(e1 - e0) < 1e-10
    np.testing.assert_allclose(f1, f0[perm], atol=1e-10)
    np.testing.assert_allclose(v1, v0, atol=1e-10)


def test_forces_are_minus_energy_gradient(model):
    atoms = random_periodic(6, seed=6, cell=np.diag([3.1, 3.3, 3.6]) + 0.4)  # cell < cutoff: self images
    _, forces, _ = evaluate(model, atoms)
    h = 1e-5
    fd = np.zeros_like(forces)
    for i in range(len(atoms)):
        for x in range(3):
            for sign in (1, -1):
                a = atoms.copy()
                a.positions[i, x] += sign * h
                fd[i, x] -= sign * evaluate(model, a)[0] / (2 * h)
    np.testing.assert_allclose(forces, fd, atol=1e-6 * max(1.0, np.abs(fd).max()))


def test_virial_is_minus_strain_derivative_and_stress(model):
    from dpa3_al.model.calculator import DPA3Calculator

    atoms = random_periodic(7, seed=7)
    _, _, virial = evaluate(model, atoms)
    h = 1e-6
    fd = np.zeros((3, 3))
    for a_ in range(3):
        for b_ in range(3):
            for sign in (1, -1):
                eps = np.eye(3)
                eps[a_, b_] += sign * h
                s = atoms.copy()
                s.set_cell(atoms.cell.array @ eps, scale_atoms=False)
                s.positions = atoms.positions @ eps
                fd[a_, b_] -= sign * evaluate(model, s)[0] / (2 * h)
    np.testing.assert_allclose(virial, fd, atol=1e-6)
    np.testing.assert_allclose(virial, virial.T, atol=1e-9)
    atoms.calc = DPA3Calculator(model)
    stress = atoms.get_stress(voigt=False)
    np.testing.assert_allclose(stress, -virial / atoms.cell.volume, atol=1e-10)


def test_supercell_is_extensive_including_tiny_cells():
    model = tiny_model(use_exp_switch=True)
    for cell in (np.diag([2.2, 2.5, 2.8]) + 0.3, [[3.0, 0, 0], [1.4, 2.6, 0], [0.7, -0.9, 2.4]]):  # all < cutoff
        prim = random_periodic(3, seed=8, cell=cell)
        e1, f1, v1 = evaluate(model, prim)
        sup = prim * (2, 1, 3)
        e6, f6, v6 = evaluate(model, sup)
        assert abs(e6 - 6 * e1) < 1e-9 * max(1, abs(e6))
        np.testing.assert_allclose(f6[: len(prim)], f1, atol=1e-9)
        np.testing.assert_allclose(v6, 6 * v1, atol=1e-8)


def test_mixed_pbc_slab_forces():
    model = tiny_model()
    atoms = random_periodic(8, seed=9)
    atoms.pbc = [True, True, False]
    e0, f, _ = evaluate(model, atoms)
    a = atoms.copy()
    a.positions[2, 2] += 1e-5
    b = atoms.copy()
    b.positions[2, 2] -= 1e-5
    assert abs(-(evaluate(model, a)[0] - evaluate(model, b)[0]) / 2e-5 - f[2, 2]) < 1e-6


def test_cluster_net_force_and_torque_vanish():
    model = tiny_model()
    atoms = random_cluster(16, seed=10)
    e, f, v = evaluate(model, atoms)
    assert np.isfinite(e)
    np.testing.assert_allclose(f.sum(axis=0), 0, atol=1e-10)
    com = atoms.positions.mean(axis=0)
    np.testing.assert_allclose(np.cross(atoms.positions - com, f).sum(axis=0), 0, atol=1e-9)


def test_isolated_atom_and_empty_neighbourhoods():
    from ase import Atoms

    model = tiny_model()
    e, f, v = evaluate(model, Atoms("O", positions=[[0, 0, 0]]))
    assert np.isfinite(e) and np.all(f == 0)
    e2, f2, _ = evaluate(model, Atoms("OH", positions=[[0, 0, 0], [0, 0, 30.0]]))   # far apart: additive
    e_h, _, _ = evaluate(model, Atoms("H", positions=[[0, 0, 0]]))
    assert abs(e2 - (e + e_h)) < 1e-10


def test_float32_matches_float64():
    m64 = tiny_model()
    m32 = tiny_model(precision="float32")
    m32.load_state_dict({k: v.to(m32.state_dict()[k].dtype) for k, v in m64.state_dict().items()})
    atoms = random_periodic(10, seed=11)
    e64, f64, v64 = evaluate(m64, atoms)
    e32, f32, v32 = evaluate(m32, atoms)
    assert abs(e32 - e64) < 1e-4 * max(1.0, abs(e64) / len(atoms))
    np.testing.assert_allclose(f32, f64, atol=1e-4 * max(1.0, np.abs(f64).max()))
