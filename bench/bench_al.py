"""Public active-learning benchmark: does the loop's selection beat random frames?

System: a 32-atom Cu-Au alloy (Cu24Au8, and Cu16Au16 with a vacancy: 31 atoms) with exact EMT
labels (ASE's EMT through the `ase` labeler). Exploration: NVT Langevin at 300/800/1300 K from
both cells. Held-out test set: reference EMT MD at exactly those conditions (same start cells,
same length, other seeds). Three arms at equal label counts, several seeds each:

  a  the loop (``dpa3-al submit``), selection by the trust band + strategy (default diversity)
  b  the same loop choosing its frames at random among ALL explored frames (f_lo 0, f_hi huge,
     strategy random): what the committee deviation is worth
  c  random frames from reference EMT MD at the same conditions, trained with the same history
     (iteration 0 on the initial data, then each iteration continued from the previous member
     with the same init_model schedule, on the growing random set; the workflow's own
     train_member function)
  o  (optional, ``--arms o``) arm a with an oracle: the cap drawn by the committee mean's TRUE
     largest per-atom force error instead of its deviation (bench/al/oracle.py): the most a
     deviation-weighted selection can buy here
  v  (optional) arm a drawing with odds ~ avg_devi_f^2 instead of max_devi_f^2 (select.draw_by: avg_devi_f)

Every member and the committee mean are evaluated on the test set after every iteration:
energy RMSE per atom, force RMSE, per-atom force error p99, p99.9 and max. Outputs (``--out``
prefix): ``.csv`` (arm, seed, iteration, labels, member, metrics), ``.png`` (learning curves with
seed bands), ``.txt`` (command, machine, table, wall time and EMT calls per arm).

    .venv/bin/python bench/bench_al.py --out bench/results/al-baseline            # the full benchmark
    .venv/bin/python bench/bench_al.py --seeds 1 --iterations 2 --steps 200 --out /tmp/al-smoke   # smoke
    .venv/bin/python bench/bench_al.py --set train.init_model.steps_factor=1.0 --set train.init_model.lr_factor=1.0 ...

Units: eV, Å, K, fs; energies eV/atom, forces eV/Å.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from al import system  # noqa: E402
from al.evaluate import METRICS, evaluate_committee  # noqa: E402
from al.timeshare import time_shares  # noqa: E402

TEMPS = (300.0, 800.0, 1300.0)
TIMESTEP = 2.0  # fs
# the interpreter that runs this script decides which checkout of the project is measured
# (its venv's dpa3-al, its dpa3_al package): e.g. a git worktree of a fixed commit
PY = Path(sys.executable)
CLI = PY.parent / "dpa3-al"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "al-baseline",
                   help="output prefix: OUT.csv, OUT.png, OUT.txt")
    p.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "al", help="work folder (runs, data)")
    p.add_argument("--tag", default=None, help="name of this benchmark's runs in the work folder (default: out name)")
    p.add_argument("--arms", default="a,b,c", help="arms to run: a (loop), b (loop, random among explored), "
                   "c (random reference-MD frames), o (arm a with an oracle selection by the true error, "
                   "bench/al/oracle.py), v (arm a drawing by avg_devi_f, select.draw_by)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 1..N")
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--iterations", type=int, default=4, help="loop iterations (models of iteration k trained on "
                   "the initial data + k x labels)")
    p.add_argument("--labels", type=int, default=10, help="frames labeled per iteration")
    p.add_argument("--init-copies", type=int, default=4, help="perturbed initial frames per start cell")
    p.add_argument("--steps", type=int, default=1600, help="training steps per iteration (train.training.numb_steps; 1600: enough for the deviation to select, docs/al-benchmark.md; 800 halves the time)")
    p.add_argument("--steps-factor", type=float, default=1.0, help="train.init_model.steps_factor (project default)")
    p.add_argument("--lr-factor", type=float, default=1.0, help="train.init_model.lr_factor (project default)")
    p.add_argument("--target", type=float, default=None, metavar="F_RMSE",
                   help="arm a: an accuracy target (target.f_rmse, eV/Å) instead of --f-lo: the levels follow from "
                   "the calibration and the stage may converge (then it stops early)")
    p.add_argument("--conv-accuracy", type=float, default=None, help="the stage's conv_accuracy (default 0.9 with "
                   "--target, else 1.0: every iteration runs)")
    p.add_argument("--md-steps", type=int, default=200, help="MD steps per exploration task (2 fs)")
    p.add_argument("--traj-freq", type=int, default=10)
    p.add_argument("--strategy", default="weighted", choices=("diversity", "highest", "weighted", "random"),
                   help="arm a's select.strategy (default weighted: the one of the current results, docs/al-benchmark.md)")
    p.add_argument("--f-lo", type=float, default=0.05, help="arm a: lower trust level (eV/Å)")
    p.add_argument("--f-hi", type=float, default=0.6, help="arm a: upper trust level (eV/Å)")
    p.add_argument("--stop-f", type=float, default=2.0, help="explore.stop.max_devi_f (eV/Å), all loop arms")
    p.add_argument("--test-traj", type=int, default=4, help="test trajectories per (cell, temperature)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run-config key for every arm (dotted path, YAML value), e.g. "
                   "train.init_model.steps_factor=1.0; repeatable")
    p.add_argument("--report-only", action="store_true",
                   help="write the CSV/PNG/TXT from the finished (cached) arms only; run nothing")
    p.add_argument("--set-a", action="append", default=[], metavar="KEY=VALUE", help="override for arm a only")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- reference data
def prepare(work: Path, args: argparse.Namespace) -> dict:
    """Start cells, initial data and test set (made once, reused by every arm and seed)."""
    prep = work / "data"
    info_path = prep / "prep.json"
    key = {"init_copies": args.init_copies, "md_steps": args.md_steps, "test_traj": args.test_traj}
    if info_path.is_file() and json.loads(info_path.read_text())["key"] == key:
        return json.loads(info_path.read_text())
    prep.mkdir(parents=True, exist_ok=True)
    system.CountingEMT.calls = 0
    cells = system.write_cells(prep / "cells.extxyz")
    system.write_npy(system.perturbed(cells, args.init_copies, seed=11), prep / "init")
    init_calls = system.CountingEMT.calls
    test = []
    every = max(args.md_steps // 10, 1)
    for ci, cell in enumerate(cells):
        for temp in TEMPS:
            for t in range(args.test_traj):
                test += system.md_frames(cell, temp, args.md_steps, every, seed=10_000 + 100 * ci + t + int(temp),
                                         timestep=TIMESTEP, skip_first=True)
    system.write_npy(test, prep / "test")
    info = {"key": key, "init_frames": 2 * args.init_copies, "init_emt_calls": init_calls,
            "test_frames": len(test), "test_atoms": int(sum(len(f.atoms) for f in test)),
            "test_emt_calls": system.CountingEMT.calls - init_calls,
            "test_e_max": float(max(f.energy / len(f.atoms) for f in test))}
    info_path.write_text(json.dumps(info, indent=1))
    return info


# ----------------------------------------------------------------------------- run configs
def small_model() -> dict:
    return {"type_map": list(system.TYPE_MAP), "precision": "float32",
            "descriptor": {"n_dim": 32, "e_dim": 16, "a_dim": 8, "nlayers": 2, "e_rcut": 5.0, "e_rcut_smth": 4.5,
                           "e_sel": 60, "a_rcut": 3.5, "a_rcut_smth": 3.0, "a_sel": 16, "a_compress_rate": 1,
                           "a_compress_e_rate": 2},
            "fitting": {"neuron": [32, 32]}}


def set_key(cfg: dict, assignment: str) -> None:
    """``a.b.0.c=VALUE`` (VALUE read as YAML); a numeric part indexes a list, e.g.
    ``explore.stages.0.task_groups.0.temps=[300,800,1300,1600]``."""
    key, _, value = assignment.partition("=")
    node = cfg
    parts = [int(p) if p.isdigit() else p for p in key.split(".")]
    for p in parts[:-1]:
        node = node[p] if isinstance(p, int) else node.setdefault(p, {})
    node[parts[-1]] = yaml.safe_load(value)


def run_config(args: argparse.Namespace, arm: str, seed: int, prep: Path, name: str) -> dict:
    if arm == "b":   # every explored frame is a candidate; pick at random
        select = {"f_lo": 0.0, "f_hi": 1.0e6, "strategy": "random"}
    elif args.target is not None:   # the levels follow from the target (an explicit f_lo would win)
        select = {"f_hi": args.f_hi, "strategy": args.strategy}
    else:
        select = {"f_lo": args.f_lo, "f_hi": args.f_hi, "strategy": args.strategy}
    select.update({"max_select": args.labels, "seed": seed})
    if arm == "v":   # arm a drawing by the atoms' mean deviation
        select["draw_by"] = "avg_devi_f"
    conv = args.conv_accuracy if args.conv_accuracy is not None else (0.9 if args.target is not None else 1.0)
    cfg = {
        "name": name, "seed": seed, "init_data": [str(prep / "init")],
        "train": {"model": small_model(), "learning_rate": {"start_lr": 0.01, "stop_lr": 1.0e-4},
                  "training": {"numb_models": 4, "numb_steps": args.steps, "threads": 1, "progress": False,
                               "seed": 100 * seed + 1},
                  "data": {"max_validation_frames": 6},
                  "init_model": {"steps_factor": args.steps_factor, "lr_factor": args.lr_factor},
                  "stopping": {"patience": 0}},
        "explore": {"drive": 0, "stop": {"max_devi_f": args.stop_f, "min_dist_ratio": 0.5},
                    "stages": [{"max_iter": args.iterations, "conv_accuracy": conv, "task_groups": [{
                        "name": "cuau", "configurations": [{"file": str(prep / "cells.extxyz"), "index": ":"}],
                        "temps": list(TEMPS), "ensemble": "nvt-langevin", "timestep": TIMESTEP,
                        "steps": args.md_steps, "traj_freq": args.traj_freq, "seed": seed}]}]},
        "select": select,
        "label": {"kind": "ase", "timeout": 120, "ase": {"calculator": "ase.calculators.emt.EMT"}},
        "workflow": {"engine": "local", "group_size": 2, "max_iterations": args.iterations, "local": {"parallel": 2}},
    }
    if args.target is not None and arm == "a":
        cfg["target"] = {"f_rmse": args.target}
    for s in args.set + (args.set_a if arm in ("a", "o", "v") else []):
        set_key(cfg, s)
    return cfg


# ----------------------------------------------------------------------------- arms
def count_frames(root: Path) -> int:
    return int(sum(len(np.load(e)) for e in root.rglob("energy.npy"))) if root.is_dir() else 0


def member_models(train_dir: Path) -> list[Path]:
    return sorted(train_dir.glob("member-*/model.pt"))


def run_loop(args, arm: str, seed: int, prep: Path, info: dict, run_root: Path) -> dict:
    """The loop arms (a, b, o, v): one ``dpa3-al submit --wait`` (o: bench/al/oracle.py submit); returns per-iteration models and counts."""
    name = f"{arm}-s{seed}"
    cfg = run_config(args, arm, seed, prep, name)
    cfg_path = run_root / f"{name}.yaml"
    t0 = time.time()
    log_path, run = run_root / f"{name}.log", run_root / name
    if log_path.is_file() and _succeeded(run):     # finished earlier (the benchmark was interrupted after it)
        wall = log_path.stat().st_mtime - cfg_path.stat().st_mtime if not (run / "wall_s").is_file() \
            else float((run / "wall_s").read_text())
        proc = subprocess.CompletedProcess([], 0, "", "")
    else:
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cmd = [str(CLI), "-q", "submit", str(cfg_path), "--runs", str(run_root), "--wait"]
        env = None
        if arm == "o":      # its select step: bench/al/oracle.py, importable in the step processes
            cmd = [str(PY), str(Path(__file__).resolve().parent / "al" / "oracle.py"), "submit", arm, str(cfg_path),
                   str(run_root)]
            here = str(Path(__file__).resolve().parent)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.time() - t0
        log_path.write_text(proc.stdout + proc.stderr)
        (run / "wall_s").write_text(f"{wall:.1f}\n")
    if proc.returncode != 0:
        raise SystemExit(f"arm {arm} seed {seed}: dpa3-al submit failed (rc {proc.returncode}); see "
                         f"{run_root / f'{name}.log'}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    iters = []
    for k in range(args.iterations):
        prev = run / f"iter-{k - 1:06d}" / "dataset"
        labels = info["init_frames"] + (count_frames(prev) if k > 0 else 0)
        models = member_models(run / f"iter-{k:06d}" / "train")
        if not models:          # the stage converged (a target) before this iteration
            break
        iters.append({"iteration": k, "labels": labels, "models": [str(m) for m in models]})
    last = run / f"iter-{len(iters) - 1:06d}" / "dataset"
    emt_labels = count_frames(last)
    return {"wall_s": wall, "emt_calls": emt_labels, "emt_note": "ase-labeler calls (labeled frames)",
            "iterations": iters, "selection": _selections(run, args.iterations), "time_shares": time_shares(run)}


def _share_text(shares: dict | None) -> str:
    """'; training 69% ...' of a loop run's wall time (bench/al/timeshare.py)."""
    if not shares or not shares.get("wall_s"):
        return ""
    wall = shares["wall_s"]
    gap = f" ({shares['stopped_s']:.0f} s stopped before a resume, not counted)" if shares.get("stopped_s") else ""
    return "; of the loop's " + f"{wall:.0f} s{gap}: " + ", ".join(
        f"{k[:-2]} {100 * v / wall:.0f}%" for k, v in shares.items() if k not in ("wall_s", "stopped_s") and v)


