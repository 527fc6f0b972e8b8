"""Configuration of training (``dpa3-al train INPUT.yaml``; the run config's ``train:`` section).

One frozen dataclass per section; every key has a default and a doc string. Loss and
optimiser defaults are deepmd-kit's DPA3 water example (AdamW, weight decay 1e-3, clip 5,
prefactors e 0.2->20, f 100->60, v 0.02->1, exponential decay). The step budget and learning
rate are sized for an active-learning iteration (2000 steps, lr 1e-2 -> 1e-4 from scratch and
1e-3 -> 1e-4 for a fine-tune, measured to
converge on water; docs/training.md): the decay is scaled to the steps actually run (or to a
time budget), the best model on the validation frames is kept, and the run says whether it
converged. For the water example's long run set ``numb_steps: 1000000``, ``start_lr: 1e-3``,
``stop_lr: 3e-5``, ``decay_steps: 5000``.

    model:          DPA3 hyper-parameters (type_map empty = the elements of the data)
    data:           systems, validation, batch size, sampling, statistics
    loss:           prefactors
    learning_rate:  exponential decay
    optimizer:      AdamW/Adam, weight decay, gradient clipping
    training:       steps, time budget, seeds, output cadence, threads, committee size
    stopping:       best-model keeping, early stopping, convergence test
    finetune:       start from a pre-trained model (ours or deepmd-kit; head; frozen descriptor)
    init_model:     continue a previous model (fewer steps, smaller learning rate)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dpa3_al.model.config import FittingConfig, ModelConfig, RepFlowConfig
from dpa3_al.common.typed_config import ConfigError, field, from_dict, replace, to_dict

__all__ = ["TrainConfig", "ModelSection", "DataSection", "LossSection", "LRSection", "OptimizerSection",
           "TrainingSection", "StoppingSection", "FinetuneSection", "InitModelSection", "load_train_config"]


@dataclass(frozen=True)
class ModelSection:
    """The model to train from scratch (ignored by a fine-tune, which keeps the pre-trained shape)."""

    type_map: list[str] = field(default_factory=list, doc="element symbols in model type order; empty = the "
                                "elements of the training data, by atomic number")
    descriptor: RepFlowConfig = field(default_factory=RepFlowConfig, doc="RepFlow descriptor")
    fitting: FittingConfig = field(default_factory=FittingConfig, doc="energy fitting net")
    precision: Literal["float32", "float64"] = field("float32", doc="model precision")
    memory: Literal["default", "low"] = field("default", doc="'low' recomputes each layer in every backward pass "
                                                     "(MD, evaluation and training): same numbers, a fraction of the "
                                                     "memory, ~1.2x the time in MD and ~1.8x in training")

    def __post_init__(self) -> None:
        from ase.data import atomic_numbers

        bad = [t for t in self.type_map if t not in atomic_numbers]
        if bad:
            raise ConfigError("type_map", f"{bad} are not element symbols (e.g. [O, H])")
        if len(set(self.type_map)) != len(self.type_map):
            raise ConfigError("type_map", f"{self.type_map} has duplicates")

    def resolve(self, type_map: list[str]) -> ModelConfig:
        return ModelConfig(type_map=list(type_map), descriptor=self.descriptor, fitting=self.fitting,
                           precision=self.precision)


@dataclass(frozen=True)
class DataSection:
    """Training and validation data (deepmd npy directories searched recursively, extxyz files)."""

    systems: list[Path] = field(default_factory=list, doc="training data: directories and/or files")
    validation: list[Path] = field(default_factory=list, doc="validation data; empty = hold out "
                                   "validation_fraction of the training frames")
    validation_fraction: float = field(0.1, doc="share of each training system's frames held out when no "
                                       "validation data is given (systems with fewer than 1/fraction frames give "
                                       "none); a frame's side is fixed by a hash of training.seed and its "
                                       "coordinates, so it does not move as the data grow",
                                       ge=0.0, lt=1.0)
    # A validation set of a handful of frames picks checkpoints by noise: on bench/bench_al.py
    # (2-3 held-out frames of 38) "best" was step 120 of 800 and members differed 1.6x (issue 18).
    min_validation_frames: int = field(10, doc="hold out validation_fraction only when that gives at least this "
                                       "many frames in all; fewer: train on every frame, keep the last model",
                                       ge=1)
    max_validation_frames: int = field(16, doc="validation frames evaluated at each check (a fixed, evenly spread "
                                       "subset; each frame costs about a third of a training step)", ge=1)
    batch_size: int | str = field("auto", doc="frames per batch: N, 'auto' (= auto:32) or 'auto:N' "
                                  "(fewest frames with >= N atoms)")
    sys_probs: Literal["size", "uniform"] = field("size", doc="system sampling: proportional to its number of "
                                                  "batches (deepmd-kit's prob_sys_size) or uniform")
    data_stat_nbatch: int = field(10, doc="batches per system used for the energy-bias (and env) statistics "
                                  "(all frames when they fit)", ge=1)
    bias_fit: Literal["residual", "labels"] = field("residual", doc="from scratch: 'labels' = deepmd-kit's "
                                                    "least squares on the labels alone (the random fitting net then "
                                                    "adds ~1 eV/atom of offset that training must remove); "
                                                    "'residual' = then also fit the residual of the initial model "
                                                    "(starts at the right energy)")
    fmt: str | None = field(None, doc="dpdata format of non-npy, non-extxyz files (e.g. vasp/outcar)")


@dataclass(frozen=True)
class LossSection:
    """Loss prefactors, moving from start to limit as the learning rate decays (0 switches a term off)."""

    start_pref_e: float = field(0.2, doc="energy prefactor at the start", ge=0)
    limit_pref_e: float = field(20.0, doc="energy prefactor at the end", ge=0)
    start_pref_f: float = field(100.0, doc="force prefactor at the start", ge=0)
    limit_pref_f: float = field(60.0, doc="force prefactor at the end", ge=0)
    start_pref_v: float = field(0.02, doc="virial prefactor at the start", ge=0)
    limit_pref_v: float = field(1.0, doc="virial prefactor at the end", ge=0)


@dataclass(frozen=True)
class LRSection:
    """Exponential learning-rate decay from start_lr to stop_lr over the steps run."""

    start_lr: float | None = field(None, doc="learning rate at step 0; null = 1e-2 from scratch (the water "
                                   "example's 1e-3 is too low for short runs: DPA3 needs a few hundred steps at a "
                                   "high rate before it learns forces), 1e-3 for a fine-tune", gt=0)
    stop_lr: float = field(1e-4, doc="learning rate at the last step", gt=0)
    decay_steps: int = field(0, doc="steps between decays; 0 = numb_steps / 200 (5000 for 10^6 steps)", ge=0)

    def __post_init__(self) -> None:
        if self.start_lr is not None and self.stop_lr > self.start_lr:
            raise ConfigError("stop_lr", f"{self.stop_lr} must be <= start_lr = {self.start_lr}")

    def resolved_start(self, finetune: bool) -> float:
        """start_lr, or its default for this kind of run (scratch 1e-2, fine-tune 1e-3), not below stop_lr."""
        start = self.start_lr if self.start_lr is not None else (1e-3 if finetune else 1e-2)
        return max(start, self.stop_lr)


@dataclass(frozen=True)
class OptimizerSection:
    type: Literal["AdamW", "Adam"] = field("AdamW", doc="optimiser")
    weight_decay: float = field(1e-3, doc="decoupled weight decay (AdamW)", ge=0)
    beta1: float = field(0.9, doc="Adam beta1", ge=0, lt=1)
    beta2: float = field(0.999, doc="Adam beta2", ge=0, lt=1)
    gradient_max_norm: float = field(5.0, doc="clip the gradient norm to this (0 = no clipping)", ge=0)


@dataclass(frozen=True)
class TrainingSection:
    numb_steps: int = field(2000, doc="training steps (the learning rate decays over them)", ge=0)
    max_time: float = field(0.0, doc="time budget in seconds (0 = none): the step count is cut to what fits, "
                            "measured on the first steps, and the schedule is scaled to it", unit="s", ge=0)
    seed: int = field(1, doc="seed of the initial weights and of the data order (member i uses seed + i)")
    save_freq: int = field(0, doc="checkpoint every N steps (0 = numb_steps / 10)", ge=0)
    disp_freq: int = field(0, doc="lcurve row (train and validation errors) every N steps (0 = numb_steps / 40)",
                           ge=0)
    threads: int = field(0, doc="torch threads (0 = CPU cores / parallel)", ge=0)
    numb_models: int = field(1, doc="committee size: models differing in seed", ge=1)
    parallel: int = field(0, doc="committee members (or stacks) trained at the same time (processes); 0 = auto: "
                          "one per CPU core, at most one per member or stack (with stack 0 and threads 0: stacks "
                          "of ceil(members / cores), one thread each, the fastest on bench/bench_stack.py)", ge=0)
    stack: int = field(0, doc="members trained together as one stacked model in one process (model/stack.py): "
                       "k = groups of k members, one process (one workflow train step) each; 1 = each member on "
                       "its own; 0 = auto: as many stacks as processes run at a time (parallel; in the loop the "
                       "local engine's parallel steps, elsewhere 1), and members trained one by one when the "
                       "frames are large (over 20,000 angle triples per batch). Faster for small cells "
                       "(bench/bench_stack.py); the members of a stack see the frames in the same order (their "
                       "initial weights stay their own)", ge=0)
    progress: bool = field(True, doc="progress bar on stderr")


@dataclass(frozen=True)
class StoppingSection:
    """Best-model keeping, early stopping and the convergence verdict (on validation errors)."""

    keep_best: bool = field(True, doc="the output model is the one with the lowest validation loss (without validation data: the last)")
    patience: int = field(10, doc="stop after this many validation checks without improvement (0 = never)", ge=0)
    min_steps_fraction: float = field(0.5, doc="never stop early before this fraction of the steps", ge=0, le=1)
    converge_window: float = field(0.25, doc="fraction of the run at its end over which convergence is judged",
                                   gt=0, le=1)
    converge_tol: float = field(0.03, doc="converged when the validation error (square root of the loss at the "
                                "limit prefactors) fell by less than this fraction over the window", gt=0)
    max_rel_force_error: float = field(0.5, doc="never converged while the force RMSE exceeds this fraction of the "
                                       "RMS of the force labels (the model has barely learned forces)", gt=0)


@dataclass(frozen=True)
class FinetuneSection:
    model: Path | None = field(None, doc="pre-trained checkpoint (ours or deepmd-kit *.pt)")
    head: str | None = field(None, doc="head of a multi-task model; RANDOM = new fitting net")
    freeze_descriptor: bool = field(False, doc="train only the fitting net")


@dataclass(frozen=True)
class InitModelSection:
    model: Path | None = field(None, doc="model to continue (a previous iteration's)")
    # 1.0 / 1.0: every iteration trains as long and from the same rate as iteration 0, from the
    # previous weights. Measured on bench/bench_al.py (docs/al-benchmark.md): the former 0.25 / 0.1
    # (and the templates' 0.4 / 0.3) starve the committee: test force RMSE 2.1x higher at equal labels,
    # and a starved committee's deviation selects no better than random frames (issue 18).
    steps_factor: float = field(1.0, doc="steps = training.numb_steps * this (early stopping still applies)", gt=0)
    lr_factor: float = field(1.0, doc="start_lr = learning_rate.start_lr * this (not below stop_lr)", gt=0)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection, doc="model hyper-parameters")
    data: DataSection = field(default_factory=DataSection, doc="training data")
    loss: LossSection = field(default_factory=LossSection, doc="loss prefactors")
    learning_rate: LRSection = field(default_factory=LRSection, doc="learning-rate schedule")
    optimizer: OptimizerSection = field(default_factory=OptimizerSection, doc="optimiser")
    training: TrainingSection = field(default_factory=TrainingSection, doc="steps, seeds, outputs")
    stopping: StoppingSection = field(default_factory=StoppingSection, doc="best model, early stop, convergence")
    finetune: FinetuneSection = field(default_factory=FinetuneSection, doc="start from a pre-trained model")
    init_model: InitModelSection = field(default_factory=InitModelSection, doc="continue a previous model")

    def __post_init__(self) -> None:
        if self.finetune.model is not None and self.init_model.model is not None:
            raise ConfigError("init_model.model", "give either finetune.model or init_model.model, not both")

    def to_dict(self) -> dict:
        return to_dict(self)

    @staticmethod
    def from_dict(data: dict | None, source: str | None = None) -> "TrainConfig":
        return from_dict(TrainConfig, data or {}, source=source)

    def with_changes(self, **sections: dict) -> "TrainConfig":
        """A copy with keys of sections replaced, e.g. ``with_changes(training={"numb_steps": 10})``."""
        new = self
        for name, values in sections.items():
            if values:
                new = replace(new, **{name: replace(getattr(new, name), **values)})
        return new


def load_train_config(path: Path) -> TrainConfig:
    """Read a YAML/JSON training input; a run config's ``train:`` section is used when present.

    Relative data and model paths are taken relative to the file's directory.
    """
    from dpa3_al.common.yamlio import read_yaml_file

    path = Path(path)
    data = read_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise ConfigError("", "expected a mapping of training sections", source=str(path))
    if "train" in data and isinstance(data["train"], dict):
        data = data["train"]
    cfg = TrainConfig.from_dict(data, source=str(path))
    return _relative_to(cfg, path.parent)


def _relative_to(cfg: TrainConfig, base: Path) -> TrainConfig:
    fix = lambda p: p if p is None or p.is_absolute() else base / p  # noqa: E731
    return cfg.with_changes(
        data={"systems": [fix(p) for p in cfg.data.systems], "validation": [fix(p) for p in cfg.data.validation]},
        finetune={"model": fix(cfg.finetune.model)}, init_model={"model": fix(cfg.init_model.model)})


def stack_size(stack: int, members: int, slots: int) -> int:
    """Members per stack: ``stack`` when set, else (0, auto) enough stacks to fill ``slots``
    processes: ceil(members / slots), 1 when there are slots for every member."""
    if stack > 0:
        return min(stack, members)
    return max(1, -(-members // max(1, slots)))
