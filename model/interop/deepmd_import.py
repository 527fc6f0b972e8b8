"""Import deepmd-kit PyTorch checkpoints (``model.ckpt*.pt``) of DPA3 energy models.

A deepmd-kit checkpoint is ``{"model": state_dict, "optimizer": ...}``; the state dict carries
``_extra_state = {"model_params": ..., "train_infos": ...}``. Single-task keys start with
``model.Default.``, multi-task keys with ``model.<head>.`` (shared tensors repeated per head).
Weights are stored as (in, out) "matrix" tensors, the same layout as ours, and the RepFlow
layer parameter names are the same as ours, so the mapping is mostly a prefix change.
"""

from __future__ import annotations

from typing import Any

import torch

from dpa3_al.model.config import FittingConfig, ModelConfig, RepFlowConfig
from dpa3_al.model.energy import DPA3Model
from dpa3_al.common.errors import CheckpointError
from dpa3_al.common.typed_config import ConfigError, from_dict

_REPFLOW_KEYS = {f for f in RepFlowConfig.__dataclass_fields__}
_IGNORED_REPFLOW = {"skip_stat", "optim_update"}


def is_deepmd_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "_extra_state" in obj["model"]


def deepmd_heads(params: dict) -> list[str]:
    return list(params["model_dict"]) if "model_dict" in params else ["Default"]


def resolve_head(params: dict, head: str | None, path: str) -> str:
    """deepmd-kit's rule: exact name, then case-insensitive, then ``model_branch_alias``."""
    heads = deepmd_heads(params)
    if "model_dict" not in params:
        if head not in (None, "Default"):
            raise CheckpointError(f"{path}: a single-task checkpoint has no head {head!r}; omit head=")
        return "Default"
    if head is None:
        raise CheckpointError(f"{path}: multi-task checkpoint; choose a head with head=NAME (--head NAME). "
                              f"Available heads: {', '.join(heads)}")
    if head in heads:
        return head
    for h in heads:
        if h.lower() == head.lower():
            return h
    for h in heads:
        if head in params["model_dict"][h].get("model_branch_alias", []):
            return h
    raise CheckpointError(f"{path}: no head {head!r}. Available heads: {', '.join(heads)}")


def config_from_deepmd(params: dict, path: str) -> ModelConfig:
    """Our ModelConfig from one head's normalized deepmd-kit model params."""
    desc, fit = params.get("descriptor", {}), params.get("fitting_net", {})
    if desc.get("type") != "dpa3":
        raise CheckpointError(f"{path}: descriptor type {desc.get('type')!r} is not supported; "
                              f"only DPA3 ('dpa3') models can be imported")
    unsupported = {"use_econf_tebd": False, "add_chg_spin_ebd": False, "exclude_types": []}
    for key, ok in unsupported.items():
        if desc.get(key, ok) not in (ok, None):
            raise CheckpointError(f"{path}: descriptor option {key}={desc[key]!r} is not supported yet")
    if fit.get("type", "ener") != "ener" or fit.get("numb_fparam", 0) or fit.get("numb_aparam", 0):
        raise CheckpointError(f"{path}: only energy fittings without fparam/aparam are supported "
                              f"(type={fit.get('type')!r}, numb_fparam={fit.get('numb_fparam', 0)}, "
                              f"numb_aparam={fit.get('numb_aparam', 0)})")
    if params.get("atom_exclude_types") or params.get("pair_exclude_types"):
        raise CheckpointError(f"{path}: atom/pair exclude types are not supported")
    rep = {k: v for k, v in desc.get("repflow", {}).items() if k in _REPFLOW_KEYS and k not in _IGNORED_REPFLOW}
    unknown = set(desc.get("repflow", {})) - _REPFLOW_KEYS - _IGNORED_REPFLOW - {"use_loc_mapping"}
    if unknown:
        raise CheckpointError(f"{path}: unknown repflow options {sorted(unknown)} (newer deepmd-kit?)")
    if desc.get("repflow", {}).get("skip_stat"):
        rep["fix_stat_std"] = 0.3
    for key in ("activation_function", "env_protection", "concat_output_tebd", "use_tebd_bias"):
        if key in desc:
            rep[key] = desc[key]
    rep.setdefault("activation_function", "tanh")
    precisions = {desc.get("precision", "float64"), fit.get("precision", "float64")}
    precision = "float32" if precisions == {"float32"} else "float64"
    try:
        return ModelConfig(
            type_map=list(params["type_map"]),
            descriptor=from_dict(RepFlowConfig, _deepmd_defaults(rep), path="descriptor.repflow"),
            fitting=from_dict(FittingConfig, {"neuron": fit.get("neuron", [120, 120, 120]),
                                              "resnet_dt": fit.get("resnet_dt", True),
                                              "activation_function": fit.get("activation_function", "tanh"),
                                              "dim_case_embd": fit.get("dim_case_embd", 0)}, path="fitting_net"),
            precision=precision)
    except ConfigError as err:
        raise CheckpointError(f"{path}: model_params: {err}") from None


