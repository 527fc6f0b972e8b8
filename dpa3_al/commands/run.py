"""Verbs of a whole run: submit, status, resume, stop, list, render, download, validate.

A RUN argument is a run directory (``runs/water``) or a run name looked up under ``--runs``
(default ``./runs``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dpa3_al.commands import add_verb

RUNS = Path("runs")


def register(subparsers) -> None:
    p = add_verb(subparsers, "submit", cmd_submit, "start a concurrent-learning run from a config file",
                 "Validate CONFIG, create runs/<name>/ and start the loop in the background (returns at once "
                 "unless --wait).", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, help="run config (YAML), e.g. templates/quickstart.yaml")
    p.add_argument("--name", help="run name (default: the config's name)")
    _runs_option(p)
    p.add_argument("--wait", action="store_true", help="follow the run with a live progress view until it ends")

    p = _run_verb(subparsers, "status", cmd_status, "where a run is: iteration, stage, steps, ratios, dataset")
    p.add_argument("--json", action="store_true", help="print state.json")

    p = _run_verb(subparsers, "resume", cmd_resume, "continue a run after a crash, kill, stop or failed step",
                  "Finished steps are reused; nothing labeled is labeled again.")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends")

    _run_verb(subparsers, "stop", cmd_stop, "stop a run (its driver and every step process)")

    _runs_option(add_verb(subparsers, "list", cmd_list, "the runs under a folder, with their status"))

    p = add_verb(subparsers, "render", cmd_render, "write the complete Argo Workflow YAML of a config (offline)")
    p.add_argument("config", type=Path)
    p.add_argument("--name", help="workflow name (default: the config's name)")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")

    _run_verb(subparsers, "download", cmd_download, "fetch the outputs of an Argo run into its run directory")

    p = add_verb(subparsers, "validate", cmd_validate, "check a run config without running anything")
    p.add_argument("config", type=Path)


def _run_verb(subparsers, name: str, func, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """A verb about one existing run: the RUN argument and --runs."""
    p = add_verb(subparsers, name, func, help, description)
    p.add_argument("run", help="run directory or name")
    _runs_option(p)
    return p


def _runs_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=Path, default=RUNS, help="folder holding run directories (default: ./runs)")


def run_root(run: str, runs: Path) -> Path:
    """A run directory from a path or a name; a clear error when it is not a run."""
    from dpa3_al.common.errors import UserError

    for candidate in (Path(run), runs / run):
        if (candidate / "state.json").is_file() or (candidate / "plan.json").is_file():
            return candidate.resolve()
    raise UserError(f"{run!r} is not a run directory (no state.json there or under {runs}/); "
                    f"'dpa3-al list --runs {runs}' shows the runs")


# ----------------------------------------------------------------------------- verbs
def _load(path: Path):
    from dpa3_al.config import config_dict, load_run_config
    from dpa3_al.workflows.plan import plan_from_config

    cfg = load_run_config(path)
    return cfg, plan_from_config(cfg, path.resolve().parent), config_dict(cfg)


def runs_here(cfg, step: str) -> bool:
    """Whether ``step`` runs on this machine (local engine, or not sent to the batch system)."""
    wf = cfg.workflow
    return wf.engine == "local" or (wf.engine == "dispatcher" and step not in wf.dispatcher.steps)


def label_runs_here(cfg) -> bool:
    """Whether run-label runs on this machine."""
    return runs_here(cfg, "run-label")


def check_md_engine(cfg, base_dir: Path) -> str | None:
    """For stages with ``engine: lammps``: refuse (UserError) missing LAMMPS/dp programs when
    run-explore runs here, before any training; one line saying what was found. None: no such stage."""
    if not any(stage.engine == "lammps" for stage in cfg.explore.stages):
        return None
    from dpa3_al.explore.lammps import LammpsUnavailable, preflight

    try:
        programs = preflight(cfg.explore.lammps, base_dir)
    except LammpsUnavailable as err:
        if runs_here(cfg, "run-explore"):
            raise
        return f"engine lammps: not available on this machine, where run-explore does not run ({err})"
    return f"engine lammps: {programs.lmp} and {programs.dp}"


def labeler_problem(cfg) -> str | None:
    """Why the configured labeler cannot run here (program, package, calculator, pseudopotentials
    of the type map's elements), None when it can: the same check the label step makes."""
    from dpa3_al.label import LabelerUnavailable, make_labeler

    try:
        make_labeler(cfg.label).preflight(cfg.train.model.type_map)
    except LabelerUnavailable as err:
        return str(err)
    return None


def check_labeler(cfg) -> str:
    """Refuse (UserError) a labeler that cannot run on this machine when run-label runs here;
    otherwise one line saying what was found."""
    from dpa3_al.common.errors import UserError

    problem = labeler_problem(cfg)
    if problem is None:
        return f"labeler {cfg.label.kind}: available on this machine"
    if label_runs_here(cfg):
        raise UserError(problem)
    return f"labeler {cfg.label.kind}: not available on this machine, where its steps do not run ({problem})"


def cmd_validate(args) -> int:
    cfg, plan, _ = _load(args.config)
    labeler = check_labeler(cfg)
    md_engine = check_md_engine(cfg, args.config.resolve().parent)
    stages = ", ".join(f"stage {i}: {len(s.task_groups)} task group(s), max_iter {s.max_iter}"
                       for i, s in enumerate(cfg.explore.stages))
    start = (f"{len(cfg.init_data)} initial data path(s)" if cfg.init_data else "no initial data: bootstrap labels")
    ft = f", fine-tuning {cfg.train.finetune.model}" if cfg.train.finetune.model else ""
    print(f"{args.config}: OK\n  run name {cfg.name}; engine {cfg.workflow.engine}; committee of {cfg.committee}{ft}\n"
          f"  {start}; labeler {cfg.label.describe()}\n  {stages}")
    print(f"  {labeler}")
    if md_engine:
        print(f"  {md_engine}")
    return 0


def cmd_submit(args) -> int:
    from dpa3_al.workflows import submit

    cfg, plan, data = _load(args.config)
    name = args.name or cfg.name
    check_labeler(cfg)                  # a missing program or calculator: refused before any work
    check_md_engine(cfg, args.config.resolve().parent)
    run = submit(args.runs, name, plan, data)
    print(f"submitted run {name!r}: {run.root}\n  follow it: dpa3-al status {run.root}   "
          f"(or: dpa3-al submit ... --wait)\n  stop it:   dpa3-al stop {run.root}; continue: dpa3-al resume {run.root}")
    return _follow(run.root) if args.wait else 0


def cmd_resume(args) -> int:
    from dpa3_al.workflows import resume

    root = run_root(args.run, args.runs)
    resume(root)
    print(f"resumed {root}")
    return _follow(root) if args.wait else 0


def cmd_stop(args) -> int:
    from dpa3_al.workflows import stop

    state = stop(run_root(args.run, args.runs))
    print(f"{state.name}: {state.status}; continue with: dpa3-al resume {args.run}")
    return 0


def cmd_status(args) -> int:
    from dpa3_al.workflows import status

    root = run_root(args.run, args.runs)
    state = status(root)        # a corrupt state.json: CorruptState, one line naming it and the fix
    if args.json:
        print(state.to_json())
        return 0
    print("\n".join(describe(root, state)))
    return 0 if state.status != "failed" else 1


def cmd_list(args) -> int:
    from dpa3_al.workflows import status
    from dpa3_al.workflows.state import CorruptState

    rows, broken = [], []
    for root in sorted(p for p in args.runs.glob("*") if (p / "state.json").is_file()):
        try:
            state = status(root)
        except CorruptState as err:     # one bad run must not hide the others
            rows.append((root.name, "unreadable", "-", "-", "-"))
            broken.append(str(err))
            continue
        word = state.status
        if word == "succeeded" and run_problems(root, state):
            word = "succeeded with failures"
        rows.append((root.name, word, "-" if state.iteration is None else str(state.iteration),
                     state.stage or "-", time.strftime("%Y-%m-%d %H:%M", time.localtime(state.updated))))
    if not rows:
        print(f"no runs under {args.runs}/")
        return 0
    widths = [max(len(r[i]) for r in rows + [("run", "status", "iter", "stage", "updated")]) for i in range(5)]
    for row in [("run", "status", "iter", "stage", "updated"), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    for line in broken:
        print(f"  {line}", file=sys.stderr)
    return 1 if broken else 0


def cmd_render(args) -> int:
    from dpa3_al.workflows import render

    cfg, plan, _ = _load(args.config)
    text = render(plan, args.name or cfg.name)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}: the complete Argo Workflow. Its input artifacts (initial data, "
              f"checkpoints) are referenced in S3 under dpa3-al/<run>/inputs/; 'dpa3-al submit' uploads them, "
              f"so upload them yourself before a plain 'argo submit {args.output}'")
    else:
        sys.stdout.write(text)
    return 0


def cmd_download(args) -> int:
    from dpa3_al.workflows.argo_run import download
    from dpa3_al.workflows import Plan
    from dpa3_al.workflows.rundir import RunDir

    run = RunDir(run_root(args.run, args.runs))
    plan = Plan.read(run.plan_file)
    state = download(run, plan)
    print(f"{run.root}: {len(state.published)} steps' outputs in the run directory")
    return 0


# ----------------------------------------------------------------------------- progress
def latest_selection(root: Path):
    """(iteration, SelectionReport) of the newest iteration whose selection.json is readable."""
    from dpa3_al.select import SelectionReport

    for sel in sorted(root.glob("iter-*/select/selection.json"), reverse=True):
        try:
            return int(sel.parent.parent.name.split("-")[1]), SelectionReport.read(sel)
        except (OSError, ValueError):
            continue
    return None


def dataset_frames(root: Path) -> int | None:
    """Frames in the run's current dataset (from its commit files), None if there is none yet."""
    index = root / "dataset" / "index"
    if not index.is_dir():
        return None
    total = 0
    for commit in index.glob("add-*.json"):
        try:
            frames = json.loads(commit.read_text()).get("frames") or []
            total += len(frames) if isinstance(frames, list) else 0
        except (OSError, ValueError, AttributeError):   # unreadable, or not a commit object
            continue
    return total


def _by_reason(counter) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counter.items()))


