"""Workflow overhead per step in the local engine (dflow debug mode), beyond the step's work.

    .venv/bin/python bench/bench_workflow_overhead.py                 # defaults below
    .venv/bin/python bench/bench_workflow_overhead.py --steps 20 --tasks 32 --work 0.2

Measures, on this machine, with the real machinery (our engine, step runner, OPs, dflow):

1. baselines: bare interpreter start, ``import dflow.python`` (every step pays it), ``import
   torch`` (a step that trains or runs MD pays it too);
2. a chain of ``--steps`` sequential steps whose function sleeps ``--work`` s:
   overhead per step = (wall - steps * work) / steps; and the part of it spent inside the
   step process (interpreter + dflow import + OP), from the runner's records; once with the
   step preloader (the default: steps are forked from an interpreter that has imported
   dflow) and once without (``local.preload: false``: a fresh interpreter per step);
3. a fan-out of ``--tasks`` tasks (each sleeping ``--work`` s) run one step at a time
   (``--parallel 1``) for several ``group_size`` values: the per-task cost falls as tasks
   share a step, which is why exploration and labeling are grouped.

Goal of the project: overhead <= 0.6 s per step. Each measurement is printed as one JSON
line, then a summary table; the command line is printed first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GOAL = 0.6
MODULE = "bench_workflow_overhead"      # the step processes import the step functions by this name


# -- the step functions (imported by the step processes: keep this module light) -----------
def bench_prep(config, schedule, iteration, workdir):
    """prep-explore contract: ``config["n"]`` empty task folders."""
    tasks = []
    for k in range(int(config.get("n", 0))):
        task = Path(workdir) / f"task-{k:06d}"
        task.mkdir(parents=True, exist_ok=True)
        tasks.append(task)
    time.sleep(float(config.get("work", 0)))
    return tasks


def bench_task(config, task, workdir):
    """run-label contract: sleep ``config["work"]`` seconds."""
    time.sleep(float(config.get("work", 0)))


# -- measurements -----------------------------------------------------------------------------
def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def interpreter_baselines() -> dict[str, float]:
    """Median wall time of starting python, importing dflow.python, importing torch."""
    out = {}
    for label, code in (("python_start", "pass"), ("import_dflow", "import dflow.python"),
                        ("import_torch", "import torch")):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - t0)
        out[label] = sorted(times)[1]
    return out


def _engine(workdir: Path, parallel: int, group_size: int = 1, preload: bool = True):
    from dpa3_al.common.typed_config import from_dict
    from dpa3_al.workflows.config import WorkflowConfig
    from dpa3_al.workflows.engine import LocalEngine

    cfg = from_dict(WorkflowConfig, {"group_size": group_size, "retries": 0, "continue_on_success_ratio": 1.0,
                                     "local": {"parallel": parallel, "preload": preload}})
    engine = LocalEngine(cfg, workdir)
    engine.configure()
    return engine


def _step_seconds(wf_dir: Path) -> list[float]:
    """Wall seconds of each step process, from the runner's records."""
    out = []
    for record in wf_dir.glob("*/runner.json"):
        attempts = json.loads(record.read_text())["attempts"]
        out.extend(a["seconds"] for a in attempts)
    return out


def _submit(engine, wf, wf_dir: Path) -> float:
    """Run ``wf`` to its end; its wall time in s. A failed workflow raises, naming ``wf_dir``."""
    with engine.session():
        t0 = time.perf_counter()
        wf.submit()
        wall = time.perf_counter() - t0
    if wf.query_status() != "Succeeded":
        raise RuntimeError(f"benchmark workflow failed; see {wf_dir}")
    return wall


def chain(workdir: Path, steps: int, work: float, preload: bool = True) -> dict:
    """``steps`` sequential no-op steps (the prep-explore OP), each sleeping ``work`` s."""
    from dflow import Steps

    from dpa3_al.workflows.keys import step_key
    from dpa3_al.workflows.ops import op_class

    engine = _engine(workdir, parallel=1, preload=preload)
    t0 = time.perf_counter()
    main = Steps(name="main")
    for i in range(steps):
        template = engine.template("prep-explore", op_class("prep-explore"))
        main.add(engine.step(f"chain-{i}", template, key=step_key(0, "chain", i),
                             parameters={"func": f"{MODULE}:bench_prep", "config": {"work": work},
                                         "iteration": 0}, artifacts={"schedule": None}))
    wf = engine.workflow("chain", main, "chain")
    built = time.perf_counter() - t0
    wall = _submit(engine, wf, workdir / "chain")
    inside = _step_seconds(workdir / "chain")
    rec = {"bench": "chain", "preload": preload, "steps": steps, "work_s": work, "build_s": round(built, 3),
           "wall_s": round(wall, 3),
           "overhead_per_step_s": round((wall - steps * work) / steps, 3),
           "in_step_process_s": round(sum(inside) / len(inside) - work, 3)}
    emit(rec)
    return rec


