"""Kernels on against off, as interleaved calls in one process: the C++ kernels (model/kernels/cpp.py)
against the plain torch path, for E+F+V or a training step.

    python bench/bench_kernels.py                                   # DPA-3.1-3M shape, E+F+V, 192 atoms
    python bench/bench_kernels.py --model water-example --calls 10
    python bench/bench_kernels.py --memory low
    python bench/bench_kernels.py --train --calls 4                 # one training step (E+F+V loss, backward)

This machine's time varies by ±20 % between processes, more than the kernels' gain, so the two
arms alternate inside one process (on, off, off, on, ...) on the same frame, model and graph, and
the medians are compared. "off" is the torch path (C++ kernels reported unavailable), which is
what ``DPA3_AL_COMPILE=0`` gets. Prints one JSON line: wall and CPU medians per arm
and their ratio. Water frame 0 of tests/data/water/data_3 (192 atoms), float32, 2 threads,
dpa3-al's glibc mallopt settings.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODELS, command_line, emit, water_atoms  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dpa31-3m-shape", choices=sorted(MODELS))
    ap.add_argument("--memory", default="default", choices=["default", "low"])
    ap.add_argument("--train", action="store_true", help="time a training step instead of an E+F+V call")
    ap.add_argument("--calls", type=int, default=8, help="calls per arm (default 8)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from dpa3_al.model import build_model

    from dpa3_al.model.kernels import cpp as ckernels
    from dpa3_al.model.calculator import atoms_to_batch
    from dpa3_al.model.kernels.runtime import tune_malloc

    malloc = tune_malloc()
    torch.set_num_threads(args.threads)
    model = build_model(MODELS[args.model], seed=0)
    model.set_memory(args.memory)
    if not args.train:
        for p in model.parameters():
            p.requires_grad_(False)          # as the calculators do
    batch = atoms_to_batch(water_atoms(), model.type_map)
    graph = model.build_graph(batch)

    def call() -> None:
        if args.train:
            model.zero_grad(set_to_none=True)
            out = model(batch, graph, create_graph=True)
            (out.energy.sum() ** 2 + out.forces.pow(2).sum() + out.virial.pow(2).sum()).backward()
        else:
            model(batch, graph)

    available = ckernels.available

    def set_arm(arm: str) -> None:         # the C++ kernels (model/kernels/cpp.py) on or off
        ckernels.available = available if arm == "on" else (lambda *a: False)

    arms: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    for arm in ("on", "off"):                 # warm-up (and compilation) outside the timing
        set_arm(arm)
        call()
    for i in range(args.calls):
        for arm in (("on", "off") if i % 2 == 0 else ("off", "on")):
            set_arm(arm)
            w, c = time.perf_counter(), time.process_time()
            call()
            arms[arm].append((time.perf_counter() - w, time.process_time() - c))
    med = {arm: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for arm, v in arms.items()}
    print(f"# command: {command_line()}\n# {malloc}; threads {args.threads}", flush=True)
    emit({"model": args.model, "what": "training step" if args.train else "E+F+V", "kernels": "cpp", "memory": args.memory,
          "atoms": graph.n_atoms, "kernels_on_wall_s": round(med["on"][0], 3), "kernels_off_wall_s": round(med["off"][0], 3),
          "kernels_on_cpu_s": round(med["on"][1], 3), "kernels_off_cpu_s": round(med["off"][1], 3),
          "speedup": round(med["off"][0] / med["on"][0], 3), "calls_per_arm": args.calls,
          "kernels_ran": any(ckernels._STATE["ready"].values())})


if __name__ == "__main__":
    main()