def _label_problems(folder: Path) -> str | None:
    """'6 of 8 labels failed (reason n, ...)' for one iteration folder, None when none failed."""
    from collections import Counter

    from dpa3_al.label.taskdir import LabelStatus

    root = folder / "label"
    ok, failed = 0, Counter()
    for path in sorted({*root.glob("task-*/status.json"), *root.glob("*/task-*/status.json")}):
        try:
            record = LabelStatus.read(path.parent)
        except (OSError, ValueError):
            continue
        if record.status == "ok":
            ok += 1
        else:
            failed[str(record.reason or "unknown")] += 1
    n = sum(failed.values())
    return f"{n} of {n + ok} labels failed ({_by_reason(failed)})" if n else None


def _explore_problems(folder: Path) -> str | None:
    """'1 of 6 MD tasks stopped early (reason n)' for one iteration folder, None when none did."""
    from collections import Counter

    from dpa3_al.explore.status import task_outcome

    tasks = sorted(p for p in (folder / "explore").glob("task-*") if p.is_dir())
    stopped = Counter(o.split(":", 1)[1] for o in map(task_outcome, tasks) if o.startswith("stopped_early:"))
    n = sum(stopped.values())
    return f"{n} of {len(tasks)} MD tasks stopped early ({_by_reason(stopped)})" if n else None


