"""OpenMP wait policy on an idle and on a loaded machine: one E+F+V call on 1,536 water atoms.

    python bench/bench_waitpolicy.py                       # idle + loaded (3 busy processes), 2 threads
    python bench/bench_waitpolicy.py --load 4 --repeat 3 --threads 2

Each measurement runs in a fresh process (``--child``) because OpenMP (libgomp, loaded with
torch) reads OMP_WAIT_POLICY once, when the runtime starts: ``default`` leaves it unset (threads
spin on a barrier before sleeping), ``passive`` sets OMP_WAIT_POLICY=PASSIVE in the child's
environment, ``passive-late`` sets it inside the child after ``import torch`` (what a library
could do at import time: expected to behave like ``default``). ``--load N`` starts N busy-loop
processes for the duration of the loaded measurements (each stops by itself after
``--load-limit`` s at most). Model: deepmd-kit's water example (bench/common.py), random
weights, float32; system: tests/data/water/data_3 frame 0 replicated 2x2x2 (1,536 atoms).
Prints one JSON line per call: wall and CPU seconds (user + system of the child).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODELS, command_line, emit, water_atoms  # noqa: E402

BUSY = "import time\nend = time.time() + {limit}\nwhile time.time() < end:\n    pass\n"


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def child(policy: str, repeat: int, threads: int, condition: str) -> None:
    import torch

    if policy == "passive-late":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"        # too late: libgomp has read its environment
    from dpa3_al.model import DPA3Calculator, build_model

    torch.set_num_threads(threads)
    calc = DPA3Calculator(build_model(MODELS["water-example"], seed=0))
    atoms = water_atoms((2, 2, 2))
    for call in range(repeat + 1):                       # call 0 warms up (kernels, allocator)
        calc.reset()
        t0, c0 = time.perf_counter(), _cpu()
        calc.get_forces(atoms)
        calc.get_stress(atoms)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        emit({"condition": condition, "policy": policy, "call": call, "warmup": call == 0, "atoms": len(atoms),
              "threads": threads, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
              "load1": round(os.getloadavg()[0], 2)})


def measure(policy: str, condition: str, args) -> list[dict]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    cmd = [sys.executable, __file__, "--child", policy, condition, "--repeat", str(args.repeat),
           "--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.load_limit)
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode or not lines:
        emit({"condition": condition, "policy": policy, "failed": (res.stderr.strip().splitlines() or ["?"])[-1][:300]})
    for line in lines:
        print(line, flush=True)
    return [json.loads(line) for line in lines]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="measured calls per process (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--load", type=int, default=3, help="busy-loop processes for the loaded measurements")
    ap.add_argument("--load-limit", type=float, default=900, help="s; a busy process and a measurement end by then")
    ap.add_argument("--conditions", default="idle,loaded")
    ap.add_argument("--child", nargs=2, metavar=("POLICY", "CONDITION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.repeat, args.threads, args.child[1])
        return
    print(f"# command: {command_line()}\n# cpus {os.cpu_count()}; load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for condition in args.conditions.split(","):
        busy = []
        if condition == "loaded":
            code = BUSY.format(limit=args.load_limit)
            busy = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(args.load)]
        try:
            policies = ["default", "passive"] + (["passive-late"] if condition == "loaded" else [])
            for policy in policies:
                records = [r for r in measure(policy, condition, args) if not r.get("warmup")]
                if records:
                    walls, cpus = [r["wall_s"] for r in records], [r["cpu_s"] for r in records]
                    print(f"# {condition:7s} {policy:13s} wall {min(walls):6.2f}-{max(walls):6.2f} s "
                          f"(median {statistics.median(walls):.2f}), cpu {min(cpus):.2f}-{max(cpus):.2f} s",
                          flush=True)
        finally:
            for proc in busy:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
