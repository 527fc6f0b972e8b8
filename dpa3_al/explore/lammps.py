"""The ``lammps`` exploration engine: one MD task run by LAMMPS with the committee in ``pair_style deepmd``.

A stage with ``engine: lammps`` runs each task as dpgen2 does: every committee member is exported
to a deepmd-kit checkpoint (:func:`dpa3_al.model.interop.deepmd_export.export_checkpoint`) and frozen
with ``dp --pt freeze`` once (cached by content hash in ``explore.lammps.model_cache``, default
``frozen-models/`` beside the task folders); the task becomes ``conf.lmp`` + ``in.lammps``
(:mod:`.lammps_io`; the built-in input or the group's ``template``); ``lmp`` runs in the task folder
(``mpirun -np N`` for ``mpi_ranks`` > 1); then the files the ASE engine writes are made from what
LAMMPS wrote, so selection reads both engines alike:

- ``traj.dump`` -> ``traj.extxyz`` (symbols of the model's type map, cell and positions rotated
  back into the starting structure's frame; ``atoms.info`` as the ASE engine's, ``temperature_K``
  and ``model_energy`` from the thermo rows of ``log.lammps``);
- LAMMPS' ``model_devi.out`` (kept as written) -> ``model_devi.csv`` (same units: eV/Å, eV/atom;
  ``devi_e`` is NaN: LAMMPS does not write it);
- ``status.json``: ``finished``, or ``stopped_early`` with reason ``nan`` / ``max_devi_f`` /
  ``min_distance`` / ``lost_atoms`` (the stop criteria applied to the recorded frames after the run:
  frames after the stop are dropped from traj.extxyz and model_devi.csv) or ``error`` (LAMMPS failed:
  its ``ERROR`` line; a timeout).

Model 0 drives (LAMMPS integrates with the first model); the others are evaluated every
``traj_freq`` steps, as ``drive: 0`` of the ASE engine.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dpa3_al.common.errors import InputError, UserError

from .config import ExploreConfig, LammpsConfig, TaskGroupConfig
from .lammps_io import (BUILTIN_TEMPLATE, DATA_FILE, DUMP_FILE, INPUT_FILE, LOG_FILE_LAMMPS, MODEL_DEVI_OUT,
                        LammpsTask, TemplateError, dump_atoms, error_line, read_dump, read_thermo, render,
                        write_data)
from .md import (DEVI_FILE, LOG_FILE, TRAJ_FILE, Recorder, Stop, TaskReport, check_deviation, check_geometry,
                 finish_task, start_task)
from .status import STATUS_JSON, read_status
from .tasks import Task, load_task

log = logging.getLogger(__name__)

SETUP = "bash scripts/setup-deepmd.sh --lammps"
OUTPUT_FILE = "lammps.out"
CACHE_DIR = "frozen-models"


class LammpsUnavailable(UserError):
    """LAMMPS, deepmd-kit's dp or mpirun is missing, or freezing a model failed."""


@dataclass(frozen=True)
class Programs:
    """Resolved programs of the engine."""

    lmp: Path
    dp: Path
    mpirun: Path | None


def find_program(value: str, base_dir: Path) -> Path | None:
    """``value`` as an executable: a bare name on PATH, else a path tried against ``base_dir`` then
    the current folder."""
    if os.sep not in value:
        found = shutil.which(value)
        return Path(found) if found else None
    path = Path(value).expanduser()
    for cand in ([path] if path.is_absolute() else [Path(base_dir) / path, Path.cwd() / path]):
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand.absolute()
    return None


def preflight(cfg: LammpsConfig, base_dir: Path = Path(".")) -> Programs:
    """The engine's programs, or :class:`LammpsUnavailable` naming what is missing and the set-up command."""
    lmp, dp = find_program(cfg.lmp, base_dir), find_program(cfg.dp, base_dir)
    mpirun = None
    if cfg.mpi_ranks > 1:
        mpirun = find_program(cfg.mpirun, base_dir) if cfg.mpirun else (
            lmp.parent / "mpirun" if lmp and (lmp.parent / "mpirun").is_file() else None)
    missing = [f"explore.lammps.{key} {value!r}" for key, value, found in
               (("lmp", cfg.lmp, lmp), ("dp", cfg.dp, dp)) if found is None]
    if cfg.mpi_ranks > 1 and mpirun is None:
        missing.append(f"explore.lammps.mpirun {cfg.mpirun or 'beside lmp'!r} (mpi_ranks {cfg.mpi_ranks})")
    if missing:
        raise LammpsUnavailable(f"engine lammps: {', '.join(missing)} not found (tried against {base_dir} and "
                                f"{Path.cwd()}); run `{SETUP}` in the project folder to make .venv-deepmd "
                                "(LAMMPS with deepmd-kit's plugin, dp, mpirun), or set the paths")
    assert lmp is not None and dp is not None
    return Programs(lmp, dp, mpirun)