def run_problems(root: Path, state) -> list[str]:
    """What went wrong in a run without failing it, one line per iteration: labels that failed,
    MD tasks that stopped early, fan-out tasks that failed (tolerated by the success ratio)."""
    lines = []
    for folder in sorted(root.glob("iter-*")):
        try:
            index = int(folder.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        found = [p for p in (_label_problems(folder), _explore_problems(folder)) if p]
        groups = [s for s in state.steps.values() if s.iteration == index and s.tasks_total and s.phase == "Succeeded"]
        for name in sorted({s.name for s in groups}):
            mine = [s for s in groups if s.name == name]
            n = sum(s.tasks_total - (s.tasks_ok or 0) for s in mine)
            if n > 0:
                found.append(f"{name}: {n} of {sum(s.tasks_total for s in mine)} tasks failed (tolerated)")
        if found:
            lines.append(f"iteration {index}: " + "; ".join(found))
    return lines


def final_model_line(root: Path) -> str | None:
    """The final model the run names (``final/final.json``, written by the final-evaluate step)."""
    from dpa3_al.evaluation import FinalChoice

    choice = FinalChoice.read(root / "final")
    if choice is None:
        return None
    return (f"final model: {root / 'final' / choice.model} (member {choice.member}: {choice.reason}); "
            f"committee {root / 'final' / 'committee'}")


def describe(root: Path, state) -> list[str]:
    """Human-readable status lines of a run."""
    where = "not started" if state.iteration is None else f"iteration {state.iteration}, step {state.stage}"
    counts = ", ".join(f"{n} {phase.lower()}" for phase, n in sorted(state.counts().items()))
    problems = run_problems(root, state)
    word = "succeeded with failures" if state.status == "succeeded" and problems else state.status
    lines = [f"run {state.name} ({state.engine}): {word}; {where}", f"  steps: {counts or 'none yet'}"]
    running = [s for s in state.steps.values() if s.phase == "Running" and s.tasks_total]
    for s in running[:4]:
        lines.append(f"  {s.key}: {s.tasks_ok or 0}/{s.tasks_total} tasks")
    sel = latest_selection(root)
    if sel:
        it, data = sel
        lv = data.levels
        ratios = (f"accurate {data.ratio('accurate'):.2f}, candidate {data.ratio('candidate'):.2f}, "
                  f"failed {data.ratio('failed'):.2f}" if data.n_frames else "no frames recorded")
        lines.append(f"  iteration {it} exploration: {data.n_frames} frames; {ratios}; trust levels "
                     f"f_lo {lv.f_lo:.4g} f_hi {lv.f_hi:.4g} eV/Å; selected {data.n_selected}")
    frames = dataset_frames(root)
    if frames is not None:
        lines.append(f"  dataset: {frames} labeled frames ({root / 'dataset'})")
    final = final_model_line(root)
    if final:
        lines.append(f"  {final}")
    if state.message:
        lines.append(f"  {state.message}")
    lines += [f"  {line}" for line in problems]
    for f in state.failures[:5]:
        lines.append(f"  failed: {f.key}: {f.reason} (log: {f.log})")
    return lines


def _follow(root: Path) -> int:
    """Live progress until the run ends; one line per change (or an updating line on a TTY)."""
    from dpa3_al.workflows import wait

    tty = sys.stderr.isatty()
    last = [""]

    def show(state) -> None:
        sel = latest_selection(root)
        acc = f" · accurate {sel[1].ratio('accurate'):.2f}" if sel else ""
        frames = dataset_frames(root)
        data = f" · dataset {frames}" if frames is not None else ""
        c = state.counts()
        line = (f"{state.status}: iteration {state.iteration if state.iteration is not None else '-'} "
                f"{state.stage or ''} · steps {c.get('Succeeded', 0)} done, {c.get('Running', 0)} running{acc}{data}")
        if line != last[0]:
            sys.stderr.write(("\r" + line.ljust(100)) if tty else (time.strftime("[%H:%M:%S] ") + line + "\n"))
            sys.stderr.flush()
            last[0] = line

    try:
        final = wait(root, None, 2.0, show)
    except KeyboardInterrupt:
        print(f"\nstopped following; the run goes on in the background ({root}). "
              f"'dpa3-al stop {root}' stops it.", file=sys.stderr)
        return 130
    if tty:
        sys.stderr.write("\n")
    print("\n".join(describe(root, final)))
    return 0 if final.status == "succeeded" else 1
