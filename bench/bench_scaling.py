"""Cost versus system size and memory mode (issue: linear cost, DPA-3.1-3M-size models).

    python bench/bench_scaling.py                                   # water example, 192 / 1,536 / 6,144 atoms
    python bench/bench_scaling.py --model dpa31-3m-shape --sizes 192,1536
    python bench/bench_scaling.py --sizes 24576 --modes low          # beyond the default mode
    python bench/bench_scaling.py --md 200 --sizes 1536              # MD memory flatness, 4-model committee
    python bench/bench_scaling.py --deepmd-python /work/dp-venv/bin/python --sizes 192,1536

Each (size, mode) runs in a fresh subprocess so that its peak RSS is its own. Water
supercells of tests/data/water/data_3 frame 0 (192 atoms: 1x1x1, 1,536: 2x2x2, 6,144:
4x4x2, 24,576: 4x4x8); E+F+V; float32; 2 threads; dpa3-al's glibc mallopt settings (printed).
Prints one JSON line per measurement: time, time per atom, peak RSS, MB per atom, and
dpa3-al's own memory estimate for the same graph (model/memory.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODELS, ROOT, command_line, emit, median_time, peak_rss_gb, water_atoms  # noqa: E402

REPLICATE = {192: (1, 1, 1), 384: (2, 1, 1), 768: (2, 2, 1), 1536: (2, 2, 2), 3072: (4, 2, 2), 6144: (4, 4, 2),
             12288: (4, 4, 4), 24576: (4, 4, 8), 49152: (8, 4, 8)}


def child(size: int, mode: str, model_name: str, repeat: int, threads: int) -> None:
    import torch

    from dpa3_al.model import DPA3Calculator, build_model
    from dpa3_al.model.kernels.memory import unit_costs, graph_counts, base_bytes
    from dpa3_al.model.calculator import atoms_to_batch

    torch.set_num_threads(threads)
    model = build_model(MODELS[model_name], seed=0)
    calc = DPA3Calculator(model, memory=mode)
    atoms = water_atoms(REPLICATE[size])
    graph = model.build_graph(atoms_to_batch(atoms, model.type_map))
    estimate = unit_costs(calc.model, mode).peak(graph_counts(graph), base_bytes())

    def call():
        calc.reset()
        calc.get_forces(atoms)
        calc.get_stress(atoms)

    t, times = median_time(call, repeat, warmup=1 if size <= 6144 else 0)
    rss = peak_rss_gb()
    emit({"model": model_name, "atoms": size, "mode": mode, "median_s": round(t, 3),
          "ms_per_atom": round(1e3 * t / size, 3), "peak_rss_gb": round(rss, 2),
          "mb_per_atom": round(1e3 * rss / size, 2), "estimate_gb": round(estimate / 1e9, 2),
          "edges": graph.n_edges, "triples": graph.n_triples, "times": [round(x, 2) for x in times]})


def md_child(size: int, steps: int, model_name: str, threads: int) -> None:
    import torch
    from ase import units
    from ase.md.langevin import Langevin

    from dpa3_al.model import CommitteeCalculator, build_model
    from common import peak_rss_gb as rss_now  # noqa: F401
    import psutil

    torch.set_num_threads(threads)
    atoms = water_atoms(REPLICATE[size])
    comm = CommitteeCalculator([build_model(MODELS[model_name], seed=s) for s in range(4)], drive=0)
    atoms.calc = comm
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, rng=__import__("numpy").random.default_rng(0))
    proc = psutil.Process()
    rss = []

    def record():
        if dyn.nsteps % 10 == 0:
            comm.evaluate_all(atoms)            # committee deviation on recorded frames
        rss.append(proc.memory_info().rss / 1e9)

    dyn.attach(record, interval=1)
    dyn.run(steps)
    early = max(rss[5:20]) if len(rss) > 20 else rss[-1]
    emit({"md_steps": steps, "atoms": size, "committee": 4, "drive": 0, "record_every": 10,
          "rss_gb_after_20_steps": round(early, 2), "rss_gb_end": round(rss[-1], 2),
          "rss_gb_max": round(max(rss), 2), "growth_after_step_20_gb": round(max(rss[20:] or [0]) - early, 3),
          "growth_second_half_gb": round(max(rss[len(rss) // 2:]) - max(rss[:len(rss) // 2]), 3),
          "rss_gb_every_10_steps": [round(x, 3) for x in rss[::10]]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=list(MODELS), default="water-example")
    ap.add_argument("--sizes", default="192,1536,6144")
    ap.add_argument("--modes", default="default,low")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--md", type=int, default=0, help="run N MD steps with a 4-model committee instead")
    ap.add_argument("--deepmd-python", help="also run deepmd-kit (separate env) on the same sizes")
    ap.add_argument("--child", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        size, mode = int(args.child[0]), args.child[1]
        if mode == "md":
            md_child(size, args.md, args.model, args.threads)
        else:
            child(size, mode, args.model, args.repeat, args.threads)
        return
    from dpa3_al.model.kernels.runtime import tune_malloc

    print(f"# command: {command_line()}\n# {tune_malloc()}; threads {args.threads}", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        for mode in (["md"] if args.md else args.modes.split(",")):
            cmd = [sys.executable, __file__, "--child", str(size), mode, "--model", args.model,
                   "--repeat", str(args.repeat), "--threads", str(args.threads), "--md", str(args.md)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            out = [line for line in res.stdout.splitlines() if line.startswith("{")]
            if res.returncode or not out:
                last = (res.stderr.strip().splitlines() or ["?"])[-1]
                emit({"model": args.model, "atoms": size, "mode": mode, "failed": last[:300],
                      "peak_rss_gb": None, "returncode": res.returncode})
            else:
                print(out[-1], flush=True)
        if args.deepmd_python and not args.md:
            ckpt = ROOT / "bench" / "out" / f"{args.model}-deepmd.pt"
            if not ckpt.exists():
                subprocess.run([args.deepmd_python, str(ROOT / "bench" / "deepmd_side.py"), "make-ckpt", "--out",
                                str(ckpt), "--model", args.model], check=True)
            rep = ",".join(map(str, REPLICATE[size]))
            env = {"OMP_NUM_THREADS": str(args.threads), "PATH": "/usr/bin:/bin",
                   "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold="
                                     "17179869184:glibc.malloc.top_pad=1073741824"}
            res = subprocess.run([args.deepmd_python, str(ROOT / "bench" / "deepmd_side.py"), "time", "--ckpt",
                                  str(ckpt), "--repeat", str(args.repeat), "--replicate", rep],
                                 capture_output=True, text=True, env=env)
            out = [line for line in res.stdout.splitlines() if line.startswith("{")]
            rec = json.loads(out[-1]) if out else {"failed": (res.stderr.strip().splitlines() or ["?"])[-1][:300]}
            emit({"deepmd_kit": "3.2 eager", "model": args.model, **rec})


if __name__ == "__main__":
    main()
