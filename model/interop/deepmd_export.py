"""Export DPA3 energy models as deepmd-kit 3.2 PyTorch checkpoints (``model.ckpt.pt`` layout).

The inverse of ``deepmd_import``: a deepmd-kit checkpoint is ``{"model": state_dict}`` whose state
dict carries ``_extra_state = {"model_params": ..., "train_infos": {"lr", "step"}}`` and one key
group per head, ``model.<head>.<key>`` (``Default`` for a single-task model). What deepmd-kit's
``DeepPot``, ``dp --pt freeze`` and ``dp --pt test`` read from it:

- ``model_params``: the normalised model section of a training input (``type_map``, ``descriptor``
  with ``repflow``, ``fitting_net``); for a multi-task file ``shared_dict`` + ``model_dict``;
- the weights: same names and (in, out) "matrix" layout as ours (the importer's key map, reversed),
  the fitting net written twice (``networks.0`` and its alias ``_networks.0``, one tensor);
- the environment statistics ``descriptor.repflows.mean`` (all 0, DPA3) and ``.stddev``
  (ntypes, e_sel, 4): our per-type std repeated over the e_sel neighbour slots;
- ``out_bias`` / ``out_std`` (1, ntypes, 1) and ``fitting_net.bias_atom_e`` (ntypes, 1), float64;
  ``out_std`` is not used for energies and is written as 1;
- ``min_nbor_dist`` (Å, float64): -1.0 (not computed, what deepmd-kit writes with
  ``--skip-neighbor-stat``) unless known; only deepmd-kit's model compression reads it.

Exported then imported, a model is identical to the original (same weights, bit for bit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dpa3_al.common.errors import CheckpointError
from dpa3_al.model.config import ModelConfig, RepFlowConfig
from dpa3_al.model.energy import DPA3Model
from dpa3_al.model.checkpoint import atomic_torch_save, load_model, read_checkpoint
from dpa3_al.model.interop.deepmd_import import deepmd_key_map, deepmd_heads, is_deepmd_checkpoint, resolve_head

NO_MIN_NBOR_DIST = -1.0
_FITTING_PREFIX = "fitting_net.filter_layers.networks.0."
_DESCRIPTOR_LEVEL = ("activation_function", "env_protection", "concat_output_tebd", "use_tebd_bias")


def deepmd_model_params(config: ModelConfig) -> dict:
    """deepmd-kit 3.2's normalised single-task ``model`` section for ``config``."""
    rep = {k: getattr(config.descriptor, k) for k in RepFlowConfig.__dataclass_fields__ if k not in _DESCRIPTOR_LEVEL}
    rep["skip_stat"] = False
    d, f = config.descriptor, config.fitting
    descriptor = {"type": "dpa3", "repflow": rep, "activation_function": d.activation_function,
                  "precision": config.precision, "concat_output_tebd": d.concat_output_tebd,
                  "add_chg_spin_ebd": False, "default_chg_spin": None, "exclude_types": [],
                  "env_protection": d.env_protection, "trainable": True, "use_econf_tebd": False,
                  "use_tebd_bias": d.use_tebd_bias, "use_loc_mapping": True}
    fitting = {"neuron": list(f.neuron), "resnet_dt": f.resnet_dt, "activation_function": f.activation_function,
               "precision": config.precision, "type": "ener", "numb_fparam": 0, "numb_aparam": 0,
               "default_fparam": None, "dim_case_embd": f.dim_case_embd, "trainable": True, "rcond": None,
               "atom_ener": [], "use_aparam_as_mask": False}
    return {"type_map": list(config.type_map), "descriptor": descriptor, "fitting_net": fitting,
            "data_stat_nbatch": 10, "data_stat_protect": 0.01, "data_bias_nsample": 10,
            "pair_exclude_types": [], "atom_exclude_types": [], "preset_out_bias": None, "srtab_add_bias": True,
            "type": "standard", "model_branch_alias": [], "bridging_method": "None",
            "bridging_r_inner": 0.5, "bridging_r_outer": 0.8}


