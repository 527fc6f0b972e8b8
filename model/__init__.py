"""The DPA3 model core (``dpa3_al.model``).

Public surface::

    from dpa3_al.model import load_model, DPA3Calculator, CommitteeCalculator

- ``load_model(path, head=None)``: our checkpoints and deepmd-kit PyTorch DPA3 checkpoints.
- ``DPA3Calculator`` / ``CommitteeCalculator``: ASE calculators (eV, Å).
- ``build_model(config, seed)`` / ``save_model(model, path)``: make and store models.
- ``model_deviation``: committee deviation of one frame (deepmd-kit's definitions).

This package imports nothing from ``dpa3_al`` outside itself, and never dflow.
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
