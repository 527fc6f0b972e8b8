"""The run config: one YAML file describing a whole concurrent-learning run.

    name: water                     # default run name (runs/<name>/)
    init_data: [data/init]          # labeled systems (deepmd npy dirs, searched recursively; extxyz)
    bootstrap: {copies: 8}          # with no init_data: label perturbed starting structures first
    train:    {...}                 # dpa3_al.model.train.config.TrainConfig (model, loss, steps, committee, finetune)
    explore:  {...}                 # dpa3_al.explore.ExploreConfig (stages of MD task groups)
    select:   {...}                 # dpa3_al.select.SelectConfig (trust levels, cap, strategy)
    label:    {...}                 # dpa3_al.label.LabelConfig (reference method)
    workflow: {...}                 # dpa3_al.workflows.WorkflowConfig (engine, fan-out, retries)

Every section is validated at load time by the section's own dataclass, so a mistake anywhere
is reported before anything runs, as one line naming the file and the key path::

    runs.yaml: explore.stages[0].task_groups[1].temps[0]: -10.0 must be > 0 (K)

Relative paths (init_data, structure files, checkpoints) are relative to the config file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dpa3_al.explore.bootstrap import BootstrapConfig
from dpa3_al.explore.config import ExploreConfig
from dpa3_al.label.config import LabelConfig
from dpa3_al.model.train.config import TrainConfig
from dpa3_al.common.typed_config import ConfigError, field, from_dict, to_dict
from dpa3_al.select import SelectConfig
from dpa3_al.workflows.config import WorkflowConfig  # a plain dataclass module: imports no dflow

__all__ = ["RunConfig", "load_run_config", "read_yaml", "config_dict", "ConfigError"]


@dataclass(frozen=True)
class RunConfig:
    """A concurrent-learning run."""

    name: str = field("run", doc="default run name: lower-case letters, digits and '-'")
    description: str = field("", doc="one line about the run (shown by 'dpa3-al template')")
    init_data: list[Path] = field(default_factory=list, doc="labeled data the first training reads "
                                  "(deepmd npy directories, searched recursively, and extxyz files)")
    bootstrap: BootstrapConfig | None = field(None, doc="label perturbed copies of the starting structures "
                                              "before iteration 0; default: on when init_data is empty")
    train: TrainConfig = field(default_factory=TrainConfig, doc="the committee: model, training, fine-tuning")
    explore: ExploreConfig = field(default_factory=ExploreConfig, doc="exploration stages")
    select: SelectConfig = field(default_factory=SelectConfig, doc="which explored frames get labeled")
    label: LabelConfig = field(default_factory=LabelConfig, doc="the reference method")
    workflow: WorkflowConfig = field(default_factory=WorkflowConfig, doc="engine, fan-out, retries, timeouts")
    seed: int = field(0, doc="seed of everything random that has no seed of its own")

    def __post_init__(self) -> None:
        if not self.explore.stages:
            raise ConfigError("explore.stages", "a run needs at least one exploration stage "
                              "(see templates/quickstart.yaml)")
        if self.train.data.systems:
            raise ConfigError("train.data.systems", "in a run config, list the initial data in init_data "
                              "(the loop adds the labeled dataset of each iteration itself)")
        if self.train.init_model.model is not None:
            raise ConfigError("train.init_model.model", "the loop continues each member from the previous "
                              "iteration's model itself; use train.finetune.model to start from a checkpoint")

    @property
    def uses_bootstrap(self) -> bool:
        return self.bootstrap is not None or not self.init_data

    @property
    def committee(self) -> int:
        return self.train.training.numb_models


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML/JSON mapping; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", "no such config file", source=str(path))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError("", f"{where}not valid YAML ({getattr(err, 'problem', None) or err})",
                          source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"expected a mapping of sections (name, train, explore, ...), got {type(data).__name__}",
                          source=str(path))
    return data


def load_run_config(path: Path) -> RunConfig:
    """Read and validate a run config; relative paths become absolute (relative to the file)."""
    path = Path(path).resolve()
    cfg = from_dict(RunConfig, read_yaml(path), source=str(path))
    base = path.parent
    init = [(p if p.is_absolute() else base / p).resolve() for p in cfg.init_data]
    missing = [str(p) for p in init if not p.exists()]
    if missing:
        raise ConfigError("init_data", f"{missing} do not exist (paths are relative to the config file)",
                          source=str(path))
    train = cfg.train
    ft = train.finetune.model
    if ft is not None:
        ft = (ft if ft.is_absolute() else base / ft).resolve()
        if not ft.is_file():
            raise ConfigError("train.finetune.model", f"{ft} does not exist", source=str(path))
        train = dataclasses.replace(train, finetune=dataclasses.replace(train.finetune, model=ft))
    cfg = dataclasses.replace(cfg, init_data=init, train=train)
    check_configurations(cfg, base, source=str(path))
    return cfg


def check_configurations(cfg: RunConfig, base: Path, *, source: str | None = None) -> None:
    """Read every task group's starting structures now (not after the first training) and check
    their elements against the model's type map."""
    from dpa3_al.explore.configurations import build_pool
    from dpa3_al.common.errors import UserError

    type_map = set(cfg.train.model.type_map) if cfg.train.finetune.model is None else None
    for i, stage in enumerate(cfg.explore.stages):
        for j, group in enumerate(stage.task_groups):
            key = f"explore.stages[{i}].task_groups[{j}].configurations"
            try:
                pool = build_pool(group.configurations, base, seed=0)
            except (UserError, OSError, ValueError) as err:
                raise ConfigError(key, str(err), source=source) from None
            elements = {s for c in pool for s in c.atoms.get_chemical_symbols()}
            if type_map is not None and not elements <= type_map:
                raise ConfigError(key, f"elements {sorted(elements - type_map)} are not in train.model.type_map "
                                  f"{cfg.train.model.type_map}; add them there", source=source)


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as plain data (what runs/<name>/config.yaml holds)."""
    return to_dict(cfg)
