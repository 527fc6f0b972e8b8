"""Running one MD task: ASE dynamics driven by a committee, recording frames and deviations.

:func:`run_task` writes, in the task folder:

- ``task.json`` and ``conf.extxyz``: the inputs (atomic writes);
- ``traj.extxyz``: the recorded frames (every ``traj_freq`` steps, step 0 included), each with
  ``atoms.info``: step, time (fs), temperature (K), model energy (eV) and the seven deviations;
- ``model_devi.csv``: ``step,max_devi_v,min_devi_v,avg_devi_v,max_devi_f,min_devi_f,avg_devi_f,devi_e``;
- ``md.log``: a human-readable line per recorded frame and the final outcome;
- ``status.json``: ``finished`` or ``stopped_early`` with the reason and the step.

Frames and rows are appended and flushed one at a time, so a killed task leaves readable
files; a task whose ``status.json`` says it is done is skipped on a re-run. An early stop
(NaN, deviation above the stop level, atoms too close, lost atoms, or an error raised by the
calculator) ends that task only and is recorded, never raised.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from ase import Atoms, units

from .config import StopConfig
from .deviation import DeviCsvWriter, committee_mode, frame_deviation
from .geometry import lost_atoms, min_distance_ratio
from .status import STATUS_JSON, TaskStatus, read_status
from .tasks import MDSettings, Task, write_task

log = logging.getLogger(__name__)

TRAJ_FILE = "traj.extxyz"
DEVI_FILE = "model_devi.csv"
LOG_FILE = "md.log"


@dataclass(frozen=True)
class Stop:
    """Why and where a task stopped early. ``reason``: nan, max_devi_f, min_distance, lost_atoms, error."""

    reason: str
    detail: str
    step: int


@dataclass(frozen=True)
class TaskReport:
    """Outcome of one task (also the content of ``status.json``)."""

    name: str
    group: str
    status: str  # "finished" | "stopped_early"
    reason: str | None
    detail: str | None
    step: int
    n_frames: int
    wall_s: float
    steps_per_s: float
    skipped: bool = False

    @classmethod
    def from_status(cls, status: TaskStatus, skipped: bool = True) -> "TaskReport":
        fields = {k: getattr(status, k) for k in cls.__dataclass_fields__ if k != "skipped"}
        return cls(**fields, skipped=skipped)

    def status_record(self) -> TaskStatus:
        """What ``status.json`` keeps of this report."""
        return TaskStatus(**{k: v for k, v in asdict(self).items() if k != "skipped"})


def make_dynamics(atoms: Atoms, md: MDSettings, rng: np.random.Generator) -> Any:
    """The ASE integrator of ``md.ensemble`` (timestep fs, friction 1/fs, tau fs, pressure bar)."""
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import IsotropicMTKNPT, MTKNPT, NoseHooverChainNVT
    from ase.md.verlet import VelocityVerlet

    dt = md.timestep * units.fs
    temp = md.temperature
    if md.ensemble == "nve":
        return VelocityVerlet(atoms, timestep=dt)
    if md.ensemble == "nvt-langevin":
        return Langevin(atoms, timestep=dt, temperature_K=temp, friction=md.friction / units.fs,
                        fixcm=False, rng=rng)
    if md.ensemble == "nvt-nhc":
        return NoseHooverChainNVT(atoms, timestep=dt, temperature_K=temp, tdamp=md.tau_t * units.fs)
    cls = {"npt-iso": IsotropicMTKNPT, "npt-full": MTKNPT}[md.ensemble]
    return cls(atoms, timestep=dt, temperature_K=temp, pressure_au=md.pressure * units.bar,
               tdamp=md.tau_t * units.fs, pdamp=md.tau_p * units.fs)


def initial_atoms(task: Task, rng: np.random.Generator) -> Atoms:
    """The starting structure with Maxwell-Boltzmann velocities at the task temperature (no drift)."""
    from ase.md.velocitydistribution import Stationary

    atoms = task.atoms.copy()
    atoms.info = {}
    try:  # ASE >= 3.29
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # older ASE
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(atoms, temperature_K=task.md.temperature, rng=rng)
    else:
        thermalize_momenta(atoms, task.md.temperature, rng=rng)
    if len(atoms) > 1:
        Stationary(atoms)
    return atoms


def check_deviation(devi: dict[str, float], stop: StopConfig, step: int) -> Stop | None:
    """NaN force deviation, or max_devi_f above the stop level."""
    value = devi["max_devi_f"]
    if math.isnan(value):
        return Stop("nan", "max_devi_f is NaN (a model gave NaN forces)", step)
    if stop.max_devi_f is not None and value > stop.max_devi_f:
        return Stop("max_devi_f", f"max_devi_f {value:.4g} eV/Å > stop level {stop.max_devi_f:g}", step)
    return None


def check_state(atoms: Atoms, step: int) -> Stop | None:
    """Non-finite positions, cell or driving forces."""
    forces = atoms.get_forces()
    if not (np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all()):
        return Stop("nan", "non-finite positions or cell", step)
    if not np.isfinite(forces).all():
        return Stop("nan", "non-finite forces", step)
    return None


def check_geometry(atoms: Atoms, stop: StopConfig, step: int) -> Stop | None:
    """Atoms closer than ``min_dist_ratio`` x covalent radii, or atoms without neighbours."""
    if stop.min_dist_ratio is not None:
        ratio, pair = min_distance_ratio(atoms, stop.min_dist_ratio)
        if pair is not None:
            return Stop("min_distance", f"atoms {pair[0]} and {pair[1]} at {ratio:.3f} x their covalent radii "
                        f"(< {stop.min_dist_ratio:g})", step)
    if stop.lost_distance is not None:
        lost = lost_atoms(atoms, stop.lost_distance)
        if len(lost):
            shown = ", ".join(str(i) for i in lost[:10]) + (" ..." if len(lost) > 10 else "")
            return Stop("lost_atoms", f"{len(lost)} atom(s) with no neighbour within "
                        f"{stop.lost_distance:g} Å: {shown}", step)
    return None


class Recorder:
    """Appends frames to ``traj.extxyz``, rows to ``model_devi.csv`` and lines to ``md.log``, for
    either engine (``lammps``: LAMMPS writes ``model_devi.out`` itself, so ours is not written)."""

    def __init__(self, task_dir: Path, task: Task, engine: str = "ase"):
        self.task = task
        self.n_frames = 0
        self._traj = open(task_dir / TRAJ_FILE, "a", encoding="utf-8")
        self._csv = DeviCsvWriter(task_dir / DEVI_FILE, deepmd_out=engine == "ase")
        self._log = open(task_dir / LOG_FILE, "a", encoding="utf-8")
        md = task.md
        press = "-" if md.pressure is None else f"{md.pressure:g}"
        self.log(f"# {task.name} group={task.group} conf={task.conf_label!r} natoms={len(task.atoms)} "
                 f"engine={engine} ensemble={md.ensemble} T={md.temperature:g} K P={press} bar "
                 f"dt={md.timestep:g} fs steps={md.steps} traj_freq={md.traj_freq} seed={task.seed}")
        self.log(f"# {'step':>8} {'time/fs':>10} {'Epot/eV':>14} {'Ekin/eV':>12} {'T/K':>9} {'max_devi_f':>11}")

    def log(self, line: str) -> None:
        self._log.write(line + "\n")
        self._log.flush()

    def frame(self, step: int, atoms: Atoms, devi: dict[str, float]) -> None:
        """Record one frame of the ASE engine (``atoms`` carries its calculator's results)."""
        temp = float(atoms.get_temperature()) if len(atoms) else 0.0
        frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        self.write(step, frame, devi, float(atoms.get_potential_energy()), temp, float(atoms.get_kinetic_energy()))

    def write(self, step: int, frame: Atoms, devi: dict[str, float], epot: float, temp: float,
              ekin: float = math.nan) -> None:
        """Record one frame: the structure (one write, then flush) then its CSV row and log line
        (``epot``, ``ekin`` eV, ``temp`` K; NaN where the engine did not report it)."""
        import ase.io

        frame.info.update(step=int(step), time_fs=step * self.task.md.timestep, temperature_K=temp,
                          model_energy=epot, task=self.task.name, group=self.task.group, **devi)
        buf = io.StringIO()
        ase.io.write(buf, frame, format="extxyz")
        self._traj.write(buf.getvalue())
        self._traj.flush()
        self._csv.write(step, devi)
        self.n_frames += 1
        self.log(f"  {step:>8d} {step * self.task.md.timestep:>10.1f} {epot:>14.6f} "
                 f"{ekin:>12.6f} {temp:>9.2f} {devi['max_devi_f']:>11.4g}")

    def close(self) -> None:
        self._traj.close()
        self._csv.close()
        self._log.close()


def _advance(task: Task, atoms: Atoms, dyn: Any, calc: Any, rec: Recorder) -> tuple[int, Stop | None]:
    """Run the dynamics, recording frames; returns (last step reached, early stop or None)."""
    mode = committee_mode(calc)
    freq = task.md.traj_freq
    step = 0
    for _ in dyn.irun(task.md.steps):
        step = int(dyn.nsteps)
        stop = check_state(atoms, step)
        if stop is not None:
            return step, stop
        recorded = step % freq == 0
        if not (recorded or mode == "mean"):
            continue
        devi = frame_deviation(calc, atoms, mode)
        if recorded:
            rec.frame(step, atoms, devi)
        stop = (check_deviation(devi, task.stop, step) if mode != "none" else None)
        if stop is None and recorded:
            stop = check_geometry(atoms, task.stop, step)
        if stop is not None:
            return step, stop
    return step, None


def _reset(task_dir: Path) -> None:
    """Remove the outputs of an interrupted earlier attempt (the task restarts from step 0)."""
    for name in (TRAJ_FILE, DEVI_FILE, LOG_FILE, STATUS_JSON):
        (task_dir / name).unlink(missing_ok=True)


def start_task(task: Task, out_dir: Path, reset: Callable[[Path], None] = _reset) -> TaskReport | None:
    """The report of a task already done in ``out_dir`` (a re-run returns it as it is), else None
    after preparing the folder: ``task.json``, an interrupted attempt's outputs removed (``reset``),
    ``status.json`` running. Both engines start their tasks here."""
    prior = read_status(out_dir)
    if prior is not None and prior.done:
        return TaskReport.from_status(prior)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_task(task, out_dir)
    reset(out_dir)
    TaskStatus(name=task.name, group=task.group, status="running").write(out_dir)
    return None


def run_task(task: Task, calc: Any, out_dir: Path) -> TaskReport:
    """Run one MD task with ``calc`` (a committee, or any ASE calculator: deviations NaN) in ``out_dir``.

    Idempotent: a folder whose ``status.json`` is finished/stopped_early is returned as is.
    Errors raised by the calculator or integrator during the run stop the task (reason
    ``error``), they do not propagate.
    """
    done = start_task(task, out_dir)
    if done is not None:
        return done
    rng = np.random.default_rng(task.seed)
    rec = Recorder(out_dir, task)
    start = time.perf_counter()
    step, stop, dyn = 0, None, None
    try:
        atoms = initial_atoms(task, rng)
        atoms.calc = calc
        dyn = make_dynamics(atoms, task.md, rng)
        step, stop = _advance(task, atoms, dyn, calc, rec)
    except Exception as err:  # noqa: BLE001 - a failing task is data, never a crash of the exploration
        log.warning("%s stopped by an error: %s: %s", task.name, type(err).__name__, err)
        step = int(dyn.nsteps) if dyn is not None else 0
        stop = Stop("error", f"{type(err).__name__}: {err}", step)
    return finish_task(task, rec, out_dir, step, stop, time.perf_counter() - start)


def finish_task(task: Task, rec: Recorder, out_dir: Path, step: int, stop: Stop | None, wall: float) -> TaskReport:
    """Close a task of either engine: its report (``step``: the last step run; a stop's own step
    when it stopped early; ``wall`` s), the log's last line, ``status.json`` written last."""
    report = TaskReport(name=task.name, group=task.group, status="finished" if stop is None else "stopped_early",
                        reason=None if stop is None else stop.reason, detail=None if stop is None else stop.detail,
                        step=step if stop is None else stop.step, n_frames=rec.n_frames, wall_s=round(wall, 3),
                        steps_per_s=round(step / wall, 3) if wall > 0 else 0.0)
    rec.log(f"# {report.status} at step {report.step}: {report.n_frames} frames, {report.steps_per_s:g} steps/s"
            + (f"; {stop.reason}: {stop.detail}" if stop else ""))
    rec.close()
    report.status_record().write(out_dir)
    return report
