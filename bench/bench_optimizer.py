"""The optimiser's share of a training step: torch's fused Adam kernel against its per-parameter loop.

    python bench/bench_optimizer.py [--steps 150] [--repeat 3] [--out bench/results/adam-fused.txt]

The model and frames of the AL benchmark (docs/al-benchmark.md: the small DPA3 model, 32-atom
Cu-Au frames labeled by EMT, batch 1, energy + force + virial loss, one thread). Each repeat
trains the same model from the same start for ``--steps`` steps with AdamW per-parameter
(``fused=False``, torch's CPU default before) and fused (``make_optimizer`` now), alternating,
so a load change on the machine hits both; it prints ms per step and ms per optimiser step
(the optimiser alone, on the same gradients), and the largest parameter difference between
the two after the run (same update rule: rounding only).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_al  # noqa: E402
from al import system  # noqa: E402

from dpa3_al.common.typed_config import from_dict  # noqa: E402
from dpa3_al.model import ModelConfig, build_model  # noqa: E402
from dpa3_al.model.train.batching import TrainingData  # noqa: E402
from dpa3_al.model.train.data import load_systems  # noqa: E402


def frames(tmp: Path) -> list:
    system.write_npy(system.perturbed(system.start_cells(), 4, seed=11), tmp)
    cfg = from_dict(ModelConfig, bench_al.small_model())
    data = TrainingData(load_systems([tmp]), cfg.type_map, batch_size=1)
    return [data.batch([(s, f)]) for s, sys_ in enumerate(data.systems) for f in range(sys_.n_frames)]


def train(batches: list, steps: int, fused: bool) -> tuple[float, float, list[torch.Tensor]]:
    """ms per training step, ms per optimiser step, final parameters."""
    model = build_model(from_dict(ModelConfig, bench_al.small_model()), seed=1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-3, fused=fused)
    t_opt = 0.0
    t0 = time.perf_counter()
    for i in range(steps):
        batch, labels = batches[i % len(batches)]
        out = model(batch, create_graph=True, forces=True, virial=True)
        loss = ((out.energy - labels.energy) ** 2).sum() + ((out.forces - labels.forces) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        t1 = time.perf_counter()
        opt.step()
        t_opt += time.perf_counter() - t1
    wall = time.perf_counter() - t0
    return 1e3 * wall / steps, 1e3 * t_opt / steps, [p.detach().clone() for p in params]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="also write the lines to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        batches = frames(Path(tmp) / "frames")
    lines = [f"command: python bench/bench_optimizer.py --steps {args.steps} --repeat {args.repeat}",
             f"torch {torch.__version__}, 1 thread, load average at start {os.getloadavg()}"]
    print(*lines, sep="\n", flush=True)
    rows = {False: [], True: []}
    params = {}
    for r in range(args.repeat):
        for fused in (False, True):
            step_ms, opt_ms, params[fused] = train(batches, args.steps, fused)
            rows[fused].append((step_ms, opt_ms))
            line = f"repeat {r} fused={fused!s:5}: {step_ms:7.1f} ms/step, optimiser {opt_ms:6.2f} ms/step"
            lines.append(line)
            print(line, flush=True)
    diff = max(float((a - b).abs().max()) for a, b in zip(params[False], params[True]))
    for fused in (False, True):
        best = min(rows[fused])
        lines.append(f"best of {args.repeat}, fused={fused}: {best[0]:.1f} ms/step, optimiser {best[1]:.2f} ms/step")
    gain = 1 - min(rows[True])[0] / min(rows[False])[0]
    lines += [f"fused saves {100 * gain:.0f} % of a training step (best against best)",
              f"largest parameter difference after {args.steps} steps: {diff:.2e}",
              f"load average at end {os.getloadavg()}"]
    print(*lines[-5:], sep="\n")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