def _deepmd_defaults(rep: dict) -> dict:
    """deepmd-kit's class defaults for keys a (non-normalised) config may omit."""
    defaults = dict(smooth_edge_update=False, edge_init_use_dist=False, use_exp_switch=False,
                    a_compress_rate=0, a_compress_e_rate=1, a_compress_use_split=False, a_dim=64,
                    a_sel=20, e_rcut_smth=5.0, fix_stat_std=0.3)
    return {**defaults, **rep}


def _fitting_map(n_hidden: int) -> dict[str, str]:
    m = {}
    for k in range(n_hidden):
        m[f"fitting_net.filter_layers.networks.0.layers.{k}.matrix"] = f"fitting.layers.{k}.matrix"
        m[f"fitting_net.filter_layers.networks.0.layers.{k}.bias"] = f"fitting.layers.{k}.bias"
        m[f"fitting_net.filter_layers.networks.0.layers.{k}.idt"] = f"fitting.idt.{k}"
    m[f"fitting_net.filter_layers.networks.0.layers.{n_hidden}.matrix"] = "fitting.out.matrix"
    m[f"fitting_net.filter_layers.networks.0.layers.{n_hidden}.bias"] = "fitting.out.bias"
    return m


def deepmd_key_map(model: DPA3Model) -> dict[str, str]:
    """deepmd-kit key (after 'atomic_model.') -> our state-dict key."""
    m = {"descriptor.type_embedding.embedding.embedding_net.layers.0.matrix": "descriptor.type_embedding.matrix",
         "descriptor.type_embedding.embedding.embedding_net.layers.0.bias": "descriptor.type_embedding.bias"}
    for ours in model.state_dict():
        if ours.startswith(("descriptor.layers.", "descriptor.edge_embd.", "descriptor.angle_embd.")):
            m["descriptor.repflows." + ours[len("descriptor."):]] = ours
    m.update(_fitting_map(len(model.config.fitting.neuron)))
    return m


def load_deepmd_state(model: DPA3Model, state: dict, head: str, path: str) -> None:
    """Copy one head's weights from a deepmd-kit state dict into ``model`` (strict both ways)."""
    prefix = f"model.{head}.atomic_model."
    src = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    ours = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    for theirs, mine in deepmd_key_map(model).items():
        if theirs in src and mine in ours:
            new[mine] = src.pop(theirs)
    new["out_bias"] = src.pop("out_bias").reshape(-1)
    if "fitting_net.bias_atom_e" in src:
        new["bias_atom_e"] = src.pop("fitting_net.bias_atom_e").reshape(-1)
    if "fitting_net.case_embd" in src:
        new["case_embd"] = src.pop("fitting_net.case_embd").reshape(-1)
    new["descriptor.env_std"] = _env_std(src.pop("descriptor.repflows.stddev"), src.pop("descriptor.repflows.mean"),
                                         path)
    for k in list(src):
        if k.startswith("fitting_net.filter_layers._networks.") or k in ("out_std",):
            src.pop(k)
    missing = [k for k in ours if k not in new and ours[k].numel() > 0]
    if src or missing:
        raise CheckpointError(f"{path}: head {head!r} does not match a DPA3 model of its own config: "
                              f"unused checkpoint tensors {sorted(src)[:6]}, missing {missing[:6]}")
    for k, v in new.items():
        if tuple(v.shape) != tuple(ours[k].shape):
            raise CheckpointError(f"{path}: tensor {k} has shape {tuple(v.shape)}, expected {tuple(ours[k].shape)}")
    model.load_state_dict({**ours, **{k: v.to(ours[k].dtype) for k, v in new.items()}})


def _env_std(stddev: torch.Tensor, mean: torch.Tensor, path: str) -> torch.Tensor:
    """(ntypes, sel, 4) per-slot statistics -> (ntypes, 4); DPA3 uses one value per type/component."""
    if mean.abs().max() > 0:
        raise CheckpointError(f"{path}: non-zero env-mat mean; DPA3 always uses mean 0 (corrupted checkpoint?)")
    per_type = stddev[:, 0, :]
    if (stddev - per_type[:, None, :]).abs().max() > 1e-12:
        raise CheckpointError(f"{path}: env-mat std varies across neighbour slots; not a DPA3 statistic")
    return per_type


def import_deepmd(ckpt: dict, head: str | None, path: str) -> tuple[DPA3Model, dict]:
    """Build our model from a loaded deepmd-kit checkpoint dict. Returns (model, metadata)."""
    state = ckpt["model"]
    extra = state["_extra_state"]
    params = extra["model_params"]
    head = resolve_head(params, head, path)
    head_params = params["model_dict"][head] if "model_dict" in params else params
    if "model_dict" in params and "type_map" not in head_params:
        head_params = {**head_params, "type_map": params.get("shared_dict", {}).get("type_map")}
    model = DPA3Model(config_from_deepmd(head_params, path))
    load_deepmd_state(model, state, head, path)
    meta = {"source": "deepmd-kit", "path": str(path), "head": head, "heads": deepmd_heads(params),
            "train_infos": {k: (float(v) if hasattr(v, "__float__") else v)
                            for k, v in extra.get("train_infos", {}).items()}}
    return model, meta
