"""Start training from a pre-trained model: fine-tune (``--finetune``) and continuation (``--init-model``).

Fine-tuning follows deepmd-kit 3.2 (shared/design/dpa3-model.md 6.1; reproduced on the
references in tests/data/dpa3-reference/multitask/):

1. load the pre-trained model (ours, or a deepmd-kit checkpoint; ``head`` picks the branch of
   a multi-task one, keeping that head's fitting net, bias and case vector);
2. re-index it onto the new type map: type-embedding rows, env-matrix std, out_bias and
   bias_atom_e are gathered by element name; an element the pre-trained model lacks gets a
   U[0, 1) type-embedding row, bias 0 and (fix_stat_std == 0) a std from the new data;
   elements not in the new map are dropped; every other weight is copied unchanged;
3. the energy bias is changed by statistic (residual least squares added to out_bias) when
   the fitting net is inherited, or set by statistic when ``head="RANDOM"`` re-initialises it.

``--init-model`` continues one of our models: weights and bias are kept (a type map that
gains elements is re-indexed as above and its bias changed by statistic).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dpa3_al.model.train.batching import TrainingData
from dpa3_al.model.checkpoint import FORMAT, load_model, read_checkpoint
from dpa3_al.model.config import ModelConfig
from dpa3_al.model.interop.deepmd_import import deepmd_heads, is_deepmd_checkpoint
from dpa3_al.model.energy import DPA3Model
from dpa3_al.common.errors import CheckpointError
from dpa3_al.model.train.stats import Picks, apply_env_std, change_bias_by_statistic, set_bias_by_statistic
from dpa3_al.model.train.config import TrainConfig

log = logging.getLogger(__name__)

RANDOM_HEAD = "RANDOM"


@dataclass(frozen=True)
class InitInfo:
    """What the initialisation did (stored in the model's training provenance)."""

    mode: str                          # "finetune" or "init-model"
    source: str
    head: str | None
    pretrained_type_map: list[str]
    type_map: list[str]
    remap: list[int | None]            # new type index -> pre-trained index (None = new element)
    bias_mode: str                     # "change", "set" or "kept"
    bias_delta: list[float]            # the change (change), the set bias (set), zeros (kept)
    random_fitting: bool = False

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def checkpoint_heads(path: Path) -> list[str] | None:
    """Heads of a deepmd-kit checkpoint (None for ours or single-task)."""
    obj = read_checkpoint(path)
    if is_deepmd_checkpoint(obj):
        params = obj["model"]["_extra_state"]["model_params"]
        return deepmd_heads(params) if "model_dict" in params else None
    return None


def load_pretrained(path: Path, head: str | None) -> tuple[DPA3Model, str | None]:
    """The pre-trained model of ``head`` (RANDOM: any head; its fitting is replaced later)."""
    if head == RANDOM_HEAD:
        heads = checkpoint_heads(path)
        model = load_model(path, head=heads[0] if heads else None)
        return model, heads[0] if heads else None
    try:
        model = load_model(path, head=head)
    except CheckpointError as err:
        if "Available heads" in str(err):
            raise CheckpointError(f"{err} (or {RANDOM_HEAD} for a new fitting net)") from None
        raise
    return model, (model.metadata or {}).get("head", head)


def remap_type_map(model: DPA3Model, type_map: Sequence[str], seed: int = 0) -> tuple[DPA3Model, list[int | None]]:
    """A copy of ``model`` whose types follow ``type_map`` (by element name); see the module docstring."""
    old = list(model.type_map)
    index = [old.index(t) if t in old else None for t in type_map]
    config = dataclasses.replace(model.config, type_map=list(type_map))
    new = DPA3Model(config, seed=seed)
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    state, targets = {}, new.state_dict()
    for key, value in model.state_dict().items():
        target = targets[key]
        if key in ("descriptor.type_embedding.matrix", "descriptor.env_std", "out_bias", "bias_atom_e"):
            fresh = {"descriptor.type_embedding.matrix": lambda: torch.rand(target.shape[1:], generator=gen,
                                                                             dtype=torch.float64),
                     "descriptor.env_std": lambda: target[0].clone(),
                     "out_bias": lambda: torch.zeros((), dtype=torch.float64),
                     "bias_atom_e": lambda: torch.zeros((), dtype=torch.float64)}[key]
            rows = [value[i] if i is not None else fresh().to(value.dtype) for i in index]
            state[key] = torch.stack(rows).to(target.dtype)
        else:
            state[key] = value.clone()
    new.load_state_dict(state)
    new.metadata = dict(getattr(model, "metadata", None) or {})
    new.set_memory(model.memory)
    return new, index


def reinit_fitting(model: DPA3Model, seed: int) -> None:
    """Replace the fitting net by a freshly initialised one (deepmd-kit's RANDOM branch)."""
    fresh = DPA3Model(model.config, seed=seed)
    model.fitting.load_state_dict(fresh.fitting.state_dict())
    with torch.no_grad():
        model.bias_atom_e.zero_()


def finetune_init(path: Path, head: str | None, type_map: Sequence[str], data: TrainingData,
                  picks: Sequence[Picks], seed: int = 0) -> tuple[DPA3Model, InitInfo]:
    """The model to fine-tune, initialised as deepmd-kit does (load, re-index, bias statistic)."""
    pretrained, used_head = load_pretrained(Path(path), head)
    model, index = remap_type_map(pretrained, type_map, seed)
    random_fitting = head == RANDOM_HEAD
    if random_fitting:
        reinit_fitting(model, seed)
    apply_env_std(model, data, picks, keep=[i is not None for i in index])
    fit = set_bias_by_statistic(model, data, picks) if random_fitting else change_bias_by_statistic(model, data, picks)
    info = InitInfo("finetune", str(path), RANDOM_HEAD if random_fitting else used_head, list(pretrained.type_map),
                    list(type_map), index, fit.mode, [float(x) for x in fit.bias], random_fitting)
    _log_remap(info)
    return model, info


def init_model_init(path: Path, type_map: Sequence[str], data: TrainingData, picks: Sequence[Picks],
                    seed: int = 0) -> tuple[DPA3Model, InitInfo]:
    """Continue ``path``: weights kept; bias kept unless the type map gains elements."""
    previous = load_model(Path(path))
    old = list(previous.type_map)
    new_map = list(type_map)
    if new_map == old:
        model, index = previous, list(range(len(old)))
    else:
        model, index = remap_type_map(previous, new_map, seed)
    gained = any(i is None for i in index)
    if gained:
        apply_env_std(model, data, picks, keep=[i is not None for i in index])
        fit = change_bias_by_statistic(model, data, picks)
        mode, delta = fit.mode, [float(x) for x in fit.bias]
    else:
        mode, delta = "kept", [0.0] * len(new_map)
    info = InitInfo("init-model", str(path), None, old, new_map, index, mode, delta)
    _log_remap(info)
    return model, info


def _log_remap(info: InitInfo) -> None:
    new = [t for t, i in zip(info.type_map, info.remap) if i is None]
    dropped = [t for t in info.pretrained_type_map if t not in info.type_map]
    log.info("%s from %s%s: type map %s -> %s (new elements %s, dropped %s); energy bias %s",
             info.mode, info.source, f" head {info.head}" if info.head else "", info.pretrained_type_map,
             info.type_map, new or "none", dropped or "none", info.bias_mode)


def change_energy_bias(model: DPA3Model, systems, mode: str = "change", batch_size: int | str = 1) -> np.ndarray:
    """``dp change-bias`` on all frames of ``systems``: "change" adds the residual fit, "set" replaces
    the bias by the label fit. Returns the change (change) or the new bias (set), eV per atom."""
    data = TrainingData(systems, model.type_map, batch_size)
    picks = data.all_picks()
    fit = change_bias_by_statistic(model, data, picks) if mode == "change" else set_bias_by_statistic(model, data, picks)
    return fit.bias


def same_shape(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether two configs describe the same network apart from the type map."""
    return dataclasses.replace(a, type_map=["H"]) == dataclasses.replace(b, type_map=["H"])


def resolve_start(cfg: TrainConfig, init_model: Path | None) -> TrainConfig:
    """How a workflow member starts from ``init_model``: our trained model -> init-model; anything
    else (a deepmd-kit checkpoint, an untrained model of ours) -> fine-tune."""
    if init_model is None:
        return cfg
    obj = read_checkpoint(init_model)
    training = obj.get("metadata", {}).get("training") if obj.get("format") == FORMAT else None
    if isinstance(training, dict) and training.get("finished"):
        return cfg.with_changes(init_model={"model": init_model}, finetune={"model": None})
    return cfg.with_changes(finetune={"model": init_model}, init_model={"model": None})
