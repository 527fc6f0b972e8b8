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

from dpa3_al.common.yamlio import read_yaml_file
from dpa3_al.calibration import TargetConfig
from dpa3_al.explore.bootstrap import BootstrapConfig
from dpa3_al.explore.config import ExploreConfig
from dpa3_al.label.config import LabelConfig
from dpa3_al.model.train.config import TrainConfig
from dpa3_al.common.typed_config import ConfigError, field, from_dict, to_dict
from dpa3_al.select import SelectConfig
from dpa3_al.workflows.config import WorkflowConfig  # a plain dataclass module: imports no dflow
from dpa3_al.workflows.rundir import check_run_name  # the rule 'submit' applies (imports no dflow)
from dpa3_al.common.errors import UserError

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
    seed: int = field(0, doc="seed of everything random that has no seed of its own: train.training.seed "
                      "(1 + 1000 seed), each task group's seed, select.seed, bootstrap.seed (seed)", ge=0)
    test_data: list[Path] = field(default_factory=list, doc="labeled systems (as init_data) each iteration's "
                                  "committee is tested on: report/learning_curve.csv")
    target: TargetConfig | None = field(None, doc="the accuracy wanted; the trust levels follow from it by "
                                        "calibration against each iteration's labels (docs/report.md)")

    def __post_init__(self) -> None:
        try:
            check_run_name(self.name)
        except UserError as err:
            raise ConfigError("name", str(err)) from None
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
    """A YAML/JSON mapping read by the safe loader (UTF-8, bounded aliases and depth, no
    repeated keys); errors name the file and the line."""
    path = Path(path)
    data = read_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"expected a mapping of sections (name, train, explore, ...), got {type(data).__name__}",
                          source=str(path))
    return data


def load_run_config(path: Path) -> RunConfig:
    """Read and validate a run config; relative paths become absolute (relative to the file)."""
    path = Path(path).resolve()
    raw = read_yaml(path)
    cfg = from_dict(RunConfig, fill_seeds(raw), source=str(path))
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
    cfg = dataclasses.replace(cfg, init_data=init, train=train, test_data=_resolve_test_data(cfg, base, str(path)))
    if cfg.target is not None:
        cfg = dataclasses.replace(cfg, target=_target_with_share(cfg, str(path), raw))
    elements = check_configurations(cfg, base, source=str(path))
    cfg = resolve_type_map(cfg, elements, source=str(path))
    check_label(cfg, source=str(path))
    return cfg


def _target_with_share(cfg: RunConfig, source: str, raw: dict) -> TargetConfig:
    """The target with what the loader knows: whether select.f_lo was written (it then wins) and
    the accurate share that means "target met" (the stages' conv_accuracy, one value for all)."""
    shares = {s.conv_accuracy for s in cfg.explore.stages}
    if len(shares) > 1:
        raise ConfigError("explore.stages", f"with a target every stage's conv_accuracy is the share of explored "
                          f"frames that must be accurate for the target to be met; give them one value (found "
                          f"{sorted(shares)})", source=source)
    return dataclasses.replace(cfg.target, explicit_levels="f_lo" in (raw.get("select") or {}),
                               share=shares.pop())


def resolve_type_map(cfg: RunConfig, elements: set[str], *, source: str | None = None) -> RunConfig:
    """An empty ``train.model.type_map`` (the default) becomes the elements of the starting
    structures and of init_data, by atomic number; the run's config.yaml records the result, so
    every iteration's model has the same type map. A fine-tune keeps its model's type map."""
    from ase.data import atomic_numbers

    if cfg.train.model.type_map or cfg.train.finetune.model is not None:
        return cfg
    found = set(elements) | _init_data_elements(cfg.init_data, source)
    type_map = sorted(found, key=lambda e: atomic_numbers[e])
    model = dataclasses.replace(cfg.train.model, type_map=type_map)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, model=model))


def _init_data_elements(paths: list[Path], source: str | None) -> set[str]:
    """Elements of the initial data: type_map.raw of npy systems (not their frames), other files read."""
    from dpa3_al.common.errors import UserError
    from dpa3_al.model.train.data import data_elements, find_npy_systems, load_systems

    found: set[str] = set()
    for path in paths:
        try:
            if not path.is_dir():
                found |= set(data_elements(load_systems([path])))
                continue
            for system in find_npy_systems(path):
                names = system / "type_map.raw"
                if not names.is_file():
                    raise ConfigError("train.model.type_map", f"is empty and {system} has no type_map.raw naming its "
                                      "elements; list the elements, e.g. type_map: [O, H]", source=source)
                found |= set(names.read_text(encoding="utf-8").split())
        except ConfigError:
            raise
        except (UserError, OSError, ValueError) as err:
            raise ConfigError("init_data", f"{path}: {err}", source=source) from None
    return found


