"""Model core on a CUDA GPU: reference reproduction, and time/memory versus size.

    python bench/gpu_check.py [--out DIR]

1. Every deepmd-kit reference checkpoint of tests/data/dpa3-reference is evaluated on the GPU
   (float64) and compared with deepmd-kit's stored predictions (max |error|).
2. Water supercells, E+F+V, float32, water-example and DPA-3.1-3M-shaped models (random weights):
   median time per call (CUDA-synchronised) and peak GPU memory (torch.cuda.max_memory_allocated).
3. A 4-model committee against one model (192 atoms).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODELS, ROOT, water_atoms  # noqa: E402

REF = ROOT / "tests" / "data" / "dpa3-reference"
CASES = [("small", None), ("dynamic", None), ("multitask", "water"), ("multitask", "hco"),
         ("multitask/sharefit", "water"), ("multitask/finetune_water", None)]


def reference_errors(device: str) -> list[dict]:
    from dpa3_al.model import load_model
    from dpa3_al.model.graph import Batch

    rows = []
    for folder, head in CASES:
        model = load_model(REF / folder / "model.ckpt.pt", head=head, device=device)
        ref = np.load(REF / folder / "reference.npz")
        pre = f"{head}__" if head else ""
        sets = sorted({k.split("__")[-2] for k in ref.files if k.startswith(pre) and k.endswith("__energy")})
        for s in sets:
            k = f"{pre}{s}__"
            periodic = (k + "cell") in ref.files
            frames = [(ref[k + "coord"][f], ref[k + "atype"], ref[k + "cell"][f] if periodic else None,
                       np.array([periodic] * 3)) for f in range(len(ref[k + "coord"]))]
            batch = Batch.from_arrays(frames)
            out = model(batch.to(device, torch.float64), model.build_graph(batch).to(device))
            rows.append({"case": f"{folder}:{head}:{s}",
                         "max_err_energy": float(np.abs(out.energy.cpu().numpy() - ref[k + "energy"]).max()),
                         "max_err_force": float(np.abs(out.forces.cpu().numpy() - ref[k + "force"].reshape(-1, 3)).max()),
                         "max_err_virial": float(np.abs(out.virial.cpu().numpy() - ref[k + "virial"]).max())})
    return rows


def timing(model_name: str, replicate, mode: str, device: str, repeat: int = 5) -> dict:
    from dpa3_al.model import build_model
    from dpa3_al.model.calculator import atoms_to_batch

    model = build_model(MODELS[model_name], seed=0).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    model.set_memory(mode)
    atoms = water_atoms(replicate)
    t0 = time.perf_counter()
    batch = atoms_to_batch(atoms, model.type_map)
    graph = model.build_graph(batch).to(device)
    batch = batch.to(device, torch.float64)
    t_graph = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(repeat + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(batch, graph)
        torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return {"model": model_name, "atoms": len(atoms), "mode": mode, "median_s": round(float(np.median(times)), 4),
            "graph_s": round(t_graph, 3), "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
            "triples": graph.n_triples}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args()
    device = "cuda"
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    report["reference"] = reference_errors(device)
    print(json.dumps(report["reference"], indent=0), flush=True)
    runs = [("water-example", (1, 1, 1), "default"), ("water-example", (2, 2, 2), "default"),
            ("water-example", (4, 4, 2), "default"), ("water-example", (4, 4, 8), "default"),
            ("water-example", (4, 4, 8), "low"), ("dpa31-3m-shape", (1, 1, 1), "default"),
            ("dpa31-3m-shape", (2, 2, 2), "default"), ("dpa31-3m-shape", (4, 4, 2), "low")]
    report["timing"] = []
    for name, rep, mode in runs:
        try:
            row = timing(name, rep, mode, device)
        except Exception as err:  # noqa: BLE001 - record and go on
            row = {"model": name, "replicate": rep, "mode": mode, "failed": repr(err)[:300]}
        report["timing"].append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