def _target_text(s: dict) -> str:
    t = s.get("target")
    if not t:
        return ""
    est, verdict = t.get("estimated_f_rmse"), s.get("verdict")
    text = (f"; target {t['f_rmse']:g}: {'calibrated' if t['calibrated'] else 'uncalibrated'}, estimated F RMSE "
            f"{'-' if est is None else format(est, '.3f')}")
    if verdict:      # the decide step's levels, from this iteration's own labels
        text += (f"; verdict on own labels: estimated {verdict['estimated_f_rmse']:.3f}, f_lo {verdict['f_lo']:.3g}, "
                 f"accurate {verdict['accurate_ratio']:.2f}")
    return text + f", converged {s.get('converged')}"


def _succeeded(run: Path) -> bool:
    state = run / "state.json"
    return state.is_file() and json.loads(state.read_text()).get("status") == "succeeded"


def _selections(run: Path, n: int) -> list[dict]:
    out = []
    for k in range(n):
        p = run / f"iter-{k:06d}" / "select" / "selection.json"
        if not p.is_file():
            p = next(iter(sorted((run / f"iter-{k:06d}").rglob("selection.json"))), None)
        if p is None:
            out.append({})
            continue
        s = json.loads(p.read_text())
        row = {"n_frames": s["n_frames"], "ratios": s["ratios"], "n_selected": s["n_selected"], "levels": s["levels"]}
        target = p.parent / "target.json"
        if target.is_file():
            t = json.loads(target.read_text())
            row["target"] = {k: t.get(k) for k in ("f_rmse", "calibrated", "estimated_f_rmse", "share")}
        decision = run / f"iter-{k:06d}" / "decide" / "schedule.json"
        if decision.is_file():
            last = json.loads(decision.read_text())["decisions"][-1]
            row["converged"] = last.get("converged")
            verdict = decision.parent / "target.json"
            if verdict.is_file():
                v = json.loads(verdict.read_text())
                row["verdict"] = {"estimated_f_rmse": v.get("estimated_f_rmse"), "f_lo": v.get("f_lo"),
                                  "accurate_ratio": last.get("accurate_ratio")}
        out.append(row)
    return out


