"""Benchmark: MD steps/s of a committee exploration task vs one model (192-atom water).

Runs the real exploration code path (:func:`dpa3_al.explore.run_task`: integrator, committee,
deviation on recorded frames, extxyz/CSV writing, geometry checks) on frame 0 of
tests/data/water/data_0 with the water-example DPA3 hyper-parameters (ModelConfig defaults:
n/e/a dims 128/64/32, 6 layers, e/a cut 6.0/4.0 Å, sel 120/30, a_compress 1/2/split,
silut:10.0, exp switch, smooth edge update, float32, fitting [240, 240, 240]) and random
weights, for three set-ups:

- one model (a plain DPA3Calculator: the baseline),
- the committee with model 0 driving and all M models on recorded frames (the default),
- the committee with drive="mean" (all M models every step).

The goal of the project: recording the committee (default drive) costs at most 2x one model.

    .venv/bin/python bench/bench_explore.py                       # CPU, 30 steps
    .venv/bin/python bench/bench_explore.py --device cuda --steps 300 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WATER = ROOT / "tests" / "data" / "water" / "data_0"


def water_atoms():
    from ase import Atoms

    coord = np.load(WATER / "set.000" / "coord.npy")[0].reshape(-1, 3)
    box = np.load(WATER / "set.000" / "box.npy")[0].reshape(3, 3)
    types = np.loadtxt(WATER / "type.raw", dtype=int)
    type_map = (WATER / "type_map.raw").read_text().split()
    return Atoms([type_map[t] for t in types], positions=coord, cell=box, pbc=True)


def make_task(args: argparse.Namespace):
    from dpa3_al.explore.config import StopConfig
    from dpa3_al.explore.tasks import MDSettings, Task

    md = MDSettings(ensemble="nvt-langevin", temperature=330.0, pressure=None, timestep=0.5, steps=args.steps,
                    traj_freq=args.traj_freq, friction=0.01, tau_t=100.0, tau_p=1000.0)
    # random weights push atoms around; keep every task running for the full length (an atom pair
    # closer than 0.1 Å would still end it, as the model refuses such input)
    stop = StopConfig(max_devi_f=None, min_dist_ratio=None, lost_distance=None)
    return Task(name="task-000000", index=0, group="water", stage=0, iteration=0, conf_label="water data_0[0]",
                seed=1, md=md, stop=stop, atoms=water_atoms())


def warm_up(calc, task, n: int = 3) -> None:
    """First-call overheads (allocator, kernels, clocks) out of the timings."""
    for k in range(n):
        warm = task.atoms.copy()
        warm.positions += 0.001 * (k + 1)
        warm.calc = calc
        warm.get_forces()
        if hasattr(calc, "evaluate_all") and calc.drive != "mean":
            calc.evaluate_all(warm)


def timed(label: str, calc, task, workdir: Path) -> dict:
    """Time one run_task of ``task`` with ``calc``."""
    from dpa3_al.explore import run_task

    start = time.perf_counter()
    report = run_task(task, calc, workdir)
    wall = time.perf_counter() - start
    steps = report.step
    row = {"setup": label, "status": report.status, "reason": report.reason, "steps": steps,
           "frames": report.n_frames, "wall_s": round(wall, 3), "steps_per_s": round(steps / wall, 3),
           "ms_per_step": round(1e3 * wall / steps, 2)}
    print(f"  {label:<26} {row['steps_per_s']:>10.3f} {row['ms_per_step']:>10.2f} {steps:>7d} {report.n_frames:>7d}"
          f"  {report.status}{' (' + str(report.reason) + ')' if report.reason else ''}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="MD steps per set-up (default 30)")
    parser.add_argument("--traj-freq", type=int, default=10, help="record (and evaluate the committee) every N steps")
    parser.add_argument("--models", type=int, default=4, help="committee size M (default 4)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each set-up, interleaved; the median counts")
    parser.add_argument("--skip-mean", action="store_true", help="skip the drive=mean set-up (M x slower)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    from dpa3_al.model import CommitteeCalculator, DPA3Calculator, ModelConfig, build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    print("command:", shlex.join([sys.executable, *sys.argv]))
    config = ModelConfig(type_map=["O", "H"])
    models = [build_model(config, seed=k) for k in range(args.models)]
    task = make_task(args)
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else \
        f"cpu ({torch.get_num_threads()} threads)"
    print(f"water 192 atoms, {sum(p.numel() for p in models[0].parameters())} parameters/model, "
          f"{config.precision}, device {device_name}, {args.steps} steps, traj_freq {args.traj_freq}, M={args.models}")
    print(f"  {'set-up':<26} {'steps/s':>10} {'ms/step':>10} {'steps':>7} {'frames':>7}")
    setups = [("one model", DPA3Calculator(models[0], device=args.device)),
              (f"committee drive=0 (M={args.models})", CommitteeCalculator(models, device=args.device, drive=0))]
    if not args.skip_mean:
        setups.append((f"committee drive=mean (M={args.models})",
                       CommitteeCalculator(models, device=args.device, drive="mean")))
    for _, calc in setups:
        warm_up(calc, task)
    runs: dict[str, list[dict]] = {label: [] for label, _ in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for k, (label, calc) in enumerate(setups):
                runs[label].append(timed(label, calc, task, Path(tmp) / f"run-{r}-{k}"))
    rows = [sorted(runs[label], key=lambda row: row["steps_per_s"])[(args.repeats - 1) // 2] for label, _ in setups]
    base = rows[0]["steps_per_s"]
    for row in rows:
        row["cost_vs_one_model"] = round(base / row["steps_per_s"], 3)
    expected = 1 + (args.models - 1) / args.traj_freq
    print(f"cost vs one model: drive=0 {rows[1]['cost_vs_one_model']:.2f}x (model evaluations per step "
          f"{expected:.2f}; goal <= 2x)" + (f", drive=mean {rows[2]['cost_vs_one_model']:.2f}x" if len(rows) > 2 else ""))
    if args.json:
        args.json.write_text(json.dumps({"device": device_name, "steps": args.steps, "traj_freq": args.traj_freq,
                                         "models": args.models, "repeats": args.repeats, "results": rows,
                                         "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
