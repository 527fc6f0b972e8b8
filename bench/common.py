"""Shared helpers of the benchmarks: water structures, the reference model shapes, timing."""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WATER = ROOT / "tests" / "data" / "water"

# deepmd-kit's examples/water/dpa3/input_torch.json descriptor and fitting (the "water example")
WATER_EXAMPLE = {
    "type_map": ["O", "H"],
    "descriptor": dict(n_dim=128, e_dim=64, a_dim=32, nlayers=6, e_rcut=6.0, e_rcut_smth=5.3, e_sel=120,
                       a_rcut=4.0, a_rcut_smth=3.5, a_sel=30, axis_neuron=4, a_compress_rate=1, a_compress_e_rate=2,
                       a_compress_use_split=True, update_angle=True, update_style="res_residual",
                       update_residual=0.1, update_residual_init="const", smooth_edge_update=True,
                       edge_init_use_dist=True, use_exp_switch=True, use_dynamic_sel=False,
                       activation_function="silut:10.0"),
    "fitting": dict(neuron=[240, 240, 240], resnet_dt=True, activation_function="silut:10.0"),
    "precision": "float32",
}
# DPA-3.1-3M's shape (16 layers, dynamic sel 1200/300, factor 10) with random weights
DPA31_3M = {
    **WATER_EXAMPLE,
    "descriptor": {**WATER_EXAMPLE["descriptor"], "nlayers": 16, "e_sel": 1200, "a_sel": 300,
                   "use_dynamic_sel": True, "sel_reduce_factor": 10.0, "edge_init_use_dist": False,
                   "activation_function": "silut:3.0"},
    "fitting": dict(neuron=[240, 240, 240], resnet_dt=True, activation_function="silut:3.0"),
}
MODELS = {"water-example": WATER_EXAMPLE, "dpa31-3m-shape": DPA31_3M}


def water_atoms(replicate=(1, 1, 1), system="data_3", frame=0):
    """Frame ``frame`` of the shipped DFT water data (192 atoms), replicated."""
    from ase import Atoms

    d = WATER / system
    coord = np.load(d / "set.000" / "coord.npy")[frame].reshape(-1, 3)
    box = np.load(d / "set.000" / "box.npy")[frame].reshape(3, 3)
    types = np.loadtxt(d / "type.raw", dtype=int)
    atoms = Atoms(symbols=["O" if t == 0 else "H" for t in types], positions=coord, cell=box, pbc=True)
    return atoms * tuple(replicate)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def median_time(fn, repeat: int, warmup: int = 1) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def command_line() -> str:
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "GLIBC_TUNABLES", "DPA3_AL_MALLOC")
                   if k in os.environ)
    return (env + " " if env else "") + "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def emit(record: dict) -> None:
    """Print one JSON line (machine-readable) per measurement."""
    print(json.dumps(record), flush=True)
