"""Toy step functions with the signatures of the real ones (docs/workflows.md).

They test the workflow machinery, not the science: "training" writes a text file,
"MD" squares a number, "labeling" writes a JSON frame, the "dataset" is a folder of frame
files. Behaviour is steered by each step's ``config``:

- ``fail``: list of task names whose call raises (a crashing task);
- ``fail_first``: list of task names that fail on their first attempt only (transient);
- ``hang``: list of task names that sleep for an hour (a hung task);
- ``user_error``: list of task names whose call raises a UserError (bad input: the same every time);
- ``sleep``: seconds every call sleeps (to interrupt a run in the middle);
- ``n_tasks`` (prep steps), ``stop_after`` (decide: stop when iteration >= this).

Every call appends one line to ``$WF_TOY_LEDGER`` (if set): "<run> <step> <name> <iteration>",
so tests can count how many times each unit of work really ran; calls that run in a Slurm
job or a step process also write ``where.json`` (Slurm job id, pid) into their folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path


def _run_name() -> str:
    """The run this call belongs to: the folder after ``runs`` in the working directory."""
    parts = Path.cwd().parts
    return next((parts[i + 1] for i, p in enumerate(parts[:-1]) if p == "runs"), "-")


def _ledger(step: str, name: str, iteration: int | str = "-") -> None:
    path = os.environ.get("WF_TOY_LEDGER")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{_run_name()} {step} {name} {iteration}\n")


def _misbehave(config: dict, name: str, workdir: Path) -> None:
    time.sleep(float(config.get("sleep", 0)))
    if name in config.get("hang", []):
        time.sleep(3600)
    if name in config.get("fail", []):
        raise RuntimeError(f"toy failure of {name}")
    if name in config.get("user_error", []):
        from dpa3_al.common.errors import UserError

        raise UserError(f"toy input error of {name}: fix toy.value")
    marker = workdir / ".attempted"
    if name in config.get("fail_first", []) and not marker.exists():
        marker.write_text("1")
        raise RuntimeError(f"toy transient failure of {name}")


def _stamp(workdir: Path) -> None:
    """Where the call ran: the Slurm job (if any) and the process."""
    (workdir / "where.json").write_text(json.dumps({"slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                                                    "pid": os.getpid(),
                                                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}))


def train(config, data, init_model, member, iteration, workdir):
    _ledger("train", f"member-{member}", iteration)
    _misbehave(config, f"member-{member}", workdir)
    _stamp(workdir)
    frames = sum(len(list(Path(d).rglob("*.frame"))) for d in data)
    parent = Path(init_model).read_text().split()[0] if init_model else "scratch"
    model = workdir / "model.pt"
    model.write_text(f"model-i{iteration}-m{member} frames={frames} parent={parent}\n")
    (workdir / "lcurve.csv").write_text("step,loss\n0,1.0\n")
    return model


def prep_explore(config, schedule, iteration, workdir):
    _ledger("prep-explore", "-", iteration)
    _misbehave(config, "prep-explore", workdir)
    stage = json.loads(Path(schedule).read_text())["stage"] if schedule else 0
    tasks = []
    for k in range(int(config.get("n_tasks", 3))):
        task = workdir / f"task-{k:06d}"
        task.mkdir(exist_ok=True)
        (task / "task.json").write_text(json.dumps({"x": k + 1, "stage": stage, "iteration": iteration}))
        tasks.append(task)
    return tasks


def run_explore(config, task, models, workdir):
    spec = json.loads((Path(task) / "task.json").read_text())
    _ledger("run-explore", workdir.name, spec["iteration"])
    _misbehave(config, workdir.name, workdir)
    _stamp(workdir)
    (workdir / "status.json").write_text(json.dumps({"ok": True, "models": len(models), "x2": spec["x"] ** 2}))


def select(config, explored, models, iteration, workdir, calibration=None, labeled_data=()):  # noqa: ARG001
    _ledger("select", "-", iteration)
    _misbehave(config, "select", workdir)
    _stamp(workdir)
    results = sorted(json.loads((Path(p) / "status.json").read_text())["x2"] for p in explored)
    (workdir / "candidates.json").write_text(json.dumps(results))
    (workdir / "selection.json").write_text(json.dumps({"n_candidates": len(results), "explored": len(explored)}))
    return len(results)


def bootstrap(config, workdir):
    _ledger("bootstrap", "-", 0)
    values = [1000 + k for k in range(int(config.get("n_frames", 2)))]
    (workdir / "candidates.json").write_text(json.dumps(values))
    return len(values)


def prep_label(config, selection, iteration, workdir):
    _ledger("prep-label", "-", iteration)
    values = json.loads((Path(selection) / "candidates.json").read_text())
    tasks = []
    for k, value in enumerate(values):
        task = workdir / f"task-{k:06d}"
        task.mkdir(exist_ok=True)
        (task / "frame.json").write_text(json.dumps({"value": value, "iteration": iteration}))
        tasks.append(task)
    return tasks


def run_label(config, task, workdir):
    frame = json.loads((Path(task) / "frame.json").read_text())
    _ledger("run-label", workdir.name, frame["iteration"])
    _misbehave(config, workdir.name, workdir)
    _stamp(workdir)
    (workdir / f"i{frame['iteration']}-{workdir.name}.frame").write_text(json.dumps({"energy": -frame["value"]}))


def collect(config, dataset, labeled, iteration, workdir):
    _ledger("collect", "-", iteration)
    root = workdir / "frames"
    if dataset is not None and (Path(dataset) / "frames").is_dir():
        shutil.copytree(Path(dataset) / "frames", root, dirs_exist_ok=True)
    root.mkdir(exist_ok=True)
    for folder in labeled:
        for frame in Path(folder).glob("*.frame"):
            shutil.copy(frame, root / frame.name)
    return workdir


def evaluate(config, models, selection, labeled, dataset, init_data, test_data, calibration, iteration, final,
             workdir):  # noqa: ARG001
    name = "final" if final else "-"
    _ledger("evaluate", name, iteration)
    _misbehave(config, f"evaluate-{name}", workdir)
    previous = json.loads((Path(calibration) / "calibration.json").read_text()) if calibration else []
    (workdir / ("final.json" if final else "calibration.json")).write_text(
        json.dumps([*previous, iteration] if not final else {"models": sorted(Path(m).name for m in models)}))
    (workdir / "test.json").write_text(json.dumps({"iteration": iteration, "models": len(models),
                                                   "test_data": len(test_data)}))
    return workdir


def decide(config, schedule, selection, dataset, iteration, workdir):
    _ledger("decide", "-", iteration)
    n_frames = len(list((Path(dataset) / "frames").glob("*.frame")))
    (workdir / "schedule.json").write_text(json.dumps({"stage": 0, "iteration": iteration, "frames": n_frames}))
    return iteration + 1 >= int(config.get("stop_after", 2))
