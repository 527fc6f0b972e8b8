"""Submit, run, resume, stop and inspect runs (the library behind the CLI verbs).

- :func:`submit` makes ``runs/<name>/`` (frozen config, plan, state) and starts the run's
  *driver*, a background process (``python -m dpa3_al.workflows.driver RUN``) whose
  output goes to ``driver.log``; ``wait=True`` returns when it ends.
- The driver holds the run's lock, builds the workflow from ``plan.json`` and, for the
  local engines, runs it (dflow debug mode runs the workflow inside the driver) while a
  monitor thread keeps ``state.json`` and the published outputs up to date. For Argo it
  submits and exits; ``status``/``download`` then ask the server.
- :func:`resume` starts a new driver for an existing run. Local engines restart the same
  dflow workflow: succeeded steps are found by key and skipped, steps that were running
  start again. Argo submits a new workflow reusing the succeeded steps (``reuse_step``).
- :func:`stop` ends the driver and every step process under it.

Handshake: ``submit`` and ``resume`` return only when the new driver has taken the run and
written its ``attempt`` number and pid into ``state.json`` (or has exited, which is an
error naming ``driver.log``), so a :func:`wait` right after them follows the new driver and
never reads the previous one's final status.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from dpa3_al.common.errors import UserError
from dpa3_al.common.typed_config import ConfigError

from .config import WorkflowConfig
from .keys import STEP_NAMES
from .rundir import RunDir
from .runner import DRIVER_ENV
from .spec import LoopSpec, Plan
from .state import CorruptState, RunState

__all__ = ["submit", "resume", "stop", "status", "wait", "run_driver", "check_functions", "render", "make_engine"]

log = logging.getLogger(__name__)
ACTIVE = ("submitted", "running")
HANDSHAKE_S = 120.0     # s a new driver may take to write its first state (a loaded machine)
#: environment defaults of a run's driver and so of every step under it (a value the user set
#: wins). OpenMP threads that spin while waiting steal the cores of a loaded machine (shared
#: nodes, the loop's own parallel steps): one E+F+V call on 1,536 water atoms took 11x less
#: wall time with PASSIVE on a loaded 2-core machine (bench/results/waitpolicy.txt). libgomp
#: reads it once, when torch loads it: it must be in a process's environment before it starts,
#: which is why it is set here and not by the library.
RUN_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def check_functions(loop: LoopSpec) -> None:
    """Fail early (before anything runs) when a step function's module cannot be found."""
    from .ops import OP_MODULES, op_class

    for name in STEP_NAMES + (("bootstrap",) if loop.bootstrap else ()):
        func = loop.calls[name].func if name in loop.calls and loop.calls[name].func else None
        func = func or op_class(name).get_input_sign()["func"].default
        module = func.partition(":")[0] if ":" in func else func.rpartition(".")[0]
        try:
            found = find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(f"calls.{name}.func", f"module {module!r} of step function {func!r} "
                              f"cannot be found (OP {OP_MODULES[name][1]})")


def submit(parent: Path, name: str, plan: Plan, config: dict[str, Any] | None = None, *,
           wait: bool = False, check: bool = True) -> RunDir:
    """Create ``parent/name`` and start its driver; returns the run directory."""
    if check and plan.workflow.engine != "argo":
        check_functions(plan.loop)
    run = RunDir.create(parent, name, config or {}, plan)
    _launch(run, wait=wait)
    return run


def resume(root: Path, *, wait: bool = False) -> RunDir:
    """Start the driver of an existing run again (finished steps are reused).

    Returns once the new driver has written its state (see the module doc). A corrupt
    ``state.json`` of a local run is rebuilt from ``plan.json`` (the driver then reads every
    step's phase from dflow's own records)."""
    run = RunDir(root)
    with run.lock():        # RunBusy when a driver holds the run
        try:
            state = run.read_state()
        except CorruptState as err:
            state = _rebuilt_state(run, err)
        if state.status == "succeeded":
            raise UserError(f"run {run.root} has finished; nothing to resume")
        state.status, state.driver_pid, state.message = "submitted", None, "resuming"
        run.write_state(state)
    _launch(run, wait=wait, resume=True, attempt=state.attempt)
    return run


def _rebuilt_state(run: RunDir, err: CorruptState) -> RunState:
    plan = Plan.read(run.plan_file)
    if plan.workflow.engine == "argo":
        raise UserError(f"{err}; an Argo run's workflow id is lost with it: submit the run again") from None
    log.warning("%s; rebuilding it", err)
    return RunState(name=run.name, engine=plan.workflow.engine, workflow_id=run.name, status="stopped")


