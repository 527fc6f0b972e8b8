"""Speed of one energy+forces+virial call, one model and a committee (issue: model core).

    python bench/bench_model.py                     # water example model, 192 atoms, float32, 2 threads
    python bench/bench_model.py --checkpoint M.pt   # given weights (e.g. a deepmd-kit checkpoint)
    python bench/bench_model.py --deepmd-python /path/to/venv/bin/python
                                                    # also time deepmd-kit on the same weights/frame
    python bench/bench_model.py --model dpa31-3m-shape --deepmd-python ... --interleave 12
                                                    # alternate single calls of both programs

With --deepmd-python, the deepmd-kit environment first writes a checkpoint of the water
example model (random weights, its own initialisation) that both sides then evaluate.
With --interleave N, deepmd-kit runs as a server process (bench/deepmd_side.py serve) and the
two programs take turns, one E+F+V call each, N times (order alternating): this machine's speed
drifts by 20-30 % within minutes, which moves a ratio of two runs made one after the other more
than the medians of pairs made in the same seconds. The allocator setting is printed (dpa3-al applies glibc mallopt settings; deepmd-kit is run
with the equivalent GLIBC_TUNABLES so that both get the same allocator).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODELS, ROOT, command_line, emit, median_time, peak_rss_gb, water_atoms  # noqa: E402

TUNABLES = ("glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184:"
            "glibc.malloc.top_pad=1073741824")


def deepmd_checkpoint(python: str, out: Path) -> Path:
    if not out.exists():
        subprocess.run([python, str(ROOT / "bench" / "deepmd_side.py"), "make-ckpt", "--out", str(out)], check=True)
    return out


def deepmd_time(python: str, ckpt: Path, repeat: int, replicate: str) -> dict:
    env = {"OMP_NUM_THREADS": "2", "GLIBC_TUNABLES": TUNABLES, "PATH": "/usr/bin:/bin"}
    res = subprocess.run([python, str(ROOT / "bench" / "deepmd_side.py"), "time", "--ckpt", str(ckpt),
                          "--repeat", str(repeat), "--replicate", replicate],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def interleaved(python: str, ckpt: Path, one, n: int) -> dict:
    """Alternate ``one()`` (ours) with one deepmd-kit call in a server process, n pairs."""
    import statistics
    import time

    env = {"OMP_NUM_THREADS": "2", "GLIBC_TUNABLES": TUNABLES, "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([python, str(ROOT / "bench" / "deepmd_side.py"), "serve", "--ckpt", str(ckpt)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def theirs() -> float:
        proc.stdin.write("call\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())["s"]

    try:
        if not json.loads(proc.stdout.readline()).get("ready"):
            raise RuntimeError("deepmd-kit server did not start")
        ours_t, theirs_t = [], []
        for i in range(n):
            for side in (("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")):
                if side == "ours":
                    t0 = time.perf_counter()
                    one()
                    ours_t.append(time.perf_counter() - t0)
                else:
                    theirs_t.append(theirs())
        proc.stdin.close()
        last = json.loads(proc.stdout.readlines()[-1])
    finally:
        proc.kill()
    ratios = [a / b for a, b in zip(ours_t, theirs_t)]
    return {"pairs": n, "dpa3_al_median_s": round(statistics.median(ours_t), 4),
            "deepmd_median_s": round(statistics.median(theirs_t), 4),
            "ratio_of_medians": round(statistics.median(ours_t) / statistics.median(theirs_t), 3),
            "median_pair_ratio": round(statistics.median(ratios), 3),
            "pair_ratios": [round(r, 3) for r in ratios], "deepmd_energy": last["energy"],
            "deepmd_peak_rss_gb": last["peak_rss_gb"]}


def committee_times(models, atoms, t1: float, args) -> None:
    from dpa3_al.model import CommitteeCalculator

    comm = CommitteeCalculator(models, memory=args.memory)

    def committee():
        comm.reset()
        comm.get_forces(atoms)

    tc, _ = median_time(committee, max(3, args.repeat // 2))
    emit({"what": f"dpa3-al committee of {args.committee} (mean-driven, all models every call)",
          "median_s": round(tc, 4), "ratio_to_single": round(tc / t1, 2), "peak_rss_gb": round(peak_rss_gb(), 2)})
    traj_freq = 10
    emit({"what": f"dpa3-al committee of {args.committee}, model 0 drives, deviations every {traj_freq} steps",
          "per_step_s": round(t1 * (1 + (args.committee - 1) / traj_freq), 4),
          "ratio_to_single": round(1 + (args.committee - 1) / traj_freq, 2)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=list(MODELS), default="water-example")
    ap.add_argument("--checkpoint", type=Path, help="evaluate these weights instead of a random model")
    ap.add_argument("--deepmd-python", help="python of an environment with deepmd-kit 3.2 (side-by-side run)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--committee", type=int, default=4, help="committee size (0 or 1: time one model only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory", choices=["default", "low"], default="default")
    ap.add_argument("--interleave", type=int, default=0, metavar="N",
                    help="with --deepmd-python: N pairs of single calls, the two programs taking turns")
    args = ap.parse_args()

    import torch

    from dpa3_al.model import DPA3Calculator, build_model, load_model
    from dpa3_al.model.kernels.runtime import tune_malloc

    torch.set_num_threads(args.threads)
    malloc = tune_malloc()
    print(f"# command: {command_line()}\n# {malloc}; torch {torch.__version__}; threads {args.threads}")
    ckpt = args.checkpoint
    if args.deepmd_python and ckpt is None:
        ckpt = deepmd_checkpoint(args.deepmd_python, ROOT / "bench" / "out" / f"{args.model}-deepmd.pt")
    n_models = max(1, args.committee)
    models = ([load_model(ckpt)] * n_models if ckpt else
              [build_model(MODELS[args.model], seed=s) for s in range(n_models)])
    atoms = water_atoms()
    single = DPA3Calculator(models[0], memory=args.memory)

    def one():
        single.reset()
        single.get_forces(atoms)
        single.get_stress(atoms)

    t1, times = median_time(one, args.repeat)
    emit({"what": "dpa3-al single", "model": args.model, "atoms": len(atoms), "median_s": round(t1, 4),
          "times": [round(t, 3) for t in times], "peak_rss_gb": round(peak_rss_gb(), 2)})
    if args.committee > 1:
        committee_times(models, atoms, t1, args)
    if args.deepmd_python and args.interleave:
        res = interleaved(args.deepmd_python, ckpt, one, args.interleave)
        e_ours = DPA3Calculator(load_model(ckpt)).get_potential_energy(atoms)
        emit({"what": "dpa3-al and deepmd-kit 3.2 eager, interleaved single calls (same weights and frame)",
              "model": args.model, "atoms": len(atoms), **res,
              "energy_difference_eV": float(np.abs(e_ours - res["deepmd_energy"]))})
    elif args.deepmd_python:
        ref = deepmd_time(args.deepmd_python, ckpt, max(5, args.repeat // 2), "1,1,1")
        ours = load_model(ckpt)
        e_ours = DPA3Calculator(ours).get_potential_energy(atoms)
        emit({"what": "deepmd-kit 3.2 eager (same weights, same frame, GLIBC_TUNABLES)", **ref,
              "speedup_of_dpa3_al": round(ref["median_s"] / t1, 2),
              "energy_difference_eV": float(np.abs(e_ours - ref["energy"]))})


if __name__ == "__main__":
    main()