def _arm_a(runs: dict, run_root: Path, seed: int) -> dict | None:
    """Arm a's run of this seed: of this invocation, or cached under the tag by an earlier one
    (``--arms c`` after ``--arms a,b``), so that arm c starts from the same iteration-0 models."""
    if ("a", seed) in runs:
        return runs[("a", seed)]
    cache = run_root / f"a-s{seed}.result.json"
    return json.loads(cache.read_text()) if cache.is_file() else None


def run_random_md(args, seed: int, prep: Path, info: dict, run_root: Path, loop_a: dict | None) -> dict:
    """Arm c: random frames from reference EMT MD at the loop's conditions, the loop's training history."""
    work = run_root / f"c-s{seed}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cells = system.start_cells()
    system.CountingEMT.calls = 0
    pool = []
    for k in range(args.iterations):          # as much reference MD as the loop explores
        for ci, cell in enumerate(cells):
            for temp in TEMPS:
                pool += system.md_frames(cell, temp, args.md_steps, args.traj_freq,
                                         seed=1_000_000 * seed + 1000 * k + 10 * ci + int(temp),
                                         timestep=TIMESTEP, skip_first=True)
    md_calls = system.CountingEMT.calls
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pool))
    train_cfg = run_config(args, "c", seed, prep, f"c-s{seed}")["train"]
    iters, prev_models = [], None
    for k in range(args.iterations):
        tdir = work / f"iter-{k:06d}"
        data = [prep / "init"]
        if k > 0:
            chosen = [pool[i] for i in order[: k * args.labels]]
            ddir = tdir / "data"
            if not ddir.is_dir():
                system.write_npy(chosen, ddir)
            data.append(ddir)
        if k == 0 and loop_a is not None:      # same data, same seeds: iteration 0 is arm a's
            models = [Path(m) for m in loop_a["iterations"][0]["models"]]
        else:
            models = _train_committee(train_cfg, data, prev_models, k, tdir / "train")
        iters.append({"iteration": k, "labels": info["init_frames"] + k * args.labels,
                      "models": [str(m) for m in models]})
        prev_models = models
    return {"wall_s": time.time() - t0, "emt_calls": md_calls,
            "emt_note": "reference MD steps that made the pool (labels come free with it)",
            "iterations": iters, "iteration0_from_arm_a": loop_a is not None}


