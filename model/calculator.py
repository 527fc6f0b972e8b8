"""ASE calculators: one DPA3 model, and a committee of models sharing one neighbour graph.

Units: energy eV, forces eV/Å, stress eV/Å^3 (ASE's Voigt order xx yy zz yz xz xy,
stress = -virial / volume), virial eV.

``virial`` is an implemented property (``calc.get_property("virial")``), a 3x3 array in eV as
deepmd-kit's ASE calculator gives it; ASE's own property list has no virial, so
``atoms.get_stress()`` stays the ASE way to ask (periodic frames only) and ``virial`` is there
for deepmd-kit users' scripts (also for non-periodic frames).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from dpa3_al.model.checkpoint import load_model
from dpa3_al.model.energy import DPA3Model, ModelOutput
from dpa3_al.model.ensemble import DEVI_KEYS, model_deviation
from dpa3_al.common.errors import InputError
from dpa3_al.model.graph import Batch, Graph
from dpa3_al.model.kernels.memory import UnitCosts, available_bytes, base_bytes, check_fits, current_bytes, unit_costs
from dpa3_al.model.kernels.runtime import tune_malloc

# Graphs below these sizes are evaluated without a memory estimate (they need < ~1 GB).
_CHECK_EDGES, _CHECK_TRIPLES = 200_000, 1_000_000


class MemoryGuard:
    """Estimates the peak memory of a graph before it is evaluated (see model/memory.py)."""

    def __init__(self, model: DPA3Model):
        self.model = model
        self._costs: UnitCosts | None = None
        self._base: float | None = None          # resident size before the first large evaluation
        self.last_estimate: float | None = None

    def check(self, graph: Graph) -> None:
        if graph.n_edges < _CHECK_EDGES and graph.n_triples < _CHECK_TRIPLES:
            self.last_estimate = None
            return
        if self._costs is None or self._costs.mode != self.model.memory:
            self._costs = unit_costs(self.model)
        device = graph.center.device
        if device.type == "cuda":   # accelerator memory: its free bytes are the budget, no host baseline
            free, _ = torch.cuda.mem_get_info(device)
            self.last_estimate = check_fits(self.model, graph, self._costs, budget=float(free), base=0.0)
        else:
            # the peak is the base plus this call's work; what can hold it is what this process has
            # now (freed memory the allocator keeps is reused) plus what the system can give
            now = current_bytes()
            self._base = now if self._base is None else self._base
            self.last_estimate = check_fits(self.model, graph, self._costs, budget=now + available_bytes(),
                                            base=self._base)

    def report(self) -> dict:
        """Estimated peak of the last large evaluation and this process's measured peak RSS (bytes)."""
        return {"estimated_peak_bytes": self.last_estimate, "process_peak_rss_bytes": base_bytes(),
                "memory_mode": self.model.memory}


def atoms_to_batch(atoms: Atoms, type_map: Sequence[str]) -> Batch:
    """One-frame Batch from ASE Atoms; clear errors for unknown elements and NaN positions."""
    index = {sym: i for i, sym in enumerate(type_map)}
    symbols = atoms.get_chemical_symbols()
    missing = sorted({s for s in symbols if s not in index})
    if missing:
        where = [i for i, s in enumerate(symbols) if s not in index][:5]
        raise InputError(f"element(s) {missing} (atoms {where}{'...' if len(where) == 5 else ''}) are not in the "
                         f"model's type map {list(type_map)}; use a model trained on these elements")
    pos = atoms.get_positions()
    bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
    if len(bad):
        raise InputError(f"non-finite coordinates for atoms {bad[:5].tolist()}: the structure is broken "
                         f"(exploded MD?); nothing was evaluated")
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    cell = atoms.cell.array if pbc.any() else None
    if pbc.any() and np.linalg.matrix_rank(atoms.cell.array[pbc]) < pbc.sum():
        raise InputError(f"periodic directions {np.flatnonzero(pbc).tolist()} have a degenerate cell "
                         f"{atoms.cell.array.tolist()}; set the cell or pbc=False")
    types = np.array([index[s] for s in symbols], dtype=np.int64)
    return Batch.from_arrays([(pos, types, cell, pbc)])


