"""The conservative DPA3 energy model: E = sum_i E_i, F = -dE/dx, virial = -dE/d(strain).

Atomic energy: E_i = fit([D_i ; case]) + bias_atom_e[t_i] + out_bias[t_i]; the biases and
the sum are float64 whatever the model precision. Edge vectors are formed in float64 from
float64 positions (so unwrapped coordinates lose nothing in float32 models) and strained by a
per-frame symmetric-free strain eps: r_ij -> r_ij (I + eps); the virial is -dE/d(eps) (eV),
which equals -stress * volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dpa3_al.model.config import ModelConfig
from dpa3_al.model.descriptor import DPA3Descriptor
from dpa3_al.model.graph import Batch, Graph, build_graph
from dpa3_al.model.nn import FittingMLP, lookup, shift

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class ModelOutput:
    """Per-frame and per-atom results (float64). Units: eV, eV/Å, eV."""

    energy: torch.Tensor                  # (nf,)
    atom_energy: torch.Tensor             # (N,)
    forces: torch.Tensor | None = None    # (N, 3)
    virial: torch.Tensor | None = None    # (nf, 3, 3)


class DPA3Model(nn.Module):
    """Descriptor + shared fitting net + per-element energy bias."""

    def __init__(self, config: ModelConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.dtype = DTYPES[config.precision]
        gen = torch.Generator().manual_seed(int(seed))
        ntypes = len(config.type_map)
        self.descriptor = DPA3Descriptor(config.descriptor, ntypes, self.dtype, gen)
        fit = config.fitting
        self.fitting = FittingMLP(self.descriptor.dim_out + fit.dim_case_embd, list(fit.neuron),
                                  fit.activation_function, fit.resnet_dt, self.dtype, gen)
        self.register_buffer("out_bias", torch.zeros(ntypes, dtype=torch.float64))
        self.register_buffer("bias_atom_e", torch.zeros(ntypes, dtype=torch.float64))
        self.register_buffer("case_embd", torch.zeros(fit.dim_case_embd, dtype=self.dtype))

    @property
    def type_map(self) -> list[str]:
        return list(self.config.type_map)

    @property
    def memory(self) -> str:
        return self.descriptor.memory

    def set_memory(self, mode: str) -> None:
        """"default" keeps all activations for the backward pass; "low" recomputes each layer."""
        if mode not in ("default", "low"):
            raise ValueError(f"memory mode {mode!r}: use 'default' or 'low'")
        self.descriptor.memory = mode

    def build_graph(self, batch: Batch) -> Graph:
        return build_graph(batch, self.config.descriptor)

    def atomic_energies(self, batch: Batch, graph: Graph, r: torch.Tensor) -> torch.Tensor:
        """E_i (N,) float64 from edge vectors r (E, 3, model dtype)."""
        d = self.descriptor(batch.types, r, graph)                                    # (N, dim)
        if self.case_embd.numel():
            d = torch.cat([d, shift(d.new_zeros(d.shape[0], self.case_embd.shape[-1]), self.case_embd)], dim=-1)
        e = self.fitting(d).to(torch.float64)                                         # (N,)
        return e + lookup(self.out_bias, batch.types, 1) + lookup(self.bias_atom_e, batch.types, 1)

    def forward(self, batch: Batch, graph: Graph | None = None, *, forces: bool = True, virial: bool = True,
                create_graph: bool = False) -> ModelOutput:
        """Energies (and forces/virials by autograd) of every frame of ``batch``.

        Args:
            batch: frames (positions Å, float64 recommended).
            graph: neighbour graph of ``batch`` (built here when None).
            forces, virial: which derivatives to compute.
            create_graph: keep the graph of the derivatives (training on forces needs it).
        """
        graph = self.build_graph(batch) if graph is None else graph
        pos = batch.positions.to(torch.float64)
        need_grad = forces or virial
        if need_grad and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        strain = torch.zeros((batch.n_frames, 3, 3), dtype=torch.float64, device=pos.device,
                             requires_grad=virial)
        with torch.enable_grad() if need_grad else torch.no_grad():
            r = edge_vectors(pos, batch.cells.to(torch.float64), graph, strain if virial else None)
            atom_e = self.atomic_energies(batch, graph, r.to(self.dtype))
            energy = atom_e.new_zeros(batch.n_frames).index_add_(0, batch.atom_frame, atom_e)
            out = ModelOutput(energy=energy, atom_energy=atom_e)
            if need_grad:
                inputs = [t for t, on in ((pos, forces), (strain, virial)) if on]
                grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph, allow_unused=True)
                grads = [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, inputs)]
                if forces:
                    out.forces = -grads[0]
                if virial:
                    out.virial = -grads[-1]
        if not create_graph:  # inference: hand back plain tensors, release the graph
            out = ModelOutput(*(t.detach() if t is not None else None
                                for t in (out.energy, out.atom_energy, out.forces, out.virial)))
        return out


def edge_vectors(pos: torch.Tensor, cells: torch.Tensor, graph: Graph, strain: torch.Tensor | None) -> torch.Tensor:
    """r_ij = (x_j - x_i + S cell)(I + eps) for every edge -> (E, 3)."""
    if cells.shape[0] == 1:
        r = pos.index_select(0, graph.neighbor) - pos.index_select(0, graph.center) + graph.shift.to(pos.dtype) @ cells[0]
        return r if strain is None else r + r @ strain[0]
    shift = torch.bmm(graph.shift.to(pos.dtype)[:, None, :], cells[graph.edge_frame])[:, 0]
    r = pos.index_select(0, graph.neighbor) - pos.index_select(0, graph.center) + shift
    if strain is None:
        return r
    return r + torch.bmm(r[:, None, :], strain[graph.edge_frame])[:, 0]


def build_model(config: ModelConfig | dict, seed: int = 0) -> DPA3Model:
    """A freshly initialised model (random weights from ``seed``)."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return DPA3Model(config, seed=seed)