def program_env(cfg: LammpsConfig) -> dict[str, str]:
    """Environment of dp and lmp: ours without PYTHONPATH (the deepmd-kit environment has its own
    torch), thread counts when configured."""
    env = {**os.environ, "PYTHONPATH": ""}
    if cfg.threads is not None:
        n = str(cfg.threads)
        env.update(OMP_NUM_THREADS=n, DP_INTRA_OP_PARALLELISM_THREADS=n, DP_INTER_OP_PARALLELISM_THREADS="1")
    return env


def file_key(path: Path, head: str | None) -> str:
    """Content hash of a model file (and the head): the name of its frozen copy."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(f"head={head}".encode())
    return digest.hexdigest()[:20]


def freeze_model(model: Path, head: str | None, programs: Programs, cache: Path, env: dict[str, str]) -> Path:
    """``cache/<hash>.pth``: ``model`` exported (deepmd-kit checkpoint) and frozen with ``dp --pt
    freeze``; reused when present (atomic rename, so concurrent tasks or threads at worst freeze twice)."""
    from dpa3_al.model.interop.deepmd_export import export_checkpoint

    cache.mkdir(parents=True, exist_ok=True)
    key = file_key(model, head)
    frozen = cache / f"{key}.pth"
    if frozen.is_file():
        return frozen
    tmp = cache / f".{key}.{os.getpid()}.{threading.get_ident()}"
    tmp.mkdir(exist_ok=True)
    try:
        export_checkpoint(model, tmp / "model.ckpt.pt", head)
        proc = subprocess.run([str(programs.dp), "--pt", "freeze", "-c", "model.ckpt.pt", "-o", "frozen.pth"],
                              cwd=tmp, env=env, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0 or not (tmp / "frozen.pth").is_file():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
            raise LammpsUnavailable(f"`dp --pt freeze` of {model} (exported to a deepmd-kit checkpoint) failed "
                                    f"with exit code {proc.returncode}:\n{tail}\nCheck the deepmd-kit environment "
                                    f"(`{SETUP}`)")
        os.replace(tmp / "frozen.pth", frozen)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("froze %s -> %s", model, frozen)
    return frozen


def freeze_committee(models: Sequence[Path], head: str | None, programs: Programs, cache: Path,
                     env: dict[str, str]) -> list[Path]:
    """:func:`freeze_model` for every member, up to one ``dp`` process per core at a time (each spends
    most of its ~15 s importing torch and deepmd-kit, so a committee of 4 freezes ~2x faster on 2 cores)."""
    from concurrent.futures import ThreadPoolExecutor

    from dpa3_al.model.train.committee import cores

    with ThreadPoolExecutor(max_workers=max(1, min(len(models), cores()))) as pool:
        return list(pool.map(lambda m: freeze_model(m, head, programs, cache, env), models))


def model_type_map(model: Path, head: str | None) -> list[str]:
    from dpa3_al.model import load_model

    return list(load_model(model, head=head).type_map)


def lammps_task(task: Task, type_map: Sequence[str], frozen: Sequence[Path]) -> LammpsTask:
    md = task.md
    return LammpsTask(ensemble=md.ensemble, temperature=md.temperature, pressure=md.pressure,
                      timestep_fs=md.timestep, steps=md.steps, traj_freq=md.traj_freq, seed=task.seed,
                      tau_t_fs=md.tau_t, tau_p_fs=md.tau_p, friction=md.friction, type_map=tuple(type_map),
                      models=tuple(str(p) for p in frozen), periodic=tuple(bool(p) for p in task.atoms.pbc))


def command(programs: Programs, cfg: LammpsConfig) -> list[str]:
    """The argv of one LAMMPS run in the task folder."""
    argv = [str(programs.lmp), "-in", INPUT_FILE, "-log", LOG_FILE_LAMMPS]
    if cfg.mpi_ranks > 1:
        assert programs.mpirun is not None
        argv = [str(programs.mpirun), "-np", str(cfg.mpi_ranks), *argv]
    return argv


def _reset(task_dir: Path) -> None:
    for name in (TRAJ_FILE, DEVI_FILE, LOG_FILE, STATUS_JSON, DUMP_FILE, MODEL_DEVI_OUT, LOG_FILE_LAMMPS,
                 INPUT_FILE, DATA_FILE, OUTPUT_FILE):
        (task_dir / name).unlink(missing_ok=True)


def read_devi_out(path: Path) -> dict[int, dict[str, float]]:
    """Rows of LAMMPS' ``model_devi.out`` by step (7 columns, or 8 with devi_e); a partial last line
    is ignored. ``devi_e`` is NaN when absent."""
    from dpa3_al.model.ensemble import DEVI_KEYS

    out: dict[int, dict[str, float]] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        try:
            values = [float(x) for x in line.split()]
        except ValueError:
            break
        if len(values) not in (7, 8):
            break
        values += [math.nan] * (8 - len(values))
        out[int(values[0])] = dict(zip(DEVI_KEYS, values[1:]))
    return out


def run_lammps(task_dir: Path, programs: Programs, cfg: LammpsConfig) -> Stop | None:
    """Run ``in.lammps`` in ``task_dir`` (output in ``lammps.out``); a failure or timeout as a Stop
    (its step is set by the caller from the frames that were written)."""
    with open(task_dir / OUTPUT_FILE, "w") as out:
        try:
            proc = subprocess.run(command(programs, cfg), cwd=task_dir, env=program_env(cfg), stdout=out,
                                  stderr=subprocess.STDOUT, timeout=cfg.timeout)
        except subprocess.TimeoutExpired:
            return Stop("error", f"LAMMPS ran past explore.lammps.timeout {cfg.timeout:g} s", -1)
    if proc.returncode == 0:
        return None
    texts = [p.read_text(errors="replace") for p in (task_dir / LOG_FILE_LAMMPS, task_dir / OUTPUT_FILE)
             if p.is_file()]
    line = error_line(*texts) or ("no ERROR line (killed from outside? e.g. out of memory: see lammps.out and the "
                                  "kernel log); last output: " + " | ".join(texts[-1].strip().splitlines()[-3:])
                                  if texts else "no output")
    code = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with code {proc.returncode}"
    return Stop("error", f"LAMMPS {code}: {line}", -1)


def _frame_stop(task: Task, step: int, atoms: Any, forces: np.ndarray, devi: dict[str, float]) -> Stop | None:
    if not (np.isfinite(atoms.positions).all() and np.isfinite(forces).all()):
        return Stop("nan", "non-finite positions or forces in the LAMMPS dump", step)
    return check_deviation(devi, task.stop, step) or check_geometry(atoms, task.stop, step)


def read_back(task: Task, task_dir: Path, type_map: Sequence[str], prism: Any,
              writer: Recorder) -> tuple[int, Stop | None]:
    """Turn the dump, model_devi.out and log into our files; returns (last step, stop criterion hit)."""
    devi = read_devi_out(task_dir / MODEL_DEVI_OUT)
    thermo = read_thermo(task_dir / LOG_FILE_LAMMPS)
    step = 0
    for frame in read_dump(task_dir / DUMP_FILE):
        if frame.step not in devi:
            continue
        step = frame.step
        atoms = dump_atoms(frame, type_map, prism, task.atoms.pbc)
        values = thermo.get(step, {})
        writer.write(step, atoms, devi[step], values.get("PotEng", math.nan), values.get("Temp", math.nan))
        stop = _frame_stop(task, step, atoms, frame.forces, devi[step])
        if stop is not None:
            return step, stop
    return step, None


def run_task(task: Task, frozen: Sequence[Path], type_map: Sequence[str], programs: Programs, cfg: LammpsConfig,
             out_dir: Path, template: str | None = None, revisions: dict[str, object] | None = None) -> TaskReport:
    """Run one MD task in LAMMPS in ``out_dir`` (idempotent: a done task is returned as it is).

    ``frozen``: the committee's frozen models (model 0 drives); ``type_map``: the models' type map;
    ``template``/``revisions``: a user's input template and its extra placeholders (None: built-in).
    Raises InputError for a template that cannot work (no ``${DEEPMD}``/``${DUMP}``/``run``).
    """
    done = start_task(task, out_dir, reset=_reset)
    if done is not None:
        return done
    writer = Recorder(out_dir, task, engine="lammps")
    start = time.perf_counter()
    step, stop = 0, None
    try:
        lt = lammps_task(task, type_map, frozen)
        text = render(template or BUILTIN_TEMPLATE, lt, revisions)
        if task.atoms.cell.rank != 3:
            raise ValueError("the lammps engine needs a 3D cell (a molecule needs a box: set one, pbc false)")
        prism = write_data(task.atoms, out_dir / DATA_FILE, type_map)
        (out_dir / INPUT_FILE).write_text(text)
        failed = run_lammps(out_dir, programs, cfg)
        step, stop = read_back(task, out_dir, type_map, prism, writer)
        if stop is None and failed is not None:
            stop = Stop(failed.reason, failed.detail, step)
    except TemplateError as err:
        writer.close()
        raise InputError(f"task group {task.group!r}: LAMMPS template: {err}") from None
    except (ValueError, OSError) as err:
        stop = Stop("error", f"{type(err).__name__}: {err}", step)
    return finish_task(task, writer, out_dir, step, stop, time.perf_counter() - start)


def group_of(cfg: ExploreConfig, task: Task) -> TaskGroupConfig:
    """The task group config a task was made from (by stage index and group name)."""
    if not 0 <= task.stage < len(cfg.stages):
        raise InputError(f"{task.name}: stage {task.stage} is not in explore.stages ({len(cfg.stages)} stage(s))")
    stage = cfg.stages[task.stage]
    for g, group in enumerate(stage.task_groups):
        if stage.group_name(g) == task.group:
            return group
    raise InputError(f"{task.name}: task group {task.group!r} is not in explore.stages[{task.stage}]")


def uses_lammps(cfg: ExploreConfig, task: Task) -> bool:
    return 0 <= task.stage < len(cfg.stages) and cfg.stages[task.stage].engine == "lammps"


def explore_task(cfg: ExploreConfig, base_dir: Path, task_dir: Path, models: Sequence[Path], workdir: Path,
                 head: str | None = None) -> TaskReport:
    """The run-explore step of a lammps stage: preflight, freeze the committee (cached), run the task.

    Args:
        cfg: the explore section. base_dir: the config's folder (programs, templates, the cache).
        task_dir: the task folder (task.json, conf.extxyz). models: the committee's model files.
        workdir: where the task's outputs go. head: the model head (multi-task models).
    """
    task = load_task(Path(task_dir))
    prior = read_status(Path(workdir))
    if prior is not None and prior.done:
        return TaskReport.from_status(prior)
    if len(models) < 1:
        raise InputError(f"{task.name}: no model files for the lammps engine")
    group = group_of(cfg, task)
    template = None
    if group.template is not None:
        path = group.template if group.template.is_absolute() else Path(base_dir) / group.template
        if not path.is_file():
            raise InputError(f"task group {task.group!r}: template {path} not found (relative paths are read "
                             "from the config file's folder)")
        template = path.read_text()
    programs = preflight(cfg.lammps, Path(base_dir))
    env = program_env(cfg.lammps)
    cache = cfg.lammps.model_cache
    cache = (Path(base_dir) / cache if cache is not None and not cache.is_absolute() else cache) or \
        Path(workdir).absolute().parent / CACHE_DIR
    if any(c.isspace() for c in str(cache.absolute())):
        raise InputError(f"explore.lammps.model_cache {str(cache.absolute())!r}: LAMMPS' pair_style cannot take "
                         "model paths with spaces; set model_cache to a folder without spaces")
    frozen = freeze_committee([Path(m) for m in models], head, programs, cache.absolute(), env)
    type_map = model_type_map(Path(models[0]), head)
    revisions = {k: v[0] for k, v in group.revisions.items()}
    return run_task(task, frozen, type_map, programs, cfg.lammps, Path(workdir), template, revisions)
