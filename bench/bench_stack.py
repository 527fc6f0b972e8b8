"""Committee training speed: M members trained separately vs as one stack (model/stack.py).

    python bench/bench_stack.py [--members 4] [--steps 30] [--rounds 3] [--threads 1]

Times force-training steps (energy + force + virial loss, Adam, batch of one frame) of the AL
benchmark's model (bench/bench_al.py's ``small_model``) on its 31-atom Cu-Au cell with a vacancy:
(a) each member's own step, one after another (what separate processes do, per core), and
(b) one stacked step of all members. The two alternate in rounds in one process, so a loaded
machine slows both alike; the load is printed. One JSON line per round and a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per round and arm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--atoms", default="vacancy", choices=["vacancy", "full"], help="which start cell")
    args = ap.parse_args(argv)
    import torch

    from al import system
    from bench_al import small_model
    from dpa3_al.model import ModelConfig, build_model
    from dpa3_al.model.calculator import atoms_to_batch
    from dpa3_al.model.kernels.runtime import tune_malloc
    from dpa3_al.model.stack import StackedCommittee
    from dpa3_al.model.train.loss import EnergyLoss, Prefactors
    from dpa3_al.model.train.loop import optimizer_step
    from dpa3_al.model.train.batching import Labels

    tune_malloc()
    torch.set_num_threads(args.threads)
    cells = system.start_cells()
    atoms = cells[1] if args.atoms == "vacancy" else cells[0]
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(8):
        a = atoms.copy()
        a.positions += rng.normal(scale=0.1, size=a.positions.shape)
        frames.append((a, system.label(a)))
    cfg = ModelConfig.from_dict(small_model())
    models = [build_model(cfg, seed=s) for s in range(args.members)]
    stack = StackedCommittee([build_model(cfg, seed=s) for s in range(args.members)])
    pref = Prefactors(0.02, 1.0, 1000.0, 1.0, 0.02, 1.0)
    loss = EnergyLoss(pref, 0.01)

    def batch_of(k):
        a, f = frames[k % len(frames)]
        b = atoms_to_batch(a, list(system.TYPE_MAP))
        lab = Labels(energy=torch.tensor([f.energy]), forces=torch.from_numpy(f.forces),
                     virial=torch.from_numpy(f.virial.reshape(1, 3, 3)), has_virial=torch.tensor([True]),
                     natoms=b.natoms.to(torch.float64))
        return b, lab

    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    sopt = torch.optim.Adam([p for p in stack.parameters() if p.requires_grad], lr=1e-3)

    def separate(k):
        b, lab = batch_of(k)
        for m, o in zip(models, opts):
            optimizer_step(m, o, list(m.parameters()), loss, b, lab, 1e-3, 0.0, True)

    def stacked(k):
        b, lab = batch_of(k)
        for g in sopt.param_groups:
            g["lr"] = 1e-3
        outs = stack(b, create_graph=True, forces=True, virial=True)
        total = sum(loss(o, lab, 1e-3) for o in outs)
        sopt.zero_grad(set_to_none=True)
        total.backward()
        sopt.step()

    for fn in (separate, stacked):       # warm-up (kernel build, allocator)
        for k in range(3):
            fn(k)
    res = {"separate": [], "stacked": []}
    for r in range(args.rounds):
        for name, fn in (("separate", separate), ("stacked", stacked)):
            t0 = time.perf_counter()
            for k in range(args.steps):
                fn(k)
            dt = (time.perf_counter() - t0) / args.steps
            res[name].append(dt)
            print(json.dumps({"round": r, "arm": name, "members": args.members, "threads": args.threads,
                              "s_per_committee_step": round(dt, 5), "load1": os.getloadavg()[0]}), flush=True)
    sep, stk = np.median(res["separate"]), np.median(res["stacked"])
    print(json.dumps({"summary": True, "members": args.members, "threads": args.threads, "atoms": len(atoms),
                      "separate_s_per_step": round(float(sep), 5), "stacked_s_per_step": round(float(stk), 5),
                      "speedup": round(float(sep / stk), 2), "load1": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
