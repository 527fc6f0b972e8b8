"""The O(N) neighbour search equals brute force, including cells smaller than the cutoff."""

import numpy as np
import pytest

from dpa3_al.model.neighbor import brute_force_pairs, neighbor_pairs


def _key(p):
    return sorted(zip(p.i.tolist(), p.j.tolist(), map(tuple, p.shift.tolist())))


@pytest.mark.parametrize("seed", range(40))
def test_cell_list_equals_brute_force_on_random_triclinic_cells(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    cell = np.eye(3) * rng.uniform(1.2, 5.0) + rng.uniform(-1.0, 1.0, (3, 3))
    pbc = rng.random(3) < 0.75
    pos = rng.random((n, 3)) @ cell + rng.uniform(-4, 4, (n, 3))     # not wrapped
    cutoff = rng.uniform(1.5, 6.0)
    a, b = neighbor_pairs(pos, cell, pbc, cutoff), brute_force_pairs(pos, cell, pbc, cutoff)
    assert _key(a) == _key(b)
    diff = pos[a.j] + a.shift @ cell - pos[a.i]
    np.testing.assert_allclose(np.linalg.norm(diff, axis=1), a.distance, atol=1e-10)


def test_non_periodic_cluster():
    pos = np.random.default_rng(1).uniform(0, 6, (30, 3))
    a, b = neighbor_pairs(pos, None, False, 3.0), brute_force_pairs(pos, None, False, 3.0)
    assert _key(a) == _key(b) and (a.shift == 0).all()
