"""The step adapters: the functions the workflow OPs call (``FUNC`` in ``workflows/ops/*.py``).

Each takes the step's config as the plain dict that dflow carries (what ``workflows/plan.py``
gives the step: a section, or a dict holding it under its name, plus ``base_dir`` where relative
structure files are read from), parses it ONCE into its typed section config with
:func:`~dpa3_al.common.typed_config.from_dict` (errors name the key path), and calls the science
function with typed arguments and paths. Nothing below this module sees a config dict.

    step          section (typed)                      science
    train         train (TrainConfig)                  dpa3_al.model.train.trainer.train
    prep-explore  explore (ExploreConfig)              dpa3_al.explore.tasks.write_stage_tasks
    run-explore   explore.drive (ExploreConfig)        dpa3_al.explore.md.run_task (engine ase)
                                                       dpa3_al.explore.lammps.explore_task (engine lammps)
    select        select (SelectConfig)                dpa3_al.select.select
    prep-label    label (LabelConfig)                  dpa3_al.label.tasks.prepare_tasks
    run-label     label (LabelConfig)                  dpa3_al.label.run.run_task
    collect       collect (CollectConfig)              dpa3_al.dataset.collect
    evaluate      target (TargetConfig)                dpa3_al.evaluation (test set, calibration, final model)
    decide        explore (ExploreConfig: stages)      dpa3_al.schedule.decide
    bootstrap     explore, bootstrap (BootstrapConfig) dpa3_al.explore.bootstrap.write_bootstrap
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from dpa3_al.common.typed_config import from_dict

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["train_member", "prepare_explore", "run_explore", "select_candidates", "prepare_label", "run_label",
           "collect", "evaluate", "decide", "bootstrap"]


def section(config: Mapping[str, Any] | None, name: str) -> tuple[dict[str, Any], Path]:
    """The ``name`` section of a step's ``config`` (or the dict itself when it has no such key)
    and ``base_dir`` (folder for relative paths; default the current folder)."""
    config = dict(config or {})
    base_dir = Path(config.pop("base_dir", "."))
    return dict(config.get(name, config) or {}), base_dir


def _parse(cls: type[T], config: Mapping[str, Any] | None, name: str) -> tuple[T, Path]:
    data, base_dir = section(config, name)
    return from_dict(cls, data, path=name), base_dir


def checkpoints(models: Sequence[Path] | None) -> list[Path]:
    """Checkpoint files from files or folders holding ``*.pt`` (a train step's member folders)."""
    out: list[Path] = []
    for m in models or []:
        m = Path(m)
        out.extend(sorted(m.glob("*.pt")) if m.is_dir() else [m])
    return out


def train_member(config: dict, data: list[Path], init_model: Path | None, member: int, iteration: int,
                 workdir: Path) -> Path:
    """train: committee member ``member`` of ``iteration`` in ``workdir``; returns model.pt.

    ``config`` is the ``train:`` section; ``data`` (init data and the dataset) is added to
    ``data.systems``. ``init_model``: our model is continued, a deepmd-kit or untrained
    checkpoint fine-tuned. A finished or interrupted member is continued (idempotent).
    """
    from dpa3_al.model.train.finetune import resolve_start
    from dpa3_al.model.train.trainer import train

    cfg = resolve_start(_train_config(config, data), Path(init_model) if init_model else None)
    workdir = Path(workdir)
    restart = (workdir / "checkpoint.pt").is_file()
    log.info("iteration %d member %d: training in %s%s", iteration, member, workdir, " (restart)" if restart else "")
    return train(cfg, workdir, member=member, restart=restart).model_path


def train_stack(config: dict, data: list[Path], init_models: list[Path | None], members: list[int], iteration: int,
                workdirs: list[Path]) -> list[Path]:
    """train, a stack of members (``train.training.stack`` > 1): members ``members`` trained together as
    one stacked model in one process (model/train/stacked.py), member k in ``workdirs[k]`` from
    ``init_models[k]``; returns their model.pt paths. Finished or interrupted members are continued."""
    from dpa3_al.model.train.finetune import resolve_start
    from dpa3_al.model.train.stacked import train_stack as run_stack

    base = _train_config(config, data)
    cfgs = [resolve_start(base, Path(m) if m else None) for m in init_models]
    log.info("iteration %d members %s: training as one stack in %s", iteration, members,
             ", ".join(str(w) for w in workdirs))
    return [r.model_path for r in run_stack(cfgs, [Path(w) for w in workdirs], members)]


def _train_config(config: dict, data: list[Path]):
    """The ``train:`` section with the step's data added (a dataset folder with no system yet, from
    an iteration that labeled nothing, adds nothing)."""
    from dpa3_al.model.train.config import TrainConfig

    cfg = TrainConfig.from_dict(config, source="train")
    extra = [Path(p) for p in data if Path(p).is_file() or any(Path(p).rglob("type.raw"))]
    return cfg.with_changes(data={"systems": [*cfg.data.systems, *extra]})


def prepare_explore(config: dict[str, Any], schedule: Path | None, iteration: int, workdir: Path) -> list[Path]:
    """prep-explore: the task folders of ``iteration`` in the stage that the previous decide
    step's ``schedule.json`` names (stage 0 at first); returns them in task order."""
    from dpa3_al.explore.config import ExploreConfig
    from dpa3_al.explore.tasks import write_stage_tasks
    from dpa3_al.schedule import ScheduleRecord

    cfg, base_dir = _parse(ExploreConfig, config, "explore")
    stage = 0
    if schedule is not None and Path(schedule).is_file():
        stage = ScheduleRecord.read(Path(schedule)).state.stage
    return write_stage_tasks(cfg, stage, iteration, base_dir, Path(workdir))


def run_explore(config: dict[str, Any], task: Path, models: list[Path], workdir: Path):
    """run-explore (one slice): the MD task folder ``task`` with the committee of ``models``
    (checkpoint files or folders of ``*.pt``) into ``workdir``; returns the task's report.

    ``config``: the ``explore`` section (``drive``; the task's stage gives the engine: ``ase``, or
    ``lammps`` with ``explore.lammps`` and the group's ``template``); ``head`` and ``device``
    (default cpu) may sit beside it.
    """
    from dpa3_al.explore.config import ExploreConfig
    from dpa3_al.explore.lammps import explore_task, uses_lammps
    from dpa3_al.explore.md import run_task
    from dpa3_al.explore.tasks import load_task
    from dpa3_al.model import CommitteeCalculator

    data, base_dir = section(config, "explore")
    head, device = data.pop("head", None), data.pop("device", "cpu")
    cfg = from_dict(ExploreConfig, data, path="explore")
    if uses_lammps(cfg, load_task(Path(task))):
        return explore_task(cfg, base_dir, Path(task), checkpoints(models), Path(workdir), head=head)
    comm = CommitteeCalculator([str(p) for p in checkpoints(models)], head=head, device=device, drive=cfg.drive)
    return run_task(load_task(Path(task)), comm, Path(workdir))


def select_candidates(config: dict[str, Any], explored: Sequence[Path], iteration: int, workdir: Path,
                      models: Sequence[Path] | None = None, calibration: Path | None = None,
                      labeled_data: Sequence[Path] = ()) -> int:
    """select: classify, filter and cap the frames of the explored task folders (those without
    ``task.json`` are ignored) into ``workdir``; returns the number of frames selected.

    ``config``: the ``select`` section (or a dict holding it); ``models``, ``head``, ``device``
    may sit in it or beside it. ``models`` (this iteration's committee) wins over the config's;
    model 0 gives the descriptors of strategy ``diversity``. A ``target`` beside ``select`` (the
    run's accuracy target) sets f_lo/f_hi from the previous iterations' ``calibration``
    (``calibration.json`` or its folder) and writes ``target.json`` beside ``selection.json``.
    ``labeled_data`` (the run's dataset and init_data): frames already labeled are not picked again.
    """
    from dpa3_al.explore.frames import read_frames_table
    from dpa3_al.explore.tasks import TASK_JSON
    from dpa3_al.select import SelectConfig, labeled_frames, select

    outer = dict(config or {})
    data, _ = section(config, "select")
    found = checkpoints(models) or data.pop("models", None) or outer.get("models")
    data.pop("models", None)
    head = data.pop("head", None) or outer.get("head")
    device = data.pop("device", None) or outer.get("device") or "cpu"
    cfg = from_dict(SelectConfig, data, path="select")
    dirs = sorted((Path(d) for d in explored if (Path(d) / TASK_JSON).is_file()), key=lambda d: d.name)
    levels, table = None, None
    tcfg = _target(outer)
    if tcfg is not None and cfg.adaptive is None:
        table = read_frames_table(dirs) if dirs else None          # read once: levels, then select()
        cfg, levels = _target_levels(cfg, tcfg, calibration, table)
    descriptor_fn = None
    if found:
        from dpa3_al.model import DPA3Calculator

        descriptor_fn = DPA3Calculator(str(found[0]), head=head, device=device).get_descriptor
    log.info("iteration %d: selecting from %d task folders", iteration, len(dirs))
    labeled = labeled_frames([Path(p) for p in labeled_data]) if cfg.filters.dedup_tol is not None else []
    n = select(dirs, cfg, Path(workdir), descriptor_fn=descriptor_fn, labeled=labeled, table=table).n_selected
    if levels is not None:
        levels.write(Path(workdir))
    return n


def _target(config: Mapping[str, Any] | None):
    """The run's accuracy target beside a step's section (``config["target"]``), typed; None without one."""
    from dpa3_al.calibration import TargetConfig

    target = (config or {}).get("target")
    return from_dict(TargetConfig, target, path="target") if target is not None else None


def _target_levels(cfg, tcfg, calibration: Path | None, table):
    """(select config with the levels the target, the calibration and this iteration's explored
    frames ``table`` (None: no frames) give, the TargetLevels)."""
    import dataclasses

    from dpa3_al.calibration import CalibrationRecord, derive_levels
    explored = table.column("max_devi_f") if table is not None else None
    levels = derive_levels(tcfg, CalibrationRecord.read(calibration).pairs, cfg.f_lo, cfg.f_hi, explored)
    log.info("trust levels: f_lo %.4g, f_hi %.4g eV/Å (%s)", levels.f_lo, levels.f_hi, levels.reason)
    if not levels.explicit:
        cfg = dataclasses.replace(cfg, f_lo=levels.f_lo, f_hi=levels.f_hi)
    return cfg, levels


def prepare_label(config: dict[str, Any], selection: Path, iteration: int, workdir: Path) -> list[Path]:
    """prep-label: split the selection's candidates into labeling task folders."""
    from dpa3_al.label.config import LabelConfig
    from dpa3_al.label.tasks import prepare_tasks

    cfg, _ = _parse(LabelConfig, config, "label")
    return prepare_tasks(cfg, Path(selection), iteration, Path(workdir))


def run_label(config: dict[str, Any], task: Path, workdir: Path) -> None:
    """run-label (one slice): label the frames of one task folder into ``workdir``."""
    from dpa3_al.label.config import LabelConfig
    from dpa3_al.label.run import run_task

    cfg, _ = _parse(LabelConfig, config, "label")
    run_task(cfg, Path(task), Path(workdir))


def collect(config: dict[str, Any] | None, dataset: Path | None, labeled: Sequence[Path], iteration: int,
            workdir: Path) -> Path:
    """collect: the previous dataset plus this iteration's labels, as a new dataset in ``workdir``."""
    from dpa3_al.dataset.collect import CollectConfig, collect as collect_labels

    cfg, _ = _parse(CollectConfig, config, "collect")
    return collect_labels(cfg, dataset, [Path(p) for p in labeled], iteration, Path(workdir))


def evaluate(config: dict[str, Any] | None, models: Sequence[Path], selection: Path | None,
             labeled: Sequence[Path], dataset: Path | None, init_data: Sequence[Path], test_data: Sequence[Path],
             calibration: Path | None, iteration: int, final: bool, workdir: Path) -> Path:
    """evaluate: the committee of this iteration (``models``: its model files; with ``final``, the
    final training's member folders) on the test set (``test.json``, labels = frames of
    ``init_data`` + ``dataset``); without ``final``, the true error on this iteration's labels
    against their selection deviation, appended to ``calibration.json``; with ``final``, the final
    model (``model.pt``, ``committee/``, ``final.json``). Returns ``workdir``."""
    from dpa3_al.calibration import CalibrationRecord, TargetConfig
    from dpa3_al.evaluation import calibration_pairs, committee_errors, count_frames, pick_final, write_test
    from dpa3_al.select import SelectionReport

    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    tcfg = _target(config)
    confidence = (tcfg or TargetConfig()).confidence    # without a target: the default confidence
    labels = count_frames([*init_data, *([dataset] if dataset is not None else [])])
    if final:
        info = pick_final([Path(m) for m in models], wd)
        files = [wd / name for name in info["committee"]]
    else:
        files = checkpoints(models)
    rows = committee_errors(files, test_data) if test_data else []
    write_test(wd, "final" if final else iteration, labels, rows)
    if not final:
        report = SelectionReport.read(Path(selection)) if selection is not None else None
        pairs = calibration_pairs(files, report.selected if report else [], labeled, iteration,
                                  odds=report.selection_odds if report else None)
        CalibrationRecord.read(calibration).with_iteration(iteration, pairs).write(wd, confidence)
    log.info("iteration %s: %d labels; test rows %d", "final" if final else iteration, labels, len(rows))
    return wd


def decide(config: dict[str, Any], schedule: Path | None, selection: Path, dataset: Path | None, iteration: int,
           workdir: Path, evaluation: Path | None = None) -> bool:
    """decide: judge this iteration by the stages of ``explore``; True when the exploration is over
    (``dataset`` is not used by the decision). With a ``target`` beside ``explore`` and the evaluate
    step's folder (``evaluation``, holding calibration.json), the verdict's levels are recalibrated
    on this iteration's own labels (:mod:`dpa3_al.schedule`)."""
    from dpa3_al.explore.config import ExploreConfig
    from dpa3_al.schedule import decide as judge_iteration

    cfg, _ = _parse(ExploreConfig, config, "explore")
    return judge_iteration(cfg.stages, schedule, Path(selection), iteration, Path(workdir), target=_target(config),
                           calibration=None if evaluation is None else Path(evaluation))


def bootstrap(config: dict[str, Any], workdir: Path) -> int:
    """bootstrap: perturbed copies of the starting structures to label before the first training,
    in ``workdir/candidates.extxyz``; returns the frame count."""
    from dpa3_al.explore.bootstrap import BootstrapConfig, write_bootstrap
    from dpa3_al.explore.config import ExploreConfig

    explore, base_dir = _parse(ExploreConfig, config, "explore")
    cfg = from_dict(BootstrapConfig, dict(config or {}).get("bootstrap") or {}, path="bootstrap")
    return write_bootstrap(explore, cfg, base_dir, Path(workdir))
