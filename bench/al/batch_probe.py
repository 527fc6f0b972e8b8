"""Does a larger batch buy accuracy per second? Train one member from scratch on a finished
benchmark loop's data at iteration 3 (init data + 30 labels) with BATCH frames per step for
STEPS steps, single thread, and test it on the benchmark's test set (bench/bench_al.py must have
run). Prints batch, steps, wall time and the test errors (eV/atom, eV/Å).

    python bench/al/batch_probe.py RUN_DIR BATCH:STEPS [BATCH:STEPS ...]
    OMP_NUM_THREADS=1 python bench/al/batch_probe.py bench/out/al/runs/lever-steps1600/a-s1 1:1600 4:1067
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from al import system  # noqa: E402
from al.evaluate import metrics, predict  # noqa: E402


def main(argv: list[str]) -> int:
    from dpa3_al.model.train.config import TrainConfig
    from dpa3_al.model.train.trainer import train

    run, iteration = Path(argv[0]), 3
    run_cfg = yaml.safe_load((run.parent / f"{run.name}.yaml").read_text())
    data_root = Path(run_cfg["init_data"][0]).parent
    data = [str(p) for p in run_cfg["init_data"]] + [str(run / f"iter-{iteration - 1:06d}" / "dataset" / "systems")]
    test = system.read_npy(data_root / "test")
    for spec in argv[1:]:
        batch, steps = (int(x) for x in spec.split(":"))
        cfg = json.loads(json.dumps(run_cfg["train"]))
        cfg.pop("init_model", None)
        cfg["training"].update({"numb_steps": steps, "numb_models": 1})
        cfg["data"].update({"systems": data, "batch_size": batch})
        work = Path("bench/out/batch-probe") / f"{run.name}-bs{batch}-steps{steps}"
        t0 = time.time()
        train(TrainConfig.from_dict(cfg), work)
        wall = time.time() - t0
        e, f = predict(work / "model.pt", test)
        errs = {k: round(v, 4) for k, v in metrics(e, f, test).items()}
        print(f"batch {batch} steps {steps}: {wall:.1f} s, test {errs}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