def _stress(virial: np.ndarray, atoms: Atoms) -> np.ndarray | None:
    if not atoms.pbc.any() or abs(atoms.cell.volume) < 1e-12:
        return None
    s = -0.5 * (virial + virial.T) / atoms.cell.volume
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def _prepare(model_or_path: DPA3Model | str | os.PathLike, head: str | None, device: str, memory: str) -> DPA3Model:
    model = model_or_path if isinstance(model_or_path, DPA3Model) else load_model(model_or_path, head=head)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)   # inference: autograd keeps only what forces/virial need
    model.set_memory(memory)
    return model


class DPA3Calculator(Calculator):
    """ASE calculator for one DPA3 model (ours or an imported deepmd-kit checkpoint).

    Args:
        model_or_path: a DPA3Model or a checkpoint path.
        head: head of a multi-task deepmd-kit checkpoint.
        device: torch device ("cpu", "cuda").
        memory: "default", or "low" (recompute each layer in the backward pass: same numbers,
            several times less memory, ~1.3x the time).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "virial"]

    def __init__(self, model_or_path, head: str | None = None, device: str = "cpu", memory: str = "default",
                 **kwargs):
        super().__init__(**kwargs)
        tune_malloc()
        self.device = torch.device(device)
        self.model = _prepare(model_or_path, head, device, memory)
        self.type_map = self.model.type_map
        self.memory_guard = MemoryGuard(self.model)

    def _evaluate(self, atoms: Atoms) -> tuple[ModelOutput, Batch, Graph]:
        batch = atoms_to_batch(atoms, self.type_map).to(self.device, torch.float64)
        graph = self.model.build_graph(batch).to(self.device)
        self.memory_guard.check(graph)
        return self.model(batch, graph, forces=True, virial=True), batch, graph

    def memory_report(self) -> dict:
        """Peak memory: the estimate for the last large system and the process's measured peak RSS."""
        return self.memory_guard.report()

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        out, _, _ = self._evaluate(self.atoms)
        self.results = _results(out, self.atoms)

    def get_descriptor(self, atoms: Atoms) -> np.ndarray:
        """Per-atom descriptor (natoms, dim) of ``atoms`` (no gradients)."""
        return descriptor(self.model, atoms, self.device)


def descriptor(model: DPA3Model, atoms: Atoms, device: torch.device) -> np.ndarray:
    batch = atoms_to_batch(atoms, model.type_map).to(device, torch.float64)
    graph = model.build_graph(batch).to(device)
    with torch.no_grad():
        from dpa3_al.model.energy import edge_vectors

        r = edge_vectors(batch.positions, batch.cells, graph, None).to(model.dtype)
        return model.descriptor(batch.types, r, graph).double().cpu().numpy()


def _results(out: ModelOutput, atoms: Atoms) -> dict:
    energy = float(out.energy[0])
    virial = out.virial[0].detach().cpu().numpy()
    res = {"energy": energy, "free_energy": energy, "energies": out.atom_energy.detach().cpu().numpy(),
           "forces": out.forces.detach().cpu().numpy(), "virial": virial}
    stress = _stress(virial, atoms)
    if stress is not None:
        res["stress"] = stress
    return res


