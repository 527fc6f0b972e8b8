"""Runs inside a separate environment with deepmd-kit 3.2 installed (never imported by dpa3-al).

    DP_PY=/path/to/dp-venv/bin/python
    $DP_PY bench/deepmd_side.py make-ckpt --out bench/out/water-example-deepmd.pt [--model dpa31-3m-shape]
    $DP_PY bench/deepmd_side.py time --ckpt bench/out/water-example-deepmd.pt --replicate 2,2,2
    $DP_PY bench/deepmd_side.py serve --ckpt ...   # one timed call per "call" line on stdin (interleaving)

``make-ckpt`` builds deepmd-kit's own DPA3 model from the water-example (or DPA-3.1-3M-shaped)
hyper-parameters with its own random initialisation and writes a training-style checkpoint
({"model": state_dict}); ``time`` evaluates E+F+V with deepmd-kit's DeepPot (eager PyTorch)
and prints one JSON line; ``serve`` loads the model, answers each ``call`` line on stdin with one
timed E+F+V call (a JSON line) and ends with a summary on EOF, so that bench/bench_model.py can
alternate its calls with deepmd-kit's in the same minutes. This file only calls deepmd-kit's
public API.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODELS, water_atoms  # noqa: E402


def deepmd_params(name: str) -> dict:
    ours = MODELS[name]
    rep = dict(ours["descriptor"])
    act = rep.pop("activation_function")
    return {"type_map": ours["type_map"],
            "descriptor": {"type": "dpa3", "repflow": rep, "activation_function": act,
                           "precision": ours["precision"], "use_tebd_bias": False, "seed": 1},
            "fitting_net": {**ours["fitting"], "precision": ours["precision"], "seed": 2}}


def make_ckpt(out: Path, name: str) -> None:
    import torch
    from deepmd.pt.model.model import get_model
    from deepmd.pt.train.wrapper import ModelWrapper

    model = get_model(deepmd_params(name))
    wrapper = ModelWrapper(model, model_params=deepmd_params(name))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": wrapper.state_dict()}, out)
    print(f"wrote {out}")


def _load(ckpt: Path, replicate: tuple[int, int, int]):
    """(deepmd-kit's DeepPot, evaluation of one E+F+V call -> energy) on the water frame."""
    import torch
    from deepmd.infer import DeepPot

    torch.set_num_threads(2)
    dp = DeepPot(str(ckpt), no_jit=True)   # eager: faster than TorchScript on CPU (performance.md)
    atoms = water_atoms(replicate)
    tmap = dp.get_type_map()
    coord = atoms.positions.reshape(1, -1)
    cell = atoms.cell.array.reshape(1, -1)
    atype = np.array([tmap.index(s) for s in atoms.get_chemical_symbols()])
    return len(atoms), lambda: float(dp.eval(coord, cell, atype)[0].reshape(-1)[0])


def _peak_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)


def time_eval(ckpt: Path, repeat: int, replicate: tuple[int, int, int]) -> None:
    n_atoms, call = _load(ckpt, replicate)
    energy = call()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        energy = call()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"atoms": n_atoms, "median_s": round(statistics.median(times), 4),
                      "times": [round(t, 3) for t in times], "energy": energy, "peak_rss_gb": _peak_gb()}))


def serve(ckpt: Path, replicate: tuple[int, int, int]) -> None:
    n_atoms, call = _load(ckpt, replicate)
    energy = call()                                   # warm-up
    print(json.dumps({"ready": True, "atoms": n_atoms}), flush=True)
    for line in sys.stdin:
        if line.strip() != "call":
            break
        t0 = time.perf_counter()
        energy = call()
        print(json.dumps({"s": time.perf_counter() - t0}), flush=True)
    print(json.dumps({"energy": energy, "peak_rss_gb": _peak_gb()}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-ckpt")
    mk.add_argument("--out", type=Path, required=True)
    mk.add_argument("--model", choices=list(MODELS), default="water-example")
    tm = sub.add_parser("time")
    tm.add_argument("--ckpt", type=Path, required=True)
    tm.add_argument("--repeat", type=int, default=5)
    tm.add_argument("--replicate", default="1,1,1")
    sv = sub.add_parser("serve")
    sv.add_argument("--ckpt", type=Path, required=True)
    sv.add_argument("--replicate", default="1,1,1")
    args = ap.parse_args()
    if args.cmd == "make-ckpt":
        make_ckpt(args.out, args.model)
    elif args.cmd == "serve":
        serve(args.ckpt, tuple(int(x) for x in args.replicate.split(",")))
    else:
        time_eval(args.ckpt, args.repeat, tuple(int(x) for x in args.replicate.split(",")))


if __name__ == "__main__":
    main()