def deepmd_head_state(model: DPA3Model, head: str = "Default", min_nbor_dist: float = NO_MIN_NBOR_DIST,
                      out_std: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One head's tensors under ``model.<head>.``; every non-empty tensor of ``model`` is used.

    ``out_std`` (1, ntypes, 1) is kept when given (from a deepmd-kit source), else written as 1.
    """
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items() if v.numel() > 0 or k == "case_embd"}
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}
    for theirs, mine in deepmd_key_map(model).items():
        if mine in ours:
            out[theirs] = ours[mine]
            used.add(mine)
    for theirs in [k for k in out if k.startswith(_FITTING_PREFIX)]:
        out[theirs.replace(".networks.0.", "._networks.0.")] = out[theirs]      # deepmd-kit's alias
    nt, f64 = len(model.type_map), torch.float64
    out["out_bias"] = ours["out_bias"].to(f64).reshape(1, nt, 1)
    out["out_std"] = torch.ones(1, nt, 1, dtype=f64) if out_std is None else out_std.to(f64).reshape(1, nt, 1)
    out["fitting_net.bias_atom_e"] = ours["bias_atom_e"].to(f64).reshape(nt, 1)
    if model.config.fitting.dim_case_embd:
        out["fitting_net.case_embd"] = ours["case_embd"]
    std = ours["descriptor.env_std"]
    e_sel = model.config.descriptor.e_sel
    out["descriptor.repflows.stddev"] = std[:, None, :].expand(nt, e_sel, 4).clone()
    out["descriptor.repflows.mean"] = torch.zeros_like(out["descriptor.repflows.stddev"])
    used |= {"out_bias", "bias_atom_e", "case_embd", "descriptor.env_std"}
    left = [k for k in ours if k not in used and ours[k].numel() > 0]
    if left:
        raise CheckpointError(f"export: tensors {left[:6]} have no deepmd-kit counterpart; this model cannot be "
                              f"exported (a newer model option?)")
    state = {f"model.{head}.atomic_model.{k}": v for k, v in out.items()}
    state[f"model.{head}.min_nbor_dist"] = torch.tensor(float(min_nbor_dist), dtype=f64)
    return state


@dataclass(frozen=True)
class HeadExtras:
    """Per-head values deepmd-kit stores that our model does not: kept when re-exporting its files."""

    min_nbor_dist: float = NO_MIN_NBOR_DIST       # Å; -1.0 = not computed
    out_std: torch.Tensor | None = None           # (1, ntypes, 1); None = 1


def export_deepmd(models: DPA3Model | dict[str, DPA3Model], extras: dict[str, HeadExtras] | None = None,
                  train_infos: dict | None = None) -> dict:
    """A deepmd-kit checkpoint dict ``{"model": state_dict}``.

    Args:
        models: one model (single-task, head ``Default``) or ``{head: model}`` (multi-task; the heads
            must share the type map, as deepmd-kit's multi-task models do).
        extras: per head (``Default`` for one model), values to keep from a deepmd-kit source.
        train_infos: ``{"lr": float, "step": int}`` stored for deepmd-kit restarts (default lr 0, step 0).
    """
    infos = {"lr": 0.0, "step": 0, **(train_infos or {})}
    extras = extras or {}
    if isinstance(models, DPA3Model):
        x = extras.get("Default", HeadExtras())
        state = deepmd_head_state(models, "Default", x.min_nbor_dist, x.out_std)
        params = deepmd_model_params(models.config)
    else:
        state, params = _multitask(models, extras)
    state["_extra_state"] = {"model_params": params, "train_infos": infos}
    return {"model": state}


def _multitask(models: dict[str, DPA3Model], extras: dict[str, HeadExtras]) -> tuple[dict, dict]:
    if not models:
        raise CheckpointError("export: no heads to export")
    maps = {h: m.type_map for h, m in models.items()}
    first = next(iter(maps.values()))
    if any(t != first for t in maps.values()):
        raise CheckpointError(f"export: multi-task heads must share one type map; got {maps}")
    state: dict[str, torch.Tensor] = {}
    seen: dict[str, torch.Tensor] = {}
    for head, model in models.items():
        x = extras.get(head, HeadExtras())
        for key, value in deepmd_head_state(model, head, x.min_nbor_dist, x.out_std).items():
            rest = key[len(f"model.{head}."):]
            other = seen.get(rest)
            shared = other is not None and other.shape == value.shape and other.dtype == value.dtype \
                and torch.equal(other, value) and rest != "min_nbor_dist"
            state[key] = other if shared else value          # equal tensors share storage, as deepmd-kit's do
            seen.setdefault(rest, value)
    model_dict = {h: deepmd_model_params(m.config) for h, m in models.items()}
    return state, {"shared_dict": _shared_dict(models, model_dict), "model_dict": model_dict}


def _shared_dict(models: dict[str, DPA3Model], model_dict: dict[str, dict]) -> dict:
    """What deepmd-kit's training input would share: type map, and descriptor/fitting when identical."""
    shared: dict = {"type_map": list(next(iter(models.values())).type_map)}
    states = [m.state_dict() for m in models.values()]

    def same(prefix: str, section: str) -> bool:
        if any(p[section] != next(iter(model_dict.values()))[section] for p in model_dict.values()):
            return False
        return all(torch.equal(v, s[k]) for s in states[1:] for k, v in states[0].items() if k.startswith(prefix))

    if same("descriptor.", "descriptor"):
        shared["dpa3_descriptor"] = next(iter(model_dict.values()))["descriptor"]
    if same("fitting.", "fitting_net"):
        shared["shared_fitting"] = next(iter(model_dict.values()))["fitting_net"]
    return shared


def export_checkpoint(source: str | os.PathLike, out: str | os.PathLike, head: str | None = None) -> dict:
    """Export our model file or a deepmd-kit checkpoint (one head, or every head) to ``out``.

    A deepmd-kit multi-task source without ``head`` is exported whole (every head); with ``head``, that
    head becomes a single-task checkpoint. Returns a summary (heads, type_map, precision, out).
    """
    obj = read_checkpoint(source)
    if is_deepmd_checkpoint(obj):
        models, extras, infos, whole = _from_deepmd(obj, source, head)
    else:
        model = load_model(source, head=head)
        step = (model.metadata or {}).get("training", {}).get("step")
        models, extras, infos, whole = {"Default": model}, {}, ({"step": step} if isinstance(step, int) else None), False
    if whole:
        ckpt = export_deepmd(models, extras, infos)
    else:
        (name, model), = models.items()
        ckpt = export_deepmd(model, {"Default": extras.get(name, HeadExtras())}, infos)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(ckpt, out)
    first = next(iter(models.values()))
    return {"out": str(out), "heads": list(models) if whole else ["Default"], "type_map": first.type_map,
            "precision": first.config.precision, "parameters": sum(p.numel() for p in first.parameters())}


def _from_deepmd(obj: dict, source: str | os.PathLike, head: str | None) -> tuple[dict, dict, dict, bool]:
    """(models by head, extras by head, train_infos, whole multi-task?) of a deepmd-kit checkpoint."""
    state = obj["model"]
    extra = state["_extra_state"]
    params = extra["model_params"]
    infos = {k: (float(v) if k == "lr" else int(v)) for k, v in extra.get("train_infos", {}).items()
             if k in ("lr", "step")}
    multi = "model_dict" in params
    heads = deepmd_heads(params) if head is None else [resolve_head(params, head, str(source))]
    models = {h: load_model(source, head=h if multi else None) for h in heads}
    extras = {h: HeadExtras(float(state.get(f"model.{h}.min_nbor_dist", NO_MIN_NBOR_DIST)),
                            state.get(f"model.{h}.atomic_model.out_std")) for h in heads}
    return models, extras, infos, multi and head is None
