"""Memory estimates and the up-front error for systems that would not fit."""

import numpy as np
import pytest

import dpa3_al.model.calculator as calc_mod
import dpa3_al.model.kernels.memory as mem
from dpa3_al.model import DPA3Calculator, MemoryEstimateError
from dpa3_al.model.calculator import atoms_to_batch

from .helpers import random_periodic, tiny_model


def test_too_large_system_fails_before_evaluation(monkeypatch):
    model = tiny_model()
    calc = DPA3Calculator(model)
    monkeypatch.setattr(calc_mod, "_CHECK_EDGES", 0)
    monkeypatch.setattr(mem, "available_bytes", lambda: 1e6)
    monkeypatch.setattr(calc_mod, "available_bytes", lambda: 1e6)
    called = []
    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward",
                        lambda self, batch, *a, **k: called.append(len(batch.types)) or forward(self, batch, *a, **k))
    atoms = random_periodic(10, seed=51) * (2, 2, 2)
    with pytest.raises(MemoryEstimateError, match=r"80 atoms .* GB .*memory mode 'default'.*atoms of this density fit"
                                                  r".*memory='low'.*Nothing was evaluated"):
        atoms.calc = calc
        atoms.get_potential_energy()
    assert 80 not in called      # only the small probe ran, never the big system


def test_low_mode_stores_less_and_stored_bytes_scale_with_the_graph():
    model = tiny_model(nlayers=4, n_dim=32, e_dim=16, a_dim=8)
    for p in model.parameters():
        p.requires_grad_(False)
    default, low = mem.unit_costs(model, "default"), mem.unit_costs(model, "low")
    assert low.stored["triple"] < 0.6 * default.stored["triple"]
    assert low.stored["edge"] < 0.5 * default.stored["edge"]
    # predicted stored bytes of a different structure match a direct measurement
    atoms = random_periodic(24, seed=52, cell=np.diag([6.0, 6.2, 6.5]))
    batch = atoms_to_batch(atoms, model.type_map)
    graph = model.build_graph(batch)
    counts = mem.graph_counts(graph)
    measured = mem._saved_by_unit(model, batch, graph, counts, "default")
    total_measured = sum(measured[u] * counts[u] for u in mem.UNITS)
    predicted = sum(default.stored[u] * counts[u] for u in mem.UNITS)
    assert abs(predicted - total_measured) < 0.2 * total_measured


def test_memory_kept_by_the_allocator_after_a_call_does_not_refuse_the_next_call(monkeypatch):
    """glibc keeps freed memory for reuse: after one large call the process is large and the
    system has less available, but the same call still fits (it reuses that memory)."""
    from dpa3_al.model.calculator import MemoryGuard
    from dpa3_al.model.calculator import atoms_to_batch

    model = tiny_model()
    guard = MemoryGuard(model)
    graph = model.build_graph(atoms_to_batch(random_periodic(10, seed=51) * (2, 2, 2), model.type_map))
    monkeypatch.setattr(calc_mod, "_CHECK_EDGES", 0)
    work = mem.unit_costs(model).peak(mem.graph_counts(graph), 0.0)
    total = 1.0 + 1.2 * work                       # room for one call, not two (base ~0: the work is tiny)
    state = {"rss": 1.0}
    monkeypatch.setattr(calc_mod, "current_bytes", lambda: state["rss"])
    monkeypatch.setattr(calc_mod, "available_bytes", lambda: total - state["rss"])
    guard.check(graph)                                               # first call: fits
    state["rss"] = 1.0 + work                                        # the allocator kept the call's memory
    guard.check(graph)                                               # same call again: still fits
    state["rss"] = 1.0 + 0.5 * work
    monkeypatch.setattr(calc_mod, "available_bytes", lambda: 0.1 * work)   # others took the memory
    with pytest.raises(MemoryEstimateError):
        guard.check(graph)


def test_training_step_costs_are_measured_on_the_force_pass_with_a_graph():
    """A training step keeps the force pass's graph for the loss backward: its stored bytes exceed
    inference's, and the low mode (layers recomputed in both backward passes) keeps far less."""
    model = tiny_model(nlayers=4, n_dim=32, e_dim=16, a_dim=8)
    infer = mem.unit_costs(model, "default")
    train_default, train_low = mem.unit_costs(model, "default", training=True), mem.unit_costs(model, "low", training=True)
    assert train_default.training and train_default.stored["triple"] > 1.5 * infer.stored["triple"]
    # the C++ per-triple kernels (model/kernels/cpp.py) keep only a and its gradient per triple and layer in
    # the default mode, so the low mode's gain is now mostly on the edges and atoms
    assert train_low.stored["triple"] < 0.7 * train_default.stored["triple"]
    assert train_low.stored["edge"] < 0.3 * train_default.stored["edge"]
    counts = {"atom": 200, "edge": 20_000, "angle_edge": 5_000, "triple": 130_000}
    assert train_low.peak(counts, 0.0) < 0.85 * train_default.peak(counts, 0.0)     # 4 layers


def test_training_that_would_not_fit_is_refused_before_the_first_step(tmp_path, monkeypatch):
    import dpa3_al.model.train.trainer as train_mod
    from dpa3_al.model.train.trainer import train
    from dpa3_al.model.train.config import TrainConfig

    from .train_helpers import emt_system, tiny_config

    data = emt_system(tmp_path / "data", n_frames=4)
    monkeypatch.setattr(train_mod, "_CHECK_EDGES", 0)
    monkeypatch.setattr(mem, "available_bytes", lambda: 1e6)
    with pytest.raises(MemoryEstimateError, match=r"training data .*data: a training step on 8 atoms .* GB in memory "
                                                  r"mode 'default'.*model.memory: low.*Training did not start"):
        train(TrainConfig.from_dict(tiny_config([data], steps=2)), tmp_path / "run")
    assert not list((tmp_path / "run").glob("*.pt"))
