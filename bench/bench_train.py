"""Training benchmarks on the DFT water data (train data_0..2, validate data_3). Three parts:

    python bench/bench_train.py budget --minutes 10            # small model, fixed time budget: errors, time/step
    python bench/bench_train.py step --deepmd /work/dp-venv/bin/dp [--model dpa31-3m-shape] [--repeat 3] [--memory low]
                                                               # time (wall, CPU) and peak RSS of one training step,
                                                               # batch 1, E+F+V loss, dpa3-al vs deepmd-kit 3.2
    python bench/bench_train.py compare --steps 1000 --deepmd /work/dp-venv/bin/dp
                                                               # equal steps, same model/schedule: validation errors

Both programs run as child processes with 2 OpenMP threads and the same glibc malloc
settings (dpa3-al applies them with mallopt; deepmd-kit gets GLIBC_TUNABLES); CPU time and
peak RSS come from the child's rusage. The water data have no virial labels: ``step`` adds
zero virials to a copy of data_0 so that the virial term is part of the loss on both sides.
Every run prints one JSON line; the machine load (1-min average) is printed with each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODELS, ROOT, WATER, command_line, emit  # noqa: E402

OUT = ROOT / "bench" / "out" / "train"
TUNABLES = ("glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184:"
            "glibc.malloc.top_pad=1073741824")
SMALL = {**MODELS["water-example"],
         "descriptor": {**MODELS["water-example"]["descriptor"], "n_dim": 32, "e_dim": 16, "a_dim": 8, "nlayers": 3},
         "fitting": {**MODELS["water-example"]["fitting"], "neuron": [64, 64]}}
ALL_MODELS = {"small": SMALL, **MODELS}
TRAIN = [WATER / f"data_{k}" for k in range(3)]
VALID = [WATER / "data_3"]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def run_child(cmd: list[str], cwd: Path, env: dict, log: Path) -> dict:
    """Run ``cmd``; wall time, CPU time (user+sys) and peak RSS of that child from its rusage."""
    cwd.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_gb": round(usage.ru_maxrss / 1e6, 2)}


THREADS = {"n": 2}


def child_env(tunables: bool) -> dict:
    n = str(THREADS["n"])
    env = {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
    env.pop("GLIBC_TUNABLES", None)
    if tunables:
        env["GLIBC_TUNABLES"] = TUNABLES
    return env


# ---------------------------------------------------------------------------- configs


def ours_config(model: dict, train: list[Path], valid: list[Path], steps: int, lr=(None, 1e-4), decay_steps=0,
                seed=1, max_time=0.0, disp_freq=0, memory="default") -> dict:
    rep = dict(model["descriptor"])
    return {"model": {"type_map": model["type_map"], "descriptor": rep, "fitting": model["fitting"],
                      "precision": model["precision"], "memory": memory},
            "data": {"systems": [str(p) for p in train], "validation": [str(p) for p in valid], "batch_size": 1,
                     "validation_fraction": 0.0, "max_validation_frames": 80},
            "learning_rate": {"start_lr": lr[0], "stop_lr": lr[1], "decay_steps": decay_steps},
            "training": {"numb_steps": steps, "seed": seed, "threads": THREADS["n"], "progress": False,
                         "max_time": max_time,
                         "save_freq": max(steps, 1), "disp_freq": disp_freq},
            "stopping": {"patience": 0}}


def deepmd_input(model: dict, train: list[Path], valid: list[Path], steps: int, lr=(1e-2, 1e-4), decay_steps=5000,
                 seed=1, disp_freq=1) -> dict:
    rep = dict(model["descriptor"])
    act = rep.pop("activation_function")
    training = {"training_data": {"systems": [str(p) for p in train], "batch_size": 1},
                "numb_steps": steps, "seed": seed, "disp_file": "lcurve.out", "disp_freq": disp_freq,
                "save_freq": steps, "gradient_max_norm": 5.0}
    if valid:
        training["validation_data"] = {"systems": [str(p) for p in valid], "batch_size": 1}
    return {"model": {"type_map": model["type_map"],
                      "descriptor": {"type": "dpa3", "repflow": rep, "activation_function": act,
                                     "precision": model["precision"], "use_tebd_bias": False, "seed": seed},
                      "fitting_net": {**model["fitting"], "precision": model["precision"], "seed": seed + 1}},
            "learning_rate": {"type": "exp", "decay_steps": decay_steps, "start_lr": lr[0], "stop_lr": lr[1]},
            "loss": {"type": "ener", "start_pref_e": 0.2, "limit_pref_e": 20, "start_pref_f": 100, "limit_pref_f": 60,
                     "start_pref_v": 0.02, "limit_pref_v": 1},
            "optimizer": {"type": "AdamW", "adam_beta1": 0.9, "adam_beta2": 0.999, "weight_decay": 0.001},
            "training": training}


def virial_copy(src: Path, dst: Path) -> Path:
    """``src`` with zero virial labels (timing only: makes the virial term part of the loss)."""
    if not dst.exists():
        shutil.copytree(src, dst)
        for s in dst.glob("set.*"):
            n = np.load(s / "energy.npy").shape[0]
            np.save(s / "virial.npy", np.zeros((n, 9), dtype=np.float32))
    return dst


def run_ours(cfg: dict, workdir: Path) -> tuple[dict, dict]:
    import yaml

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / "input.yaml").write_text(yaml.safe_dump(cfg))
    usage = run_child([sys.executable, "-m", "dpa3_al.cli", "-q", "train", "input.yaml", "-o", "run"], workdir,
                      child_env(False), workdir / "stdout.log")
    return usage, json.loads((workdir / "run" / "train_summary.json").read_text())


def run_deepmd(dp: str, inp: dict, workdir: Path) -> tuple[dict, list[float], float | None]:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / "input.json").write_text(json.dumps(inp, indent=1))
    usage = run_child([dp, "--pt", "train", "input.json", "--skip-neighbor-stat"], workdir, child_env(True),
                      workdir / "train.log")
    text = (workdir / "train.log").read_text()
    per_batch = [float(x) for x in re.findall(r"Batch\s+\d+: total wall time = ([0-9.]+) s", text)]
    avg = re.search(r"average training time: ([0-9.]+) s/batch", text)
    return usage, per_batch, float(avg.group(1)) if avg else None


# ---------------------------------------------------------------------------- parts


def part_budget(args) -> None:
    cfg = ours_config(ALL_MODELS[args.model], TRAIN, VALID, steps=args.steps, lr=(args.start_lr, args.stop_lr),
                      max_time=args.minutes * 60)
    usage, s = run_ours(cfg, OUT / f"budget-{args.model}")
    val = _evaluate(OUT / f"budget-{args.model}" / "run" / "model.pt")
    emit({"what": f"dpa3-al, {args.model} model, budget {args.minutes} min / {args.steps} steps", "load": load(),
          "steps": s["steps"], "converged": s["converged"], "reason": s["reason"],
          "median_step_s": s["median_step_s"], "median_step_cpu_s": s["median_step_cpu_s"],
          "train_time_s": s["time_s"], "validation_rmse_all_data_3": val, **usage})


def _evaluate(model_path: Path) -> dict:
    import torch

    from dpa3_al.model import load_model
    from dpa3_al.model.train.data import load_systems
    from dpa3_al.model.train.evaluate import evaluate_systems

    torch.set_num_threads(THREADS["n"])
    res = evaluate_systems(load_model(model_path), load_systems(VALID))[0]
    return {"e_meV_per_atom": round(1000 * res.rmse["e"], 3), "f_meV_per_A": round(1000 * res.rmse["f"], 2)}


def part_step(args) -> None:
    model = ALL_MODELS[args.model]
    data = [virial_copy(WATER / "data_0", OUT / "water-virial")]
    ours, theirs = [], []
    for r in range(args.repeat):
        usage, s = run_ours(ours_config(model, data, [], steps=args.steps, memory=args.memory),
                            OUT / f"step-{args.model}-ours")
        ours.append({**usage, "median_step_s": s["median_step_s"], "median_step_cpu_s": s["median_step_cpu_s"]})
        emit({"what": f"dpa3-al train step, {args.model}, memory {args.memory}, run {r}", "load": load(), **ours[-1]})
        if args.deepmd:
            usage, per_batch, avg = run_deepmd(args.deepmd, deepmd_input(model, data, [], args.steps),
                                               OUT / f"step-{args.model}-deepmd")
            steady = per_batch[2:] or per_batch
            theirs.append({**usage, "median_step_s": round(statistics.median(steady), 4) if steady else None,
                           "average_training_time_s": avg})
            emit({"what": f"deepmd-kit 3.2 train step, {args.model}, run {r}", "load": load(), **theirs[-1]})
    med = lambda rows, k: round(statistics.median([x[k] for x in rows if x[k] is not None]), 4)  # noqa: E731
    summary = {"what": f"training step, {args.model}, batch 1 (192 atoms), E+F+V loss, memory {args.memory}, "
                       f"medians of {args.repeat}",
               "dpa3_al_step_s": med(ours, "median_step_s"), "dpa3_al_step_cpu_s": med(ours, "median_step_cpu_s"),
               "dpa3_al_peak_rss_gb": med(ours, "peak_rss_gb")}
    if theirs:
        summary.update({"deepmd_step_s": med(theirs, "median_step_s"), "deepmd_peak_rss_gb": med(theirs, "peak_rss_gb"),
                        "speedup": round(med(theirs, "median_step_s") / summary["dpa3_al_step_s"], 2)})
    emit(summary)


def part_compare(args) -> None:
    model = ALL_MODELS[args.model]
    decay = max(1, args.steps // 200)
    lr = (args.start_lr or 1e-2, args.stop_lr)
    usage, s = run_ours(ours_config(model, TRAIN, VALID, args.steps, lr=lr, decay_steps=decay,
                                    disp_freq=max(1, args.steps // 20)),
                        OUT / f"compare-{args.model}-ours")
    emit({"what": f"dpa3-al, {args.model}, {args.steps} steps", "load": load(), **usage,
          "median_step_s": s["median_step_s"], "validation_rmse_all_data_3": _evaluate(
              OUT / f"compare-{args.model}-ours" / "run" / "model.pt"),
          "note": "best-on-validation model (keep_best)"})
    last = OUT / f"compare-{args.model}-ours" / "run" / "checkpoint.pt"
    emit({"what": "dpa3-al last step (same model as deepmd-kit's)", "validation_rmse_all_data_3": _evaluate(last)})
    if args.deepmd:
        work = OUT / f"compare-{args.model}-deepmd"
        usage, per_batch, avg = run_deepmd(args.deepmd, deepmd_input(model, TRAIN, VALID, args.steps, lr=lr,
                                                                     decay_steps=decay, disp_freq=max(1, args.steps // 20)),
                                           work)
        emit({"what": f"deepmd-kit 3.2, {args.model}, {args.steps} steps", "load": load(), **usage,
              "average_training_time_s": avg, "validation_rmse_all_data_3": _evaluate(work / "model.ckpt.pt")})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    for name in ("budget", "step", "compare"):
        p = sub.add_parser(name)
        p.add_argument("--model", choices=list(ALL_MODELS), default="water-example" if name == "step" else "small")
        p.add_argument("--deepmd", help="deepmd-kit's dp executable (e.g. /work/dp-venv/bin/dp)")
        p.add_argument("--steps", type=int, default={"budget": 100000, "step": 8, "compare": 400}[name])
        p.add_argument("--start-lr", type=float, default=None, help="default: dpa3-al's (1e-2 from scratch)")
        p.add_argument("--stop-lr", type=float, default=1e-4)
        p.add_argument("--threads", type=int, default=2, help="threads of each child (default 2)")
    sub.choices["budget"].add_argument("--minutes", type=float, default=10.0)
    sub.choices["step"].add_argument("--repeat", type=int, default=3)
    sub.choices["step"].add_argument("--memory", choices=("default", "low"), default="default",
                                     help="dpa3-al's memory mode (model.memory)")
    args = ap.parse_args()
    THREADS["n"] = args.threads
    print(f"# command: {command_line()}\n# load average {os.getloadavg()}; {os.cpu_count()} CPUs", flush=True)
    {"budget": part_budget, "step": part_step, "compare": part_compare}[args.part](args)


if __name__ == "__main__":
    main()
