"""MD steps per second of the two exploration engines on water: ase (our committee in ASE) and lammps
(the exported, frozen committee in LAMMPS' pair_style deepmd, 1 or 2 MPI ranks).

The same committee for both: two water-example DPA3 models (bench/common.py WATER_EXAMPLE, random
weights, float32), nvt-nhc at 300 K, 0.5 fs, model 0 drives, the committee evaluated every
``traj_freq`` steps. Each run is the engine's real task path (``dpa3_al.explore.md.run_task`` /
``dpa3_al.explore.lammps.run_task``) in a fresh folder; freezing the models is done once, before.

Reported per run (one JSON line): ``steps_per_s`` = task steps / task wall time (start-up, model
loading and the step-0 deviation included, as an exploration sees it); for LAMMPS also
``loop_steps_per_s`` = LAMMPS' own "timesteps/s" of the run loop (no start-up); ``cpu_s`` and
``steps_per_cpu_s``: CPU time of the engine (ours: this process; LAMMPS: its processes), the fairer
number on a machine shared with other work.

    python bench/bench_md_engines.py --atoms 192 1536 --steps 10 4
    python bench/bench_md_engines.py --atoms 12288 --steps 2 --engines ase lammps lammps-mpi2
Needs .venv-deepmd with LAMMPS (`bash scripts/setup-deepmd.sh --lammps`) for the lammps engines.
"""

from __future__ import annotations

import argparse
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, WATER_EXAMPLE, command_line, emit, water_atoms  # noqa: E402

REPLICAS = {192: (1, 1, 1), 1536: (2, 2, 2), 12288: (4, 4, 4)}


def make_models(work: Path) -> list[Path]:
    from dpa3_al.model import build_model, save_model

    paths = []
    for seed in (0, 1):
        path = work / f"model-{seed}.pt"
        save_model(build_model(WATER_EXAMPLE, seed=seed), path)
        paths.append(path)
    return paths


def make_task(natoms: int, steps: int, traj_freq: int):
    from dpa3_al.explore.config import StopConfig
    from dpa3_al.explore.tasks import MDSettings, Task

    md = MDSettings(ensemble="nvt-nhc", temperature=300.0, pressure=None, timestep=0.5, steps=steps,
                    traj_freq=traj_freq, friction=0.01, tau_t=100.0, tau_p=1000.0)
    stop = StopConfig(max_devi_f=None, min_dist_ratio=None, lost_distance=None)
    return Task(name=f"water-{natoms}", index=0, group="water", stage=0, iteration=0, conf_label="water",
                seed=1234, md=md, stop=stop, atoms=water_atoms(REPLICAS[natoms]))


def run_ase(task, models: list[Path], out: Path, threads: int | None, memory: str = "default") -> dict:
    import torch

    from dpa3_al.explore.md import run_task
    from dpa3_al.model import CommitteeCalculator

    if threads:
        torch.set_num_threads(threads)
    comm = CommitteeCalculator([str(m) for m in models], drive=0, memory=memory)
    cpu = time.process_time()
    report = run_task(task, comm, out)
    cpu = time.process_time() - cpu
    return {"status": report.status, "steps": report.step, "wall_s": report.wall_s, "steps_per_s": report.steps_per_s,
            "cpu_s": round(cpu, 2), "steps_per_cpu_s": round(report.step / cpu, 4)}


def run_lammps(task, frozen: list[Path], out: Path, ranks: int, threads: int | None) -> dict:
    from dpa3_al.explore.config import LammpsConfig
    from dpa3_al.explore.lammps import preflight, run_task

    cfg = LammpsConfig(mpi_ranks=ranks, threads=threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = run_task(task, frozen, ["O", "H"], preflight(cfg, ROOT), cfg, out)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    text = (out / "log.lammps").read_text() if (out / "log.lammps").is_file() else ""
    loop = re.findall(r"([\d.]+) timesteps/s", text)
    return {"status": report.status, "detail": report.detail, "steps": report.step, "wall_s": report.wall_s,
            "steps_per_s": report.steps_per_s, "loop_steps_per_s": float(loop[-1]) if loop else None,
            "cpu_s": round(cpu, 2), "steps_per_cpu_s": round(report.step / cpu, 4) if cpu > 0 else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atoms", type=int, nargs="+", default=[192, 1536, 12288], choices=sorted(REPLICAS))
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 4, 2],
                    help="MD steps per size (one value per --atoms)")
    ap.add_argument("--engines", nargs="+", default=["ase", "lammps", "lammps-mpi2"],
                    choices=["ase", "lammps", "lammps-mpi2"])
    ap.add_argument("--threads", type=int, default=None, help="threads per process (ASE: torch; LAMMPS: per rank)")
    ap.add_argument("--traj-freq", type=int, default=None,
                    help="committee every this many steps (default steps // 2)")
    ap.add_argument("--memory", default="default", choices=["default", "low"],
                    help="the ase engine's memory mode (low: recompute, for systems that do not fit)")
    ap.add_argument("--work", type=Path, default=None, help="keep the task folders here (default: a temporary folder)")
    args = ap.parse_args()
    steps = dict(zip(args.atoms, args.steps + [args.steps[-1]] * (len(args.atoms) - len(args.steps))))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-md-engines-"))
    work.mkdir(parents=True, exist_ok=True)
    models = make_models(work)
    frozen = []
    if any(e.startswith("lammps") for e in args.engines):
        from dpa3_al.explore.config import LammpsConfig
        from dpa3_al.explore.lammps import freeze_model, preflight, program_env

        cfg = LammpsConfig()
        frozen = [freeze_model(m, None, preflight(cfg, ROOT), work / "frozen", program_env(cfg)) for m in models]
    print(f"# {command_line()}", flush=True)
    for natoms in args.atoms:
        n = steps[natoms]
        for engine in args.engines:
            task = make_task(natoms, n, traj_freq=args.traj_freq or max(1, n // 2))
            out = work / f"{engine}-{natoms}"
            if engine == "ase":
                rec = {**run_ase(task, models, out, args.threads, args.memory), "memory": args.memory}
            else:
                rec = run_lammps(task, frozen, out, 2 if engine == "lammps-mpi2" else 1, args.threads)
            emit({"engine": engine, "atoms": natoms, "model": "water-example float32, committee of 2, model 0 drives",
                  "traj_freq": task.md.traj_freq, **rec})


if __name__ == "__main__":
    main()
