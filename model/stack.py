"""A committee of M models of one architecture evaluated as one model ("stacked").

Training a committee of small systems is bound by per-operation overhead, not arithmetic: a
force-training step of a 31-atom frame runs ~6,000 small tensor operations. The stack runs the
M members' operations together: every parameter and buffer gets a leading member axis
(model/nn.py's ``affine``, ``scale``, ``lookup`` apply them), and the frames are replicated M
times, member-major, so member m computes on its own copy of the atoms (its own positions, hence
its own forces) with its own weights::

    batch (nf frames, N atoms)  ->  M copies: atoms [m N, (m + 1) N) belong to member m
    graph (E edges, Ea angle edges, T triples)  ->  M copies with offset indices
    output energies (M nf,), forces (M N, 3)  ->  one ModelOutput per member

The members stay independent: no operation mixes two members' rows or weights, so the gradient
of the summed loss with respect to member m's weights is member m's own gradient. A stack is
for training and committee evaluation; its members are copied out as ordinary models
(:meth:`StackedCommittee.member`) to be saved.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dpa3_al.model.energy import DPA3Model, ModelOutput
from dpa3_al.model.graph import Batch, Graph, concat_graphs


class StackedCommittee(nn.Module):
    """M models with equal configurations as one module (parameters (M, ...))."""

    def __init__(self, models: list[DPA3Model]):
        super().__init__()
        if not models:
            raise ValueError("a committee stack needs at least one model")
        first = models[0]
        for k, other in enumerate(models[1:], start=1):
            if other.config != first.config:
                raise ValueError(f"member {k}'s model configuration differs from member 0's: a stack needs "
                                 f"one architecture (train the members separately)")
        self.n_members = len(models)
        self.inner = copy.deepcopy(first)
        self.inner.descriptor.chunk_triples = 2 ** 62     # chunks would cut across members' row blocks
        for name, _ in list(first.named_parameters()):
            stacked = torch.stack([_get(m, name).detach() for m in models])
            _set(self.inner, name, nn.Parameter(stacked.clone(), requires_grad=_get(first, name).requires_grad),
                 parameter=True)
        for name, _ in list(first.named_buffers()):
            _set(self.inner, name, torch.stack([_get(m, name) for m in models]).clone(), parameter=False)

    @property
    def config(self):
        return self.inner.config

    @property
    def type_map(self) -> list[str]:
        return self.inner.type_map

    def build_graph(self, batch: Batch) -> Graph:
        return self.inner.build_graph(batch)

    def member(self, m: int) -> DPA3Model:
        """Member m as an ordinary model (a copy of its weights and buffers)."""
        model = DPA3Model(self.inner.config)
        model.set_memory(self.inner.memory)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(_get(self.inner, name)[m])
                p.requires_grad_(_get(self.inner, name).requires_grad)
            for name, b in model.named_buffers():
                b.copy_(_get(self.inner, name)[m])
        return model

    def forward(self, batch: Batch, graph: Graph | None = None, *, forces: bool = True, virial: bool = True,
                create_graph: bool = False) -> list[ModelOutput]:
        """Every member's output on ``batch`` (see DPA3Model.forward): a list of M ModelOutputs."""
        graph = self.build_graph(batch) if graph is None else graph
        m = self.n_members
        out = self.inner(replicate_batch(batch, m), replicate_graph(graph, m, batch.n_frames), forces=forces,
                         virial=virial, create_graph=create_graph)
        fields = (out.energy, out.atom_energy, out.forces, out.virial)
        parts = [t.chunk(m) if t is not None else [None] * m for t in fields]
        return [ModelOutput(*(p[k] for p in parts)) for k in range(m)]


def replicate_batch(batch: Batch, m: int) -> Batch:
    """M member-major copies of ``batch`` (own position tensors: each member's forces are its own)."""
    nf = batch.n_frames
    frame = torch.cat([batch.atom_frame + k * nf for k in range(m)])
    return Batch(batch.positions.detach().repeat(m, 1), batch.types.repeat(m), batch.cells.repeat(m, 1, 1),
                 batch.pbc.repeat(m, 1), frame, batch.natoms.repeat(m))


def replicate_graph(graph: Graph, m: int, n_frames: int) -> Graph:
    """M copies of ``graph`` with offset indices, member-major (model/graph.py's layout is kept per copy)."""
    return concat_graphs([graph] * m, [n_frames] * m)


def _get(module: nn.Module, name: str) -> torch.Tensor:
    *path, leaf = name.split(".")
    for p in path:
        module = getattr(module, p)
    return getattr(module, leaf)


def _set(module: nn.Module, name: str, value: torch.Tensor, parameter: bool) -> None:
    *path, leaf = name.split(".")
    for p in path:
        module = getattr(module, p)
    if parameter:
        module.register_parameter(leaf, value)
    else:
        module.register_buffer(leaf, value)
