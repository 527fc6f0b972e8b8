"""The DPA3 model core (``dpa3_al.model``).

Public surface::

    from dpa3_al.model import load_model, DPA3Calculator, CommitteeCalculator

- ``load_model(path, head=None)``: our checkpoints and deepmd-kit PyTorch DPA3 checkpoints.
- ``DPA3Calculator`` / ``CommitteeCalculator``: ASE calculators (eV, Å).
- ``build_model(config, seed)`` / ``save_model(model, path)``: make and store models.
- ``model_deviation``: committee deviation of one frame (deepmd-kit's definitions).

What lives where. The spine, read top to bottom:
``energy`` (E, F = -dE/dx, virial) -> ``descriptor`` (type embedding, env matrix, chunks,
layers) -> ``repflow`` (one RepFlow layer: node, edge, angle streams) -> ``nn`` (Dense, fitting
MLP) and ``activations`` (memory-lean activations; formulas and names in ``activation_math``).
``reference`` states the same energy in plain dense torch: the definition production is tested
against. Inputs: ``config`` (hyper-parameters), ``neighbor`` (neighbour search), ``graph`` (the
flat edge/angle graph). Around it: ``calculator``, ``ensemble`` (committee deviation),
``checkpoint`` (versioned files), ``info`` (``dpa3-al info``). Rooms:
``kernels/`` (behind the seam: C++ kernels, memory-lean ops, recomputation, memory estimates),
``train/`` (training), ``interop/`` (deepmd-kit import/export).

This package imports nothing from ``dpa3_al`` outside itself and ``dpa3_al.common``, and never dflow.
"""

from importlib import import_module
from typing import Any

from dpa3_al.model.ensemble import DEVI_KEYS, force_deviation, model_deviation
from dpa3_al.common.errors import CheckpointError, InputError, MemoryEstimateError, UserError
from dpa3_al.common.typed_config import ConfigError

_LAZY = {
    "load_model": ".checkpoint",
    "save_model": ".checkpoint",
    "build_model": ".energy",
    "DPA3Model": ".energy",
    "ModelConfig": ".config",
    "RepFlowConfig": ".config",
    "FittingConfig": ".config",
    "DPA3Calculator": ".calculator",
    "CommitteeCalculator": ".calculator",
}


def __getattr__(name: str) -> Any:  # lazy: keep `import dpa3_al.model` free of torch until needed
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'dpa3_al.model' has no attribute {name!r}")


__all__ = [
    "load_model", "save_model", "build_model", "DPA3Model", "ModelConfig", "RepFlowConfig", "FittingConfig",
    "DPA3Calculator", "CommitteeCalculator", "model_deviation", "force_deviation", "DEVI_KEYS",
    "UserError", "InputError", "CheckpointError", "MemoryEstimateError", "ConfigError",
]
