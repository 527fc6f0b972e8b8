"""Low-memory mode (chunked, recomputed layers) gives the default mode's numbers."""

import numpy as np
import pytest
import torch

from dpa3_al.model.calculator import atoms_to_batch

from .helpers import evaluate, random_periodic, tiny_model


def _both_modes(model, atoms, chunk_triples=50):
    model.set_memory("default")
    ref = evaluate(model, atoms)
    model.set_memory("low")
    model.descriptor.chunk_triples = chunk_triples      # force many chunks on a small system
    low = evaluate(model, atoms)
    model.set_memory("default")
    return ref, low


@pytest.mark.parametrize("opts", [{}, dict(sequential_update=True), dict(a_compress_rate=1, a_compress_e_rate=2,
                                                                           a_compress_use_split=True),
                                  dict(nlayers=5)],
                         ids=["parallel", "sequential", "compressed", "five-layers"])
def test_low_memory_equals_default(opts):
    model = tiny_model(**opts)
    (e0, f0, v0), (e1, f1, v1) = _both_modes(model, random_periodic(12, seed=41))
    assert abs(e0 - e1) < 1e-10
    np.testing.assert_allclose(f1, f0, atol=1e-10)
    np.testing.assert_allclose(v1, v0, atol=1e-10)


def test_supercell_in_both_modes():
    model = tiny_model()
    prim = random_periodic(4, seed=42, cell=np.diag([3.0, 3.2, 3.4]))
    (e1, _, _), (e1_low, _, _) = _both_modes(model, prim)
    (e8, _, v8), (e8_low, _, v8_low) = _both_modes(model, prim * (2, 2, 2))
    assert abs(e8 - 8 * e1) < 1e-9 and abs(e8_low - 8 * e1_low) < 1e-9
    np.testing.assert_allclose(v8_low, v8, atol=1e-10)


@pytest.mark.parametrize("opts", [{}, dict(sequential_update=True), dict(nlayers=5, a_compress_rate=1,
                                                                           a_compress_e_rate=2, a_compress_use_split=True)],
                         ids=["parallel", "sequential", "compressed-five-layers"])
def test_low_memory_supports_force_training_gradients(opts):
    """A force+virial training loss differentiates the force pass once more: the low mode's
    recomputed layers (model/recompute.py) give the default mode's parameter gradients, and
    the gradient with respect to the positions through the second derivative as well."""
    model = tiny_model(**opts)
    atoms = random_periodic(8, seed=43)
    grads = []
    for mode in ("default", "low"):
        model.set_memory(mode)
        model.descriptor.chunk_triples = 40
        model.zero_grad()
        batch = atoms_to_batch(atoms, model.type_map)
        batch.positions.requires_grad_(True)
        out = model(batch, create_graph=True)
        (out.forces.pow(2).sum() + out.energy.sum() + out.virial.pow(2).sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]
                               + [batch.positions.grad.flatten()]))
    assert grads[0].abs().max() > 1e-3
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-11)


def test_low_memory_keeps_angle_features_of_every_second_layer_only():
    """Deferred angle updates: a 3-layer model has one angle update (layer 0), a 5-layer model
    three (layers 0-2; layer 3's would feed only the angle-free last layer). Without deferral the
    low mode would keep a^1, a^2, a^3 (T, a_dim) for the recomputation; with it only a^2."""
    from dpa3_al.model.kernels.memory import unit_costs

    a_bytes = 8 * 8                                                   # a_dim 8, float64
    per_triple = {L: unit_costs(tiny_model(nlayers=L), "low").stored["triple"] for L in (3, 5)}
    extra = per_triple[5] - per_triple[3]
    assert 0.9 * a_bytes < extra < 1.5 * a_bytes
