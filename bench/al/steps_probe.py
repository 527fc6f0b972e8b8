"""How far from converged is one AL iteration's training? Train members from scratch (or, with
``continue``, from the previous iteration's member, as the loop does) on the data of a finished
benchmark loop run at one iteration, for a given number of steps and start rate, and test each on
the benchmark's test set (bench/bench_al.py must have run: it made the data).

    python bench/al/steps_probe.py RUN_DIR ITERATION START_LR STEPS MEMBERS [continue]
    python bench/al/steps_probe.py bench/out/al/runs/p1-valfix/a-s1 3 0.01 800 0,1
    python bench/al/steps_probe.py bench/out/al/runs/steps6400-i4/a-s1 2 0.003 6400 0,1 continue

RUN_DIR: a loop run of the benchmark (its ``../NAME.yaml`` holds the train section); the data are
init_data plus the dataset the ITERATION's committee trained on (iter-(ITERATION-1)/dataset).
Prints, per member: the test errors (bench/al/evaluate.py metrics) and the final training force
RMSE; with several members, the committee mean's test errors too. Members already trained (by
another invocation, e.g. one per core) are only evaluated. Units: eV/atom, eV/Å.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from al import system  # noqa: E402
from al.evaluate import metrics, predict  # noqa: E402


def main(argv: list[str]) -> int:
    from dpa3_al.model.train.config import TrainConfig
    from dpa3_al.model.train.trainer import train

    run, iteration, lr, steps = Path(argv[0]), int(argv[1]), float(argv[2]), int(argv[3])
    members = [int(m) for m in argv[4].split(",")]
    resume = len(argv) > 5 and argv[5] == "continue"
    how = "continued" if resume else "scratch"
    run_cfg = yaml.safe_load((run.parent / f"{run.name}.yaml").read_text())
    data_root = Path(run_cfg["init_data"][0]).parent
    data = [str(p) for p in run_cfg["init_data"]] + [str(run / f"iter-{iteration - 1:06d}" / "dataset" / "systems")]
    test = system.read_npy(data_root / "test")
    preds = []
    for m in members:
        cfg = json.loads(json.dumps(run_cfg["train"]))
        cfg.pop("init_model", None)
        if resume:      # the loop's continuation: the previous iteration's member, this start rate
            prev = run / f"iter-{iteration - 1:06d}" / "train" / f"member-{m:03d}" / "model.pt"
            cfg["init_model"] = {"model": str(prev), "steps_factor": 1.0, "lr_factor": 1.0}
        cfg["learning_rate"]["start_lr"] = lr
        cfg["training"].update({"numb_steps": steps, "numb_models": 1, "seed": cfg["training"]["seed"] + m})
        cfg["data"]["systems"] = data
        name = f"{run.name}-it{iteration}-lr{lr:g}-steps{steps}-m{m}" + ("-cont" if resume else "")
        work = Path("bench/out/steps-probe") / name
        result = train(TrainConfig.from_dict(cfg), work)
        e, f = predict(work / "model.pt", test)
        preds.append((e, f))
        errs = {k: round(v, 4) for k, v in metrics(e, f, test).items()}
        print(f"{how} start_lr {lr:g} steps {steps} member {m}: test {errs}, training F RMSE "
              f"{result.summary['errors']['train']['f']:.3f}", flush=True)
    if len(preds) > 1:
        e = np.mean([p[0] for p in preds], axis=0)
        f = [np.mean(fs, axis=0) for fs in zip(*(p[1] for p in preds))]
        errs = {k: round(v, 4) for k, v in metrics(e, f, test).items()}
        print(f"{how} start_lr {lr:g} steps {steps} committee mean of {len(preds)}: test {errs}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
