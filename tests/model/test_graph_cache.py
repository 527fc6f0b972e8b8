"""Training frames' neighbour graphs, built once and joined per batch (model/graph.py:concat_graphs,
model/train/batching.py:FrameGraphs)."""

from __future__ import annotations

import torch

from dpa3_al.model.calculator import atoms_to_batch
from dpa3_al.model.graph import Batch, Graph, build_graph, concat_graphs
from dpa3_al.model.train.batching import FrameGraphs, TrainingData
from dpa3_al.model.train.data import load_systems
from dpa3_al.model.train.loop import optimizer_step
from dpa3_al.model.train.loss import EnergyLoss, Prefactors

from .helpers import random_cluster, random_periodic, tiny_model
from .train_helpers import emt_system

FIELDS = ("center", "neighbor", "shift", "edge_frame", "angle_edge", "triple_j", "triple_k")


def _same(a: Graph, b: Graph) -> None:
    assert a.n_atoms == b.n_atoms
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def _frames(atoms_list, type_map):
    out = []
    for atoms in atoms_list:
        b = atoms_to_batch(atoms, type_map)
        out.append((b.positions.numpy(), b.types.numpy(), b.cells[0].numpy() if atoms.pbc.any() else None, atoms.pbc))
    return out


def test_graphs_of_single_frames_join_into_the_graph_of_their_batch():
    """Frames of different sizes, periodic and not: the joined graph is build_graph's of the batch, index for index."""
    cfg = tiny_model().config.descriptor
    frames = _frames([random_periodic(9, seed=3), random_cluster(7, seed=4), random_periodic(12, seed=5)], ("O", "H"))
    whole = build_graph(Batch.from_arrays(frames), cfg)
    parts = [build_graph(Batch.from_arrays([f]), cfg) for f in frames]
    assert whole.n_triples > 0 and min(p.n_edges for p in parts) > 0
    _same(concat_graphs(parts, [1, 1, 1]), whole)
    # two batches of two and one frames join the same way (edge_frame offset by frames, not graphs)
    _same(concat_graphs([build_graph(Batch.from_arrays(frames[:2]), cfg), parts[2]], [2, 1]), whole)


def test_frame_graphs_builds_each_frame_once_and_steps_match_the_uncached_ones(tmp_path):
    """Each (system, frame) is built once; training steps on the kept graphs equal steps without them, bit for bit;
    past the budget the batch's graph is left to the model (None)."""
    data = TrainingData(load_systems([emt_system(tmp_path / "d", 6, seed=2)]), ["Au", "Cu"], batch_size=2)
    builds = []
    probe = tiny_model(("Au", "Cu"), seed=1)

    def build(batch):
        builds.append(batch.n_frames)
        return probe.build_graph(batch)

    graphs = FrameGraphs(data, build, max_triples=10**9)
    picks = [[(0, 0), (0, 3)], [(0, 3), (0, 5)], [(0, 0), (0, 3)], [(0, 5), (0, 0)]]
    models = [tiny_model(("Au", "Cu"), seed=1) for _ in range(2)]
    for cached, model in zip((True, False), models):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=1e-3)
        loss = EnergyLoss(Prefactors(), 1e-3)
        for p in picks:
            batch, labels = data.batch(p)
            graph = graphs.graph(p) if cached else None
            if cached:
                _same(graph, probe.build_graph(batch))
            optimizer_step(model, opt, params, loss, batch, labels, 1e-3, 5.0, True, graph)
    assert builds == [1, 1, 1]                 # frames 0, 3, 5, once each
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)
    small = FrameGraphs(data, build, max_triples=1)    # the first frame spends the budget
    assert small.graph([(0, 1)]) is not None and small.graph([(0, 1), (0, 2)]) is None
    assert list(small.kept) == [(0, 1)]