def _train_committee(train_cfg: dict, data: list[Path], prev: list[Path] | None, k: int, tdir: Path) -> list[Path]:
    """The committee of iteration k, two members at a time (as the loop's local parallel 2)."""
    n = train_cfg["training"]["numb_models"]
    procs, models = [], []
    for i in range(n):
        wd = tdir / f"member-{i:03d}"
        wd.mkdir(parents=True, exist_ok=True)
        models.append(wd / "model.pt")
        if (wd / "model.pt").is_file() and (wd / "train_summary.json").is_file():
            continue
        spec = {"train": train_cfg, "data": [str(d) for d in data], "init_model": str(prev[i]) if prev else None,
                "member": i, "iteration": k, "workdir": str(wd)}
        (wd / "spec.json").write_text(json.dumps(spec))
        if len(procs) >= 2:
            _wait(procs.pop(0))
        log = open(wd / "process.log", "w")
        procs.append((subprocess.Popen([str(PY), str(ROOT / "bench" / "al" / "train_member.py"), str(wd / "spec.json")],
                                       stdout=log, stderr=subprocess.STDOUT), wd))
    for p in procs:
        _wait(p)
    return models


def _wait(p) -> None:
    proc, wd = p
    if proc.wait() != 0:
        raise SystemExit(f"arm c: training failed in {wd} (see {wd / 'process.log'})")


