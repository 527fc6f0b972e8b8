"""What keeping each training frame's neighbour graph saves per training step (FrameGraphs).

    python bench/bench_graph_cache.py [--steps 150] [--repeat 3] [--out bench/results/graph-cache.txt]

Two cases, one thread, batch 1, AdamW, energy + force + virial loss (``optimizer_step``, the
trainer's step):
  al     the AL benchmark's small model on its 31-atom Cu-Au frames (docs/al-benchmark.md);
  water  the same model shape (type map O, H) on the 192-atom water frames of tests/data/water.
The steps cycle over the first ``--frames`` frames (8: each is drawn many times, as in a small AL
dataset). Each repeat trains the same model from the same start with graphs built every step (as before)
and with kept graphs (the trainer now), alternating, so a load change hits both. The kept graphs
are built in the first pass over the frames; that one-off cost is part of the timed steps.
The graph's share is timed on its own (built before the step in both variants, which is what the
step would do) because it is steadier than the difference of two whole-step times on a shared machine.
The parameters of the two must be identical (same graph, same arithmetic): checked, printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_al  # noqa: E402
from al import system  # noqa: E402

from dpa3_al.common.typed_config import from_dict  # noqa: E402
from dpa3_al.model import ModelConfig, build_model  # noqa: E402
from dpa3_al.model.train.batching import FrameGraphs, TrainingData  # noqa: E402
from dpa3_al.model.train.data import load_systems  # noqa: E402
from dpa3_al.model.train.loop import MAX_CACHED_TRIPLES, make_optimizer, optimizer_step  # noqa: E402
from dpa3_al.model.train.config import OptimizerSection  # noqa: E402
from dpa3_al.model.train.loss import EnergyLoss, Prefactors  # noqa: E402

WATER = Path(__file__).resolve().parents[1] / "tests" / "data" / "water"


def case(name: str, tmp: Path) -> tuple[dict, TrainingData]:
    if name == "al":
        system.write_npy(system.perturbed(system.start_cells(), 4, seed=11), tmp / "al")
        model = bench_al.small_model()
        return model, TrainingData(load_systems([tmp / "al"]), model["type_map"], batch_size=1)
    model = {**bench_al.small_model(), "type_map": ["O", "H"]}
    return model, TrainingData(load_systems(sorted(WATER.glob("data_*"))), model["type_map"], batch_size=1)


def train(model_cfg: dict, data: TrainingData, steps: int, kept: bool, frames: int
          ) -> tuple[float, float, list[torch.Tensor]]:
    """ms per step (batch, graph, forward, double backward, optimiser), ms of it for the graph, final parameters."""
    model = build_model(from_dict(ModelConfig, model_cfg), seed=1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, OptimizerSection(), 1e-3)
    loss = EnergyLoss(Prefactors(), 1e-3)
    graphs = FrameGraphs(data, model.build_graph, MAX_CACHED_TRIPLES) if kept else None
    picks = [[(s, f)] for s, sys_ in enumerate(data.systems) for f in range(sys_.n_frames)][:frames]
    t_graph = 0.0
    t0 = time.perf_counter()
    for i in range(steps):
        p = picks[i % len(picks)]
        batch, labels = data.batch(p)
        t1 = time.perf_counter()
        graph = graphs.graph(p) if kept else model.build_graph(batch)     # (optimizer_step builds it when None)
        t_graph += time.perf_counter() - t1
        optimizer_step(model, opt, params, loss, batch, labels, 1e-3, 5.0, True, graph)
    wall = time.perf_counter() - t0
    return 1e3 * wall / steps, 1e3 * t_graph / steps, [q.detach().clone() for q in params]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cases", default="al,water")
    p.add_argument("--frames", type=int, default=8, help="the steps cycle over this many frames (as a small AL "
                   "dataset: each frame is drawn many times)")
    p.add_argument("--out", type=Path, default=None, help="also write the lines to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lines = [f"command: python bench/bench_graph_cache.py --steps {args.steps} --repeat {args.repeat} "
             f"--cases {args.cases} --frames {args.frames}",
             f"torch {torch.__version__}, 1 thread, load average at start {os.getloadavg()}"]
    print(*lines, sep="\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            model_cfg, data = case(name, Path(tmp))
            rows, params = {False: [], True: []}, {}
            for r in range(args.repeat):
                for kept in (False, True):
                    ms, graph_ms, params[kept] = train(model_cfg, data, args.steps, kept, args.frames)
                    rows[kept].append((ms, graph_ms))
                    lines.append(f"{name} repeat {r} kept graphs={kept!s:5}: {ms:8.1f} ms/step, "
                                 f"graph {graph_ms:6.2f} ms/step")
                    print(lines[-1], flush=True)
            same = all(torch.equal(a, b) for a, b in zip(params[False], params[True]))
            step0, step1 = min(r[0] for r in rows[False]), min(r[0] for r in rows[True])
            graph0, graph1 = min(g for _, g in rows[False]), min(g for _, g in rows[True])
            lines += [f"{name}: {min(args.frames, data.n_frames)} frames of {data.systems[0].n_atoms} atoms; best of "
                      f"{args.repeat}: step {step0:.1f} -> {step1:.1f} ms ({100 * (1 - step1 / step0):.1f} % saved); "
                      f"graph {graph0:.2f} -> {graph1:.2f} ms per step, {100 * (graph0 - graph1) / step0:.1f} % of the "
                      f"uncached step; parameters identical after {args.steps} steps: {same}"]
            print(lines[-1], flush=True)
    lines.append(f"load average at end {os.getloadavg()}")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