def check_label(cfg: RunConfig, *, source: str | None = None) -> None:
    """Checks of the label section that need an import: ``label.ase.calculator`` must name an
    ASE calculator class (a config names code; nothing else is called). A module that cannot be
    imported here is an error for the local engine only (other engines label elsewhere)."""
    if cfg.label.kind != "ase":
        return
    from dpa3_al.label.inprocess import import_object, load_calculator_class
    from dpa3_al.label.results import LabelerUnavailable

    path = cfg.label.ase.calculator
    try:
        try:
            import_object(path)
        except LabelerUnavailable:
            if cfg.workflow.engine != "local":
                return
            raise
        load_calculator_class(path)
    except LabelerUnavailable as err:
        raise ConfigError("label.ase.calculator", str(err).removeprefix("label.ase.calculator: "),
                          source=source) from None


def check_configurations(cfg: RunConfig, base: Path, *, source: str | None = None) -> set[str]:
    """Read every task group's starting structures now (not after the first training), check
    their elements against the model's type map (when it is given) and return the elements."""
    from dpa3_al.explore.configurations import build_pool
    from dpa3_al.common.errors import UserError

    explicit = cfg.train.model.type_map and cfg.train.finetune.model is None
    type_map = set(cfg.train.model.type_map) if explicit else None
    found: set[str] = set()
    for i, stage in enumerate(cfg.explore.stages):
        for j, group in enumerate(stage.task_groups):
            key = f"explore.stages[{i}].task_groups[{j}].configurations"
            try:
                pool = build_pool(group.configurations, base, seed=0)
            except (UserError, OSError, ValueError) as err:
                raise ConfigError(key, str(err), source=source) from None
            if cfg.uses_bootstrap:
                _check_bootstrap_copies(cfg, group.configurations, base, source)
            elements = {s for c in pool for s in c.atoms.get_chemical_symbols()}
            found |= elements
            if type_map is not None and not elements <= type_map:
                raise ConfigError(key, f"elements {sorted(elements - type_map)} are not in train.model.type_map "
                                  f"{cfg.train.model.type_map}; add them there", source=source)
    return found


def _check_bootstrap_copies(cfg: RunConfig, specs: list, base: Path, source: str | None) -> None:
    """The bootstrap's perturbed copies of ``specs`` fit the size limits (checked before any copy)."""
    from dpa3_al.common.errors import UserError
    from dpa3_al.explore.config import PerturbSpec
    from dpa3_al.explore.configurations import check_copies

    boot = cfg.bootstrap or BootstrapConfig()
    pert = PerturbSpec(copies=boot.copies, cell=boot.cell, atom=boot.atom, keep_original=boot.keep_original)
    for spec in specs:
        try:
            check_copies(spec, base, pert)
        except (UserError, OSError, ValueError) as err:
            raise ConfigError("bootstrap.copies", f"{err}", source=source) from None


def fill_seeds(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with a seed derived from the top-level ``seed`` wherever a section that takes
    one has none of its own (seed 0 gives the sections' own defaults)."""
    if not isinstance(data, dict) or not isinstance(data.get("seed", 0), int):
        return data
    seed = data.get("seed", 0)
    out = dict(data)

    def put(parent: Any, key: str, value: int) -> Any:
        return {key: value, **parent} if isinstance(parent, dict) else parent

    train = out.get("train") if isinstance(out.get("train"), dict) else {}
    out["train"] = {**train, "training": put(train.get("training") or {}, "seed", 1 + 1000 * seed)}
    out["select"] = put(out.get("select") or {}, "seed", seed)
    if isinstance(out.get("bootstrap"), dict):
        out["bootstrap"] = put(out["bootstrap"], "seed", seed)
    explore = out.get("explore")
    if isinstance(explore, dict) and isinstance(explore.get("stages"), list):
        stages = [{**st, "task_groups": [put(g, "seed", seed) for g in st["task_groups"]]}
                  if isinstance(st, dict) and isinstance(st.get("task_groups"), list) else st
                  for st in explore["stages"]]
        out["explore"] = {**explore, "stages": stages}
    return out


def _resolve_test_data(cfg: RunConfig, base: Path, source: str) -> list[Path]:
    paths = [(p if p.is_absolute() else base / p).resolve() for p in cfg.test_data]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ConfigError("test_data", f"{missing} do not exist (paths are relative to the config file)", source=source)
    return paths


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as plain data (what runs/<name>/config.yaml holds)."""
    return to_dict(cfg)