def _launch(run: RunDir, *, wait: bool, resume: bool = False, attempt: int = 0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dpa3_al.workflows.driver", str(run.root)] + (["--resume"] if resume else [])
    env = {**RUN_ENV_DEFAULTS, **os.environ}
    with open(run.log_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=run.root, start_new_session=True, env=env)
    _handshake(run, proc, attempt)
    if wait:
        proc.wait()
    return proc


def _handshake(run: RunDir, proc: subprocess.Popen, attempt: int, limit: float = HANDSHAKE_S) -> None:
    """Wait until driver ``proc`` has written attempt ``attempt + 1`` with its pid into the
    state; UserError (naming driver.log) when it exits before that."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            state = run.read_state()
            if state.attempt > attempt and state.driver_pid == proc.pid:
                return
        except (UserError, OSError):
            pass                        # being replaced right now: look again
        code = proc.poll()
        if code is not None:
            raise UserError(f"the driver of {run.root} exited at once (exit status {code}): "
                            f"{_last_line(run.log_file)}; see {run.log_file}")
        time.sleep(0.05)
    log.warning("the driver of %s (pid %d) has not written its state after %g s", run.root, proc.pid, limit)


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1][:300] if lines else "no output"


def status(root: Path) -> RunState:
    """The run's state; a local run whose driver died shows as ``stopped`` with a hint."""
    run = RunDir(root)
    state = run.read_state()
    if state.status in ACTIVE and state.engine != "argo" and run.holder() is None and state.driver_pid:
        state.status = "stopped"
        state.message = f"the driver (pid {state.driver_pid}) is not running; resume with: dpa3-al resume {run.root}"
    return state


def wait(root: Path, timeout: float | None = None, interval: float = 1.0, on_update=None) -> RunState:
    """Block until the run has ended (succeeded, failed, stopped); ``on_update(state)`` is
    called after each look (a progress view). Raises TimeoutError after ``timeout`` s."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        state = status(root)
        if on_update is not None:
            on_update(state)
        if state.status not in ACTIVE:
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"run {root} still {state.status} after {timeout:g} s (stage {state.stage})")
        time.sleep(interval)


def stop(root: Path, grace: float = 10.0) -> RunState:
    """Terminate the run's driver and all its step processes; state becomes ``stopped``."""
    import psutil

    run = RunDir(root)
    pid = run.holder()
    if pid and pid > 0:
        try:
            procs = [psutil.Process(pid)]
            procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            procs = []
        for proc in reversed(procs):
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive:
            proc.kill()
    with run.lock():
        state = run.read_state()
        if state.status in ACTIVE:
            state.status, state.message = "stopped", "stopped by user"
            run.write_state(state)
    return state


# -- the driver process ---------------------------------------------------------------------
def _forget_dead_driver(wf_dir: Path) -> None:
    """dflow refuses to restart a debug workflow whose recorded pid looks alive; the pid of
    our dead driver may have been reused, so point it at a pid that cannot exist."""
    pid_file = wf_dir / "pid"
    if pid_file.is_file():
        pid_file.write_text(str(2**31 - 1))


def _die_with_parent() -> None:
    """In dflow's forked worker processes: get SIGKILL when the driver dies (Linux), so a
    ``kill -9`` of the driver leaves no worker behind. The step runners under them notice
    the driver's death themselves and stop their steps cleanly."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)          # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != _FORK_PARENT.get("pid"):
        os._exit(1)                            # the parent died before prctl took effect


def _note_fork_parent() -> None:
    _FORK_PARENT["pid"] = os.getpid()


_FORK_PARENT: dict[str, int] = {}


def _local_artifact_path(wf_dir: Path):
    def path(step: Any, name: str) -> Path | None:
        own = wf_dir / str(step.id) / "workdir" / "tmp" / "outputs" / "artifacts" / name
        if own.is_dir():   # a slice's own outputs, not the merged folder of its fan-out
            return own
        try:
            return Path(step.outputs.artifacts[name].local_path)
        except (AttributeError, KeyError, TypeError):
            return None
    return path


def run_driver(root: Path, resume: bool = False) -> RunState:
    """Body of the driver process: run the workflow of ``root`` (see module doc)."""
    run = RunDir(root)
    with run.lock():
        state = run.read_state()
        state.driver_pid, state.status, state.message = os.getpid(), "running", ""
        state.attempt += 1
        run.write_state(state)      # the handshake submit/resume wait for
        try:
            plan = Plan.read(run.plan_file)
            preflight_labeler(plan)
            if plan.workflow.engine == "argo":
                from .argo_run import submit_argo

                return submit_argo(run, plan, state, resume)
            return _run_local(run, plan, state)
        except BaseException as err:
            state.status = "stopped" if isinstance(err, KeyboardInterrupt) else "failed"
            state.message = (str(err) if isinstance(err, UserError) else
                             f"driver error: {type(err).__name__}: {err} (see {run.log_file})")
            run.write_state(state)
            raise


def preflight_labeler(plan: Plan) -> None:
    """At the start of a run (every driver): the project's labeler must be able to run where
    run-label runs here (LabelerUnavailable otherwise), before anything is trained."""
    call = plan.loop.calls.get("run-label")
    wf = plan.workflow
    here = wf.engine == "local" or (wf.engine == "dispatcher" and "run-label" not in wf.dispatcher.steps)
    if call is None or call.func or not isinstance(call.config.get("label"), dict) or not here:
        return
    from dpa3_al.label import make_labeler

    train = plan.loop.calls.get("train")
    model = (train.config.get("model") or {}) if train is not None else {}
    make_labeler(call.config["label"]).preflight(model.get("type_map") or ())


def make_engine(cfg: WorkflowConfig, workdir: Path | None = None):
    """The engine named by ``cfg.engine`` (``workdir``: the run's ``.dflow`` folder)."""
    if cfg.engine == "argo":
        from .argo import ArgoEngine

        return ArgoEngine(cfg, workdir)
    from .engine import DispatcherEngine, LocalEngine

    if cfg.engine == "local":
        return LocalEngine(cfg, workdir)
    if cfg.engine == "dispatcher":
        return DispatcherEngine(cfg, workdir)
    raise ValueError(f"unknown engine {cfg.engine!r}")


def _run_local(run: RunDir, plan: Plan, state: RunState) -> RunState:
    from .loop import build_workflow
    from .monitor import Monitor, refresh, summarise_failures, update_report

    engine = make_engine(plan.workflow, run.dflow_dir)
    engine.configure()
    wf_dir = run.dflow_dir / state.workflow_id
    _forget_dead_driver(wf_dir)
    wf = build_workflow(engine, plan.loop, name=run.name, workflow_id=state.workflow_id)
    os.environ[DRIVER_ENV] = str(os.getpid())
    if not _FORK_PARENT:
        _note_fork_parent()
        os.register_at_fork(before=_note_fork_parent, after_in_child=_die_with_parent)
    artifact_path = _local_artifact_path(wf_dir)

    def poll() -> RunState:
        steps = wf.query_step() if wf_dir.is_dir() else []
        return refresh(run, state, steps, wf_dir, plan.workflow.group_size, artifact_path)

    monitor = Monitor(poll, plan.workflow.local.poll_interval)
    with engine.session():
        monitor.start()
        try:
            wf.submit()
        finally:
            monitor.stop()
    phase = wf.query_status()
    poll()
    state.status = "succeeded" if phase == "Succeeded" else "failed"
    state.message = summarise_failures(state.failures) if state.status == "failed" else ""
    if state.status == "failed" and not state.message:
        state.message = f"workflow {phase}; see {run.log_file}"
    run.write_state(state)
    update_report(run.root)
    return state


def render(plan: Plan, name: str = "run", *, normalise: bool = False) -> str:
    """The Argo Workflow YAML of ``plan`` (offline; any engine setting is rendered as argo)."""
    from .argo import ArgoEngine, deterministic_names, render_yaml
    from .loop import build_workflow

    cfg = plan.workflow.replace(engine="argo")
    engine = ArgoEngine(cfg, offline=True, run_name=name)
    engine.configure()
    with deterministic_names():
        wf = build_workflow(engine, plan.loop, name=name)
        return render_yaml(wf, normalise=normalise)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpa3_al.workflows.driver",
                                     description="Run the workflow of one run directory (the run's driver).")
    parser.add_argument("run", type=Path, help="run directory (runs/<name>)")
    parser.add_argument("--resume", action="store_true", help="restart, reusing finished steps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    start = time.time()
    try:
        state = run_driver(args.run, resume=args.resume)
    except UserError as err:
        print(f"dpa3-al driver: error: {err}", file=sys.stderr)
        return 1
    log.info("run %s: %s after %.1f s %s", args.run, state.status, time.time() - start, state.message)
    return 0 if state.status in ("succeeded", "running") else 1


if __name__ == "__main__":
    sys.exit(main())
