"""A deepmd-kit training ``input.json`` (DPA3 descriptor, energy fitting) as our training config.

``convert_deepmd_input(data, base, out_dir)`` returns the ``TrainConfig`` mapping and the keys it
could not map, each with the reason. Conversion keeps deepmd-kit's semantics: every key whose
deepmd-kit default differs from ours (docs/interop-defaults.md) is written out with deepmd-kit's
value, given or default, so the run trains what ``dp --pt train input.json`` would:

- ``model``: ``type_map``; ``descriptor.repflow`` keys (each of them, deepmd-kit's class defaults
  for those not given), the descriptor's ``activation_function`` (default silu),
  ``env_protection``, ``concat_output_tebd``, ``use_tebd_bias``; ``fitting_net`` ``neuron``
  (default [120, 120, 120]), ``resnet_dt``, ``activation_function`` (default tanh),
  ``dim_case_embd``; ``precision`` (float64 unless descriptor and fitting are both float32).
- ``learning_rate`` (exp): start_lr 1e-3, stop_lr 1e-8, decay_steps 5000 unless given.
- ``loss`` (ener): prefactors e 0.02 -> 1, f 1000 -> 1, v 0 -> 0 unless given.
- ``optimizer`` (Adam unless given: no weight decay; no gradient clipping unless
  ``training.gradient_max_norm``).
- ``training``: numb_steps, seed, disp_freq, save_freq; ``training_data`` / ``validation_data``
  systems (paths made relative to the output file) and batch_size; ``auto_prob``.
- deepmd-kit keeps the last model and never stops early; with no ``validation_data`` it
  validates on nothing; its energy bias is a least-squares fit on the labels: the output says
  ``stopping.keep_best: false``, ``patience: 0``, ``validation_fraction: 0``, ``bias_fit: labels``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpa3_al.common.errors import UserError

# deepmd-kit's RepFlowArgs defaults (deepmd/dpmodel/descriptor/dpa3.py), every key our RepFlowConfig has
REPFLOW_DEFAULTS: dict[str, Any] = {
    "n_dim": 128, "e_dim": 64, "a_dim": 64, "nlayers": 6, "e_rcut": 6.0, "e_rcut_smth": 5.0, "e_sel": 120,
    "a_rcut": 4.0, "a_rcut_smth": 3.5, "a_sel": 20, "a_compress_rate": 0, "a_compress_e_rate": 1,
    "a_compress_use_split": False, "n_multi_edge_message": 1, "axis_neuron": 4, "update_angle": True,
    "update_style": "res_residual", "update_residual": 0.1, "update_residual_init": "const", "fix_stat_std": 0.3,
    "optim_update": True, "smooth_edge_update": False, "edge_init_use_dist": False, "use_exp_switch": False,
    "use_dynamic_sel": False, "sel_reduce_factor": 10.0, "sequential_update": False,
}
DESCRIPTOR_DEFAULTS: dict[str, Any] = {"activation_function": "silu", "env_protection": 0.0,
                                       "concat_output_tebd": False, "use_tebd_bias": False}
FITTING_DEFAULTS: dict[str, Any] = {"neuron": [120, 120, 120], "resnet_dt": True, "activation_function": "tanh",
                                    "dim_case_embd": 0}
LOSS_DEFAULTS = {"start_pref_e": 0.02, "limit_pref_e": 1.0, "start_pref_f": 1000.0, "limit_pref_f": 1.0,
                 "start_pref_v": 0.0, "limit_pref_v": 0.0}
LR_DEFAULTS = {"start_lr": 1e-3, "stop_lr": 1e-8, "decay_steps": 5000}
# descriptor options whose non-default value changes the model and that the core does not have
_UNSUPPORTED_DESCRIPTOR = {"exclude_types": [], "use_econf_tebd": False, "add_chg_spin_ebd": False,
                           "trainable": True}
_IGNORED = {
    "seed": "initial weights come from training.seed (each committee member adds its index)",
    "type": None, "_comment": None,
}
_OUTPUT_ONLY = ("disp_file", "save_ckpt", "max_ckpt_keep", "disp_training", "time_training", "profiling",
                "profiling_file", "enable_profiler", "tensorboard", "tensorboard_log_dir", "tensorboard_freq",
                "stat_file")


@dataclass(frozen=True)
class Unmapped:
    """A key of the input that the converted config does not carry, and why."""

    key: str
    reason: str

    def __str__(self) -> str:
        return f"  {self.key}: {self.reason}"


class Notes(list):
    """The unmapped keys collected while converting (a list of :class:`Unmapped`)."""

    def add(self, key: str, reason: str) -> None:
        self.append(Unmapped(key, reason))

    def rest(self, section: dict, prefix: str, used: set[str], reason: str = "no counterpart here") -> None:
        for key in section:
            if key not in used and not key.startswith("_"):
                self.add(f"{prefix}{key}", reason)


def convert_deepmd_input(data: dict, base: Path, out_dir: Path, *, with_data: bool = True
                         ) -> tuple[dict[str, Any], list[Unmapped]]:
    """deepmd-kit ``input.json`` (``data``, read from folder ``base``) -> (TrainConfig mapping, unmapped keys).

    Data paths become relative to ``out_dir`` (where the YAML goes); ``with_data=False`` leaves
    the data systems out (a run config lists them in ``init_data``).
    """
    if not isinstance(data, dict):
        raise UserError("a deepmd-kit input must be a JSON object with model, learning_rate, loss, training")
    if "model_dict" in data.get("model", {}) or "loss_dict" in data:
        raise UserError("multi-task deepmd-kit inputs (model_dict/loss_dict) are not converted: train each task's "
                        "branch as its own input, or fine-tune from the multi-task checkpoint with --head")
    notes = Notes()
    out: dict[str, Any] = {"model": _model(data.get("model", {}), notes)}
    out["loss"] = _loss(data.get("loss", {}), notes)
    out["learning_rate"] = _learning_rate(data.get("learning_rate", {}), notes)
    training = data.get("training", {})
    out["optimizer"] = _optimizer(data.get("optimizer", {}), training, notes)
    out["training"], out["data"] = _training(training, base, out_dir, notes, with_data)
    if "data_stat_nbatch" in data.get("model", {}):
        out["data"]["data_stat_nbatch"] = int(data["model"]["data_stat_nbatch"])
    out["stopping"] = {"keep_best": False, "patience": 0}
    notes.rest(data, "", {"model", "loss", "learning_rate", "optimizer", "training"})
    return out, list(notes)


def _model(model: dict, notes: Notes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "type_map" in model:
        out["type_map"] = list(model["type_map"])
    desc, fit = model.get("descriptor", {}), model.get("fitting_net", {})
    if desc.get("type", "dpa3") != "dpa3":
        notes.add("model.descriptor", f"type {desc.get('type')!r} is not DPA3: the model section keeps only "
                  "type_map (our DPA3 defaults apply)")
        notes.rest(model, "model.", {"type_map", "descriptor"})
        return out
    rep = desc.get("repflow", {})
    repflow = {k: rep.get(k, v) for k, v in REPFLOW_DEFAULTS.items()}
    if rep.get("skip_stat"):
        repflow["fix_stat_std"] = 0.3          # deepmd-kit's backward-compatible meaning of skip_stat
    notes.rest(rep, "model.descriptor.repflow.", set(REPFLOW_DEFAULTS) | {"skip_stat"},
               "not a repflow option of the DPA3 core")
    if "use_loc_mapping" in rep:
        notes.add("model.descriptor.repflow.use_loc_mapping", "an implementation detail of deepmd-kit's "
                  "neighbour indexing; same numbers here")
    descriptor = {**repflow, **{k: desc.get(k, v) for k, v in DESCRIPTOR_DEFAULTS.items()}}
    for key, neutral in _UNSUPPORTED_DESCRIPTOR.items():
        if key in desc and desc[key] not in (neutral, None):
            notes.add(f"model.descriptor.{key}", f"{desc[key]!r} is not supported by the DPA3 core "
                      f"(the converted model uses {neutral!r}): the model differs from deepmd-kit's")
    precisions = {desc.get("precision", "float64"), fit.get("precision", "float64")}
    notes.rest(desc, "model.descriptor.", {"type", "repflow", "precision", "use_loc_mapping",
                                           *DESCRIPTOR_DEFAULTS, *_UNSUPPORTED_DESCRIPTOR, *_IGNORED})
    if "seed" in desc:
        notes.add("model.descriptor.seed", _IGNORED["seed"])
    if fit.get("type", "ener") != "ener" or fit.get("numb_fparam", 0) or fit.get("numb_aparam", 0):
        notes.add("model.fitting_net", "only an energy fitting without fparam/aparam is supported: "
                  "our energy fitting is used")
    fitting = {k: fit.get(k, v) for k, v in FITTING_DEFAULTS.items()}
    notes.rest(fit, "model.fitting_net.", {"type", "precision", "numb_fparam", "numb_aparam", *FITTING_DEFAULTS,
                                           *_IGNORED})
    if "seed" in fit:
        notes.add("model.fitting_net.seed", _IGNORED["seed"])
    out.update(descriptor=descriptor, fitting=fitting,
               precision="float32" if precisions == {"float32"} else "float64")
    notes.rest(model, "model.", {"type_map", "descriptor", "fitting_net", "data_stat_nbatch", "type"})
    return out


def _loss(loss: dict, notes: Notes) -> dict[str, Any]:
    if loss.get("type", "ener") != "ener":
        notes.add("loss.type", f"{loss['type']!r}: only the energy loss exists here (ener prefactors used)")
    out = {k: float(loss.get(k, v)) for k, v in LOSS_DEFAULTS.items()}
    for key in ("start_pref_ae", "limit_pref_ae", "start_pref_pf", "limit_pref_pf", "start_pref_gf",
                "limit_pref_gf"):
        if loss.get(key):
            notes.add(f"loss.{key}", "atomic-energy / prefactor-force / generalized-force losses are not supported")
    notes.rest(loss, "loss.", {"type", *LOSS_DEFAULTS, "start_pref_ae", "limit_pref_ae", "start_pref_pf",
                               "limit_pref_pf", "start_pref_gf", "limit_pref_gf"})
    return out


def _learning_rate(lr: dict, notes: Notes) -> dict[str, Any]:
    if lr.get("type", "exp") != "exp":
        notes.add("learning_rate.type", f"{lr['type']!r}: only the exponential decay exists here")
    out = {"start_lr": float(lr.get("start_lr", LR_DEFAULTS["start_lr"])),
           "stop_lr": float(lr.get("stop_lr", LR_DEFAULTS["stop_lr"])),
           "decay_steps": int(lr.get("decay_steps", LR_DEFAULTS["decay_steps"]))}
    notes.rest(lr, "learning_rate.", {"type", "start_lr", "stop_lr", "decay_steps"},
               "no counterpart in our exponential schedule")
    return out


def _optimizer(opt: dict, training: dict, notes: Notes) -> dict[str, Any]:
    kind = opt.get("type", training.get("opt_type", "Adam"))
    if kind not in ("Adam", "AdamW"):
        notes.add("optimizer.type", f"{kind!r} is not available (Adam or AdamW): Adam is used")
        kind = "Adam"
    out = {"type": kind, "beta1": float(opt.get("adam_beta1", 0.9)), "beta2": float(opt.get("adam_beta2", 0.999)),
           "weight_decay": float(opt.get("weight_decay", 0.0 if kind == "Adam" else 1e-3)),
           "gradient_max_norm": float(training.get("gradient_max_norm") or 0.0)}
    if kind == "AdamW" and "weight_decay" not in opt:
        notes.add("optimizer.weight_decay", "not given for AdamW: 1e-3 written (the DPA3 water example's); "
                  "set it if your deepmd-kit version defaults otherwise")
    notes.rest(opt, "optimizer.", {"type", "adam_beta1", "adam_beta2", "weight_decay"})
    return out


def _training(training: dict, base: Path, out_dir: Path, notes: Notes, with_data: bool
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    out: dict[str, Any] = {}
    for key in ("numb_steps", "seed", "disp_freq", "save_freq"):
        if training.get(key) is not None:
            out[key] = int(training[key])
    if "stop_batch" in training and "numb_steps" not in out:
        out["numb_steps"] = int(training["stop_batch"])
    data: dict[str, Any] = {"bias_fit": "labels", "validation_fraction": 0.0}
    train_data, valid_data = training.get("training_data", {}), training.get("validation_data") or {}
    systems = _systems(train_data.get("systems", []), base, out_dir)
    if with_data:
        data["systems"] = systems
        if valid_data.get("systems"):
            data["validation"] = _systems(valid_data["systems"], base, out_dir)
    elif systems:
        notes.add("training.training_data.systems", "a run config lists the initial data in init_data")
    batch = train_data.get("batch_size", "auto")
    if isinstance(batch, (int, str)) and (isinstance(batch, int) or str(batch).startswith("auto")):
        data["batch_size"] = batch
    else:
        notes.add("training.training_data.batch_size", f"{batch!r}: one batch size (an integer, auto or auto:N) "
                  "for all systems here; 'auto' used")
    prob = train_data.get("auto_prob", train_data.get("auto_prob_style", "prob_sys_size"))
    if prob in ("prob_sys_size", "prob_uniform"):
        data["sys_probs"] = "size" if prob == "prob_sys_size" else "uniform"
    else:
        notes.add("training.training_data.auto_prob", f"{prob!r}: only prob_sys_size and prob_uniform exist here")
    if train_data.get("sys_probs"):
        notes.add("training.training_data.sys_probs", "per-system weights are not supported (auto_prob used)")
    notes.rest(train_data, "training.training_data.", {"systems", "batch_size", "auto_prob", "auto_prob_style",
                                                        "sys_probs"})
    notes.rest(valid_data, "training.validation_data.", {"systems", "batch_size"},
               "validation here evaluates data.max_validation_frames frames of every system")
    for key in _OUTPUT_ONLY:
        if key in training:
            notes.add(f"training.{key}", "an output option of deepmd-kit (our run writes lcurve.csv, model.pt)")
    notes.rest(training, "training.", {"numb_steps", "stop_batch", "seed", "disp_freq", "save_freq",
                                       "training_data", "validation_data", "gradient_max_norm", "opt_type",
                                       *_OUTPUT_ONLY})
    return out, data


def _systems(value: Any, base: Path, out_dir: Path) -> list[str]:
    """deepmd-kit's systems (a list, or one prefix folder searched recursively) as paths relative to ``out_dir``."""
    paths = [value] if isinstance(value, str) else list(value)
    return [os.path.relpath((base / p).resolve() if not Path(p).is_absolute() else Path(p), out_dir.resolve())
            for p in paths]