# ----------------------------------------------------------------------------- evaluation + outputs
def evaluate_arm(arm: str, seed: int, result: dict, test, test_dir: Path) -> list[dict]:
    rows = []
    for it in result["iterations"]:
        ev = evaluate_committee([Path(m) for m in it["models"]], test, test_dir)
        for member, m in ev.items():
            rows.append({"arm": arm, "seed": seed, "iteration": it["iteration"], "labels": it["labels"],
                         "member": member, **{k: m[k] for k in METRICS}})
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["arm", "seed", "iteration", "labels", "member", *METRICS])
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


ARM_NAMES = {"a": "a: loop", "b": "b: loop, random among explored", "c": "c: random reference-MD frames",
             "o": "o: loop, oracle (true error) selection", "v": "v: loop, drawn by avg_devi_f"}
LOOP_ARMS = ("a", "b", "o", "v")


def summary_table(rows: list[dict]) -> list[str]:
    """Per arm and iteration: committee mean and members' mean over seeds (mean ± std)."""
    lines = ["committee-mean prediction (mean ± std over seeds); members: mean over members and seeds",
             f"{'arm':<4}{'it':>3}{'labels':>7}{'seeds':>6}  {'f_rmse':>15}{'e_rmse(meV/at)':>17}"
             f"{'f_p99':>15}{'f_p999':>15}{'f_max':>15}  {'members f_rmse':>16}{'worst/best':>11}"]
    keys = sorted({(r["arm"], r["iteration"]) for r in rows})
    for arm, it in keys:
        sel = [r for r in rows if r["arm"] == arm and r["iteration"] == it]
        mean = [r for r in sel if r["member"] == "mean"]
        mem = [r for r in sel if r["member"] != "mean"]

        def ms(k, scale=1.0):
            v = np.array([r[k] for r in mean]) * scale
            return f"{v.mean():8.4f}±{v.std():.4f}" if scale == 1.0 else f"{v.mean():9.2f}±{v.std():.2f}"
        ratio = []
        for s in {r["seed"] for r in mem}:
            f = [r["f_rmse"] for r in mem if r["seed"] == s]
            ratio.append(max(f) / min(f))
        lines.append(f"{arm:<4}{it:>3}{mean[0]['labels']:>7}{len(mean):>6}  {ms('f_rmse'):>15}"
                     f"{ms('e_rmse', 1000.0):>17}{ms('f_p99'):>15}{ms('f_p999'):>15}{ms('f_max'):>15}"
                     f"  {np.mean([r['f_rmse'] for r in mem]):16.4f}{np.mean(ratio):11.2f}")
    return lines


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("f_rmse", "test force RMSE (eV/Å)", 1.0), ("e_rmse", "test energy RMSE (meV/atom)", 1000.0),
              ("f_p99", "p99 per-atom force error (eV/Å)", 1.0), ("f_max", "max per-atom force error (eV/Å)", 1.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    colors = {"a": "C0", "b": "C1", "c": "C2", "o": "C3", "v": "C4",
              "w": "C5", "d": "C7", "s": "C6", "A": "C8", "B": "C9",   # w, d, s, A, B, p, r: combine.py
              "p": "tab:cyan", "r": "tab:brown"}
    arms = sorted({r["arm"] for r in rows})
    for ax, (key, label, scale) in zip(axes, panels):
        for arm in arms:
            mean = [r for r in rows if r["arm"] == arm and r["member"] == "mean"]
            its = sorted({r["iteration"] for r in mean})   # seeds may differ by a label or two (duplicates)
            labels = [np.mean([r["labels"] for r in mean if r["iteration"] == k]) for k in its]
            vals = [np.array([r[key] for r in mean if r["iteration"] == k]) * scale for k in its]
            mu = np.array([v.mean() for v in vals])
            ax.plot(labels, mu, "o-", color=colors.get(arm), label=ARM_NAMES.get(arm, arm))
            ax.fill_between(labels, [v.min() for v in vals], [v.max() for v in vals], color=colors.get(arm),
                            alpha=0.2)
        ax.set_xlabel("labeled frames")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("labeled frames (mean over seeds)")
    fig.suptitle(title + " (committee mean; band: min-max over seeds)", fontsize=9)
    if len(arms) > 3:       # many arms: the legend below the panels, not over the curves
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
        fig.tight_layout(rect=(0, 0.05 * (1 + (len(arms) - 1) // 3), 1, 1))
    else:
        axes[0].legend(fontsize=8)
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _project() -> str:
    import dpa3_al

    src = Path(dpa3_al.__file__).resolve().parents[1]
    rev = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return f"{src} at {rev.stdout.strip()}{' (modified files)' if dirty else ''}"


def main(argv=None) -> int:
    args = parse_args(argv)
    tag = args.tag or args.out.name
    work = args.work.resolve()
    run_root = work / "runs" / tag
    run_root.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python bench/bench_al.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    t_start = time.time()
    info = prepare(work, args)
    test = system.read_npy(work / "data" / "test")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    rows, runs = [], {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for arm in arms:
            cache = run_root / f"{arm}-s{seed}.result.json"
            if cache.is_file():
                res = json.loads(cache.read_text())
                if arm in LOOP_ARMS and (run_root / f"{arm}-s{seed}").is_dir():   # read what the run says now
                    res["selection"] = _selections(run_root / f"{arm}-s{seed}", args.iterations)
            elif args.report_only:
                print(f"arm {arm} seed {seed}: not finished, left out (--report-only)")
                continue
            else:
                if arm in LOOP_ARMS:
                    res = run_loop(args, arm, seed, work / "data", info, run_root)
                else:
                    res = run_random_md(args, seed, work / "data", info, run_root, _arm_a(runs, run_root, seed))
                res["rows"] = evaluate_arm(arm, seed, res, test, work / "data" / "test")
                cache.write_text(json.dumps(res, indent=1))
            runs[(arm, seed)] = res
            rows += res["rows"]
            write_csv(rows, args.out.with_suffix(".csv"))
            print(f"[{time.strftime('%H:%M:%S')}] arm {arm} seed {seed}: {res['wall_s']:.0f} s, "
                  f"EMT calls {res['emt_calls']}", flush=True)
    write_csv(rows, args.out.with_suffix(".csv"))
    plot(rows, args.out.with_suffix(".png"), tag)
    lines = [f"command: {command}", f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"machine: {platform.node()}, {os.cpu_count()} CPUs (shared with other work: loaded), "
             f"load average at end {os.getloadavg()}",
             f"project: {_project()}", f"reference data: {json.dumps(info)}",
             f"wall time: arms {sum(r['wall_s'] for r in runs.values()):.0f} s in all (each arm's run, evaluation "
             f"excluded); this invocation {time.time() - t_start:.0f} s (finished arms are cached)", ""]
    lines += summary_table(rows)
    lines += ["", "wall time and EMT calls per arm and seed:"]
    for (arm, seed), res in sorted(runs.items()):
        lines.append(f"  {arm} seed {seed}: {res['wall_s']:7.0f} s, EMT calls {res['emt_calls']} ({res['emt_note']})"
                     + (" [iteration 0 = arm a's models]" if res.get("iteration0_from_arm_a") else "")
                     + _share_text(res.get("time_shares")))
    lines += ["", "selection per iteration (loop arms):"]
    for (arm, seed), res in sorted(runs.items()):
        for k, s in enumerate(res.get("selection", [])):
            if s:
                lines.append(f"  {arm} s{seed} it{k}: {s['n_frames']} frames, accurate {s['ratios']['accurate']:.2f}"
                             f" candidate {s['ratios']['candidate']:.2f} failed {s['ratios']['failed']:.2f}, "
                             f"selected {s['n_selected']}, f_lo {s['levels']['f_lo']:.3g} f_hi {s['levels']['f_hi']:.3g}"
                             + _target_text(s))
    text = "\n".join(lines)
    args.out.with_suffix(".txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
