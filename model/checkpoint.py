"""Checkpoints: our own format (save/load) and deepmd-kit import behind one ``load_model``.

Our format is one ``torch.save`` dict, readable with ``torch.load(weights_only=True)``::

    {"format": "dpa3-al-model", "version": 1,
     "config": ModelConfig as a plain dict (type_map, descriptor, fitting, precision),
     "state_dict": weights and buffers,
     "metadata": {"created": ISO time, "dpa3_al_version": ..., "training": {...}, ...},
     "train_state": optional (optimizer, step, rng) for exact restarts}

It is complete on its own: loading needs nothing but this package. Writes are atomic
(temporary file + ``os.replace``), so an interrupted save never leaves a broken file.
"""

from __future__ import annotations

import datetime
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from dpa3_al.model.config import ModelConfig
from dpa3_al.model.interop.deepmd_import import import_deepmd, is_deepmd_checkpoint
from dpa3_al.model.energy import DPA3Model
from dpa3_al.common.errors import CheckpointError
from dpa3_al.common.fileio import atomic_write
from dpa3_al.common.typed_config import ConfigError

FORMAT = "dpa3-al-model"
VERSION = 1
_UPGRADES: dict[int, Any] = {}   # version -> function(dict) -> dict of version + 1


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    atomic_write(path, lambda handle: torch.save(obj, handle))


def save_model(model: DPA3Model, path: str | os.PathLike, metadata: dict | None = None,
               train_state: dict | None = None) -> Path:
    """Write ``model`` (and optional training state) to ``path`` atomically."""
    meta = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "dpa3_al_version": _version(), **(getattr(model, "metadata", None) or {}), **(metadata or {})}
    payload = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "metadata": meta}
    if train_state is not None:
        payload["train_state"] = train_state
    atomic_torch_save(payload, path)
    return Path(path)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("dpa3-al")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "unknown"


def read_checkpoint(path: str | os.PathLike) -> dict:
    """torch.load with errors that say what the file is and what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".pth":
        raise CheckpointError(f"{path}: frozen TorchScript models (.pth) cannot be imported; "
                              f"use the training checkpoint (model.ckpt*.pt) instead")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # torch's pickle-protocol notes about files that are not ours
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupted, truncated, or not a torch file
        raise CheckpointError(f"{path}: not a valid checkpoint ({_load_failure(err)}); dpa3-al reads checkpoints "
                              "as weights and plain data only and never runs code stored in a file: give a "
                              "checkpoint written by dpa3-al or deepmd-kit (PyTorch)") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a model checkpoint (holds a {type(obj).__name__})")
    return obj


_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch")


def _load_failure(err: Exception) -> str:
    """Why torch.load refused a file, without torch's advice to retry with weights_only=False
    (which would run whatever code the file carries)."""
    if "weights only load failed" in str(err).lower():
        detail = next((line.strip() for line in str(err).splitlines() if line.strip()
                       and not line.strip().startswith(_TORCH_BOILERPLATE)), "")
        if "GLOBAL" in detail:
            return f"it holds Python objects other than tensors and plain data: {detail}"
        return "corrupted, truncated or not a torch file" + (f": {detail}" if detail else "")
    text = str(err).strip().splitlines()
    return f"corrupted, truncated or not a torch file: {type(err).__name__}" + (f": {text[0]}" if text else "")


def load_model(path: str | os.PathLike, head: str | None = None, device: str | torch.device = "cpu") -> DPA3Model:
    """Load our checkpoint or a deepmd-kit DPA3 checkpoint (single- or multi-task).

    Args:
        path: checkpoint file.
        head: for multi-task deepmd-kit checkpoints, the head (model branch) to use.
        device: torch device for the returned model.
    """
    obj = read_checkpoint(path)
    if obj.get("format") == FORMAT:
        model, meta = _load_ours(obj, str(path), head)
    elif is_deepmd_checkpoint(obj):
        model, meta = import_deepmd(obj, head, str(path))
    else:
        raise CheckpointError(f"{path}: unknown checkpoint format (keys {sorted(obj)[:5]}); expected a dpa3-al "
                              f"model or a deepmd-kit PyTorch checkpoint")
    model.metadata = meta
    return model.to(device).eval()


def _load_ours(obj: dict, path: str, head: str | None) -> tuple[DPA3Model, dict]:
    if head is not None:
        raise CheckpointError(f"{path}: dpa3-al checkpoints have a single head; omit head= ({head!r} given)")
    version = obj.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version!r} is newer than this dpa3-al "
                              f"(reads up to {VERSION}); upgrade dpa3-al")
    while version < VERSION:
        obj = _UPGRADES[version](obj)
        version = obj["version"]
    try:
        config = ModelConfig.from_dict(obj["config"], source=f"{path}: config")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    model = DPA3Model(config)
    missing, unexpected = model.load_state_dict(obj["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the stored config (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}): corrupted checkpoint?")
    return model, dict(obj.get("metadata", {}))