def fanout(workdir: Path, tasks: int, work: float, group_size: int, parallel: int) -> dict:
    """``tasks`` tasks of ``work`` s each, ``group_size`` per step, ``parallel`` steps at once."""
    from dflow import InputParameter, Inputs, Steps

    from dpa3_al.workflows.loop import _fanout, _simple
    from dpa3_al.workflows.spec import LoopSpec, StepCall

    name = f"fanout-g{group_size}"
    engine = _engine(workdir, parallel=parallel, group_size=group_size)
    spec = LoopSpec(calls={"prep-explore": StepCall(f"{MODULE}:bench_prep", {"n": tasks}),
                           "run-label": StepCall(f"{MODULE}:bench_task", {"work": work})})
    main = Steps(name="main", inputs=Inputs(parameters={"iter_name": InputParameter(value="iter-000000", type=str)}))
    prep = _simple(engine, spec, "prep-explore", {"iteration": 0}, {"schedule": None})
    run = _fanout(engine, spec, "run-label", prep, {}, {})
    main.add(prep)
    main.add(run)
    wf = engine.workflow(name, main, name)
    wall = _submit(engine, wf, workdir / name)
    n_steps = -(-tasks // group_size)
    serial_work = tasks * work / parallel
    rec = {"bench": "fanout", "tasks": tasks, "group_size": group_size, "steps": n_steps, "parallel": parallel,
           "work_s": work, "wall_s": round(wall, 3),
           "overhead_per_task_s": round((wall - serial_work) / tasks, 3),
           "overhead_per_step_s": round((wall - serial_work) / (n_steps + 3), 3)}
    emit(rec)
    return rec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="length of the sequential chain")
    parser.add_argument("--tasks", type=int, default=16, help="tasks in the fan-out")
    parser.add_argument("--groups", default="1,4,16", help="group sizes to compare (comma separated)")
    parser.add_argument("--work", type=float, default=0.1, help="seconds of 'work' per step/task")
    parser.add_argument("--parallel", type=int, default=1, help="steps of a fan-out at once")
    parser.add_argument("--skip-torch", action="store_true", help="do not time 'import torch'")
    args = parser.parse_args(argv)
    print(f"# {command_line()}", flush=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(HERE))
    from importlib.metadata import version

    load = os.getloadavg()
    emit({"bench": "env", "python": sys.version.split()[0], "pydflow": version("pydflow"), "cpus": os.cpu_count(),
          "loadavg": [round(x, 2) for x in load]})
    base = interpreter_baselines()
    if args.skip_torch:
        base.pop("import_torch", None)
    emit({"bench": "baselines", **{k: round(v, 3) for k, v in base.items()}})
    with tempfile.TemporaryDirectory(prefix="dpa3-al-bench-") as tmp:
        work = Path(tmp)
        ch = chain(work / "chain", args.steps, args.work)
        cold = chain(work / "chain-cold", args.steps, args.work, preload=False)
        fans = [fanout(work / f"fan-{g}", args.tasks, args.work, int(g), args.parallel)
                for g in args.groups.split(",")]
    print()
    print(f"baselines: python start {base['python_start']:.2f} s, import dflow.python {base['import_dflow']:.2f} s"
          + (f", import torch {base['import_torch']:.2f} s" if "import_torch" in base else ""))
    verdict = "meets" if ch["overhead_per_step_s"] <= GOAL else "MISSES"
    print(f"chain of {ch['steps']} steps: {ch['overhead_per_step_s']:.2f} s overhead per step "
          f"({ch['in_step_process_s']:.2f} s inside the step process) -> {verdict} the goal of <= {GOAL} s")
    print(f"  the same without the step preloader (local.preload: false): {cold['overhead_per_step_s']:.2f} s "
          f"per step ({cold['in_step_process_s']:.2f} s inside the step process)")
    for f in fans:
        print(f"fan-out of {f['tasks']} tasks, group_size {f['group_size']:>3} ({f['steps']:>2} steps, "
              f"parallel {f['parallel']}): {f['overhead_per_task_s']:.2f} s overhead per task")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