class CommitteeCalculator(Calculator):
    """M models evaluated on one shared neighbour graph; mean results plus model deviations.

    ``drive="mean"``: every call evaluates all models; results are the committee mean plus the
    deviation keys (``max_devi_f`` ... ``devi_e``, see dpa3_al.model.ensemble) and
    ``energy_comm`` (M,), ``forces_comm`` (M, N, 3), ``virial_comm`` (M, 3, 3).
    ``drive=k``: calls evaluate model k only (cheap MD steps); :meth:`evaluate_all` gives the
    whole committee on demand and reuses model k's result for the same positions, as
    deepmd-kit's LAMMPS plugin evaluates the other models only on output steps.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "virial"]

    def __init__(self, models: Sequence, head: str | None = None, device: str = "cpu", drive: str | int = "mean",
                 memory: str = "default", **kwargs):
        super().__init__(**kwargs)
        tune_malloc()
        if len(models) < 1:
            raise ValueError("CommitteeCalculator needs at least one model")
        self.device = torch.device(device)
        self.models = [_prepare(m, head, device, memory) for m in models]
        maps = {tuple(m.type_map) for m in self.models}
        if len(maps) > 1:
            raise InputError(f"committee models have different type maps {sorted(maps)}; they must agree")
        cutoffs = {(m.config.descriptor.e_rcut, m.config.descriptor.a_rcut, m.config.descriptor.e_sel,
                    m.config.descriptor.a_sel) for m in self.models}
        self._shared_graph = len(cutoffs) == 1
        if drive != "mean" and not (isinstance(drive, int) and 0 <= drive < len(self.models)):
            raise ValueError(f"drive={drive!r}: use 'mean' or a model index in [0, {len(self.models) - 1}]")
        self.drive = drive
        self.type_map = self.models[0].type_map
        self._cache: tuple[bytes, ModelOutput] | None = None
        self.memory_guard = MemoryGuard(self.models[0])   # models run one after another: one model's peak

    def memory_report(self) -> dict:
        return self.memory_guard.report()

    def _graph(self, model: DPA3Model, batch: Batch, shared: Graph | None) -> Graph:
        return shared if (shared is not None and self._shared_graph) else model.build_graph(batch).to(self.device)

    def _key(self, atoms: Atoms) -> bytes:
        return atoms.get_positions().tobytes() + atoms.cell.array.tobytes() + atoms.numbers.tobytes()

    def evaluate_all(self, atoms: Atoms) -> dict:
        """All M models on ``atoms``: per-model arrays, their mean and the deviations."""
        batch = atoms_to_batch(atoms, self.type_map).to(self.device, torch.float64)
        graph = self._graph(self.models[0], batch, None)
        self.memory_guard.check(graph)
        outs = []
        for k, model in enumerate(self.models):
            cached = self._cache if (self._cache and k == self.drive and self._cache[0] == self._key(atoms)) else None
            outs.append(cached[1] if cached else model(batch, self._graph(model, batch, graph)))
        energies = np.array([float(o.energy[0]) for o in outs])
        forces = np.stack([o.forces.detach().cpu().numpy() for o in outs])
        virials = np.stack([o.virial[0].detach().cpu().numpy() for o in outs])
        res = {"energy_comm": energies, "forces_comm": forces, "virial_comm": virials,
               "energies_comm": np.stack([o.atom_energy.detach().cpu().numpy() for o in outs])}
        res.update(model_deviation(energies, forces, virials))
        return res

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.drive == "mean":
            comm = self.evaluate_all(self.atoms)
            energy = float(comm["energy_comm"].mean())
            virial = comm["virial_comm"].mean(axis=0)
            self.results = {"energy": energy, "free_energy": energy, "energies": comm["energies_comm"].mean(axis=0),
                            "forces": comm["forces_comm"].mean(axis=0), "virial": virial, **comm}
            stress = _stress(virial, self.atoms)
            if stress is not None:
                self.results["stress"] = stress
            return
        model = self.models[self.drive]
        batch = atoms_to_batch(self.atoms, self.type_map).to(self.device, torch.float64)
        graph = self._graph(model, batch, None)
        self.memory_guard.check(graph)
        out = model(batch, graph)
        self._cache = (self._key(self.atoms), out)
        self.results = _results(out, self.atoms)

    def get_descriptor(self, atoms: Atoms) -> np.ndarray:
        """Per-atom descriptor (natoms, dim) of model 0."""
        return descriptor(self.models[0], atoms, self.device)


__all__ = ["DPA3Calculator", "CommitteeCalculator", "atoms_to_batch", "DEVI_KEYS"]
