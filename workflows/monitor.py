"""Watch a running workflow: step states into ``state.json``, step outputs into the run dir.

dflow's ``submit`` does not raise when steps fail; the monitor reads every step's phase
(``Workflow.query_step``), and for a failed step says why (timeout, exit status, number of
attempts from the runner's ``runner.json``, the success-ratio check's counts) and where
its log is. In local mode it runs as a thread of the driver while ``submit`` blocks, and
once more at the end; for Argo, ``status``/``download`` run it on demand.

The thread only reads and writes files (no printing, no logging to the console): dflow
forks worker processes while it runs.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any, Callable

from .keys import FANOUT_STEPS, STEP_NAMES, parse_step_key
from .rundir import PUBLISH, RunDir
from .runner import RECORD_NAME, error_line
from .state import RunState, StepState

__all__ = ["Monitor", "step_states", "refresh", "summarise_failures"]

_RATIO_RE = re.compile(r"Num success: (\d+)\s+Threshold: ([0-9.]+)")


def _param(io: Any, name: str) -> Any:
    try:
        return io.parameters[name].value
    except (AttributeError, KeyError, TypeError):
        return None


def _step_dir(step: Any, wf_dir: Path | None) -> Path | None:
    return None if wf_dir is None else wf_dir / str(step.id)


def _runner_reason(step_dir: Path) -> tuple[str, int | None]:
    try:
        record = json.loads((step_dir / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return "", None
    attempts = record.get("attempts", [])
    if not attempts:
        return "", 0
    last, n = attempts[-1], len(attempts)
    tries = f"{n} attempt{'s' if n > 1 else ''}"
    if last.get("timed_out"):
        return f"timed out after {record.get('timeout'):g} s ({tries})", n
    if last.get("orphaned"):
        return "stopped: the driver process died", n
    why = f"exit status {last.get('returncode')}, {tries}"
    if last.get("deterministic") and n <= int(record.get("retries") or 0):
        why += "; not retried: it fails the same way every time"
    error = last.get("error") or _log_error(step_dir)
    return (f"{error} ({why})" if error else f"exit status {last.get('returncode')} ({tries})"), n


def _log_error(step_dir: Path) -> str:
    """The last exception line of a step's ``log.txt`` ("" when none)."""
    try:
        with open(step_dir / "log.txt", "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 65536))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return error_line(lines)[0]


def _check_reason(step_dir: Path) -> str:
    try:
        match = _RATIO_RE.search((step_dir / "log.txt").read_text())
    except OSError:
        return "success-ratio check failed"
    if not match:
        return "success-ratio check failed"
    return f"only {match.group(1)} tasks succeeded, {float(match.group(2)):g} needed"


def _group_counts(step: Any, group_size: int) -> tuple[int | None, int | None]:
    tag = _param(getattr(step, "outputs", None), "dflow_success_tag")
    nslices = _param(getattr(step, "inputs", None), "dflow_nslices")
    key = parse_step_key(step.key)
    total = None
    if nslices not in (None, "") and key is not None and key.index is not None:
        total = max(0, min(group_size, int(nslices) - key.index * group_size))
    ok = int(tag) if tag not in (None, "") else (0 if step.phase in ("Failed", "Error") else None)
    return ok, total


def step_states(steps: list[Any], wf_dir: Path | None, group_size: int) -> list[StepState]:
    """Our view of dflow's steps (``Workflow.query_step()`` objects)."""
    out = []
    for step in steps:
        key = parse_step_key(getattr(step, "key", None))
        name = str(getattr(step, "displayName", "") or "")
        sdir = _step_dir(step, wf_dir)
        state = StepState(key=str(step.key) if key else str(step.id), name=key.name if key else name,
                          phase=str(step.phase), iteration=key.iteration if key else None,
                          index=key.index if key else None)
        if sdir is not None and step.type == "Pod":
            state.log = str(sdir / "log.txt")
            reason, state.attempts = _runner_reason(sdir)
            state.reason = reason if state.failed else ""
        if key and key.name in FANOUT_STEPS and step.type == "Pod":
            state.tasks_ok, state.tasks_total = _group_counts(step, group_size)
        if state.failed and name.endswith("-check-success-ratio") and sdir is not None:
            state.reason = f"{name[:-len('-check-success-ratio')]}: {_check_reason(sdir)}"
        out.append(state)
    return out


def _progress(states: list[StepState]) -> tuple[int | None, str | None]:
    """The newest iteration with a started step, and its furthest step name."""
    started = [s for s in states if s.iteration is not None and s.name in STEP_NAMES and s.phase != "Pending"]
    if not started:
        return None, None
    iteration = max(s.iteration for s in started)
    stage = max((s for s in started if s.iteration == iteration), key=lambda s: STEP_NAMES.index(s.name)).name
    return iteration, stage


def summarise_failures(failures: list[StepState]) -> str:
    """One line naming the failed steps, why, and their logs."""
    if not failures:
        return ""
    parts = [f"{f.key} ({f.reason or f.phase}{'; log: ' + f.log if f.log else ''})" for f in failures[:5]]
    more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
    return f"{len(failures)} step(s) failed: " + "; ".join(parts) + more


def refresh(run: RunDir, state: RunState, steps: list[Any], wf_dir: Path | None, group_size: int,
            artifact_path: Callable[[Any, str], Path | None]) -> RunState:
    """Update ``state`` from dflow's steps, publish newly succeeded outputs, write state.json."""
    states = step_states(steps, wf_dir, group_size)
    state.steps = {s.key: s for s in states}
    state.failures = [s for s in states if s.failed and (s.log or s.reason)]
    state.iteration, state.stage = _progress(states)
    published = set(state.published)
    decided = False
    for step, view in zip(steps, states):
        key = parse_step_key(getattr(step, "key", None))
        if key is None or view.phase != "Succeeded" or view.key in published or step.type != "Pod":
            continue
        for (name, artifact) in PUBLISH:
            if name == key.name:
                source = artifact_path(step, artifact)
                if source is not None:
                    run.publish(key, artifact, source)
        decided |= key.name == "decide"
        published.add(view.key)
    state.published = sorted(published)
    run.write_state(state)
    if decided:   # an iteration ended: bring the report up to date
        update_report(run.root)
    return state


def update_report(root: Path) -> None:
    """Rewrite ``root/report/``; a report problem is logged, never fatal to the run."""
    import logging

    try:
        from dpa3_al.report import build_report

        build_report(root)
    except Exception as err:  # noqa: BLE001 - the report must never stop the loop
        logging.getLogger(__name__).warning("report not updated: %s: %s", type(err).__name__, err)


class Monitor(threading.Thread):
    """Calls ``poll()`` every ``interval`` seconds until stopped; errors are kept, not raised."""

    def __init__(self, poll: Callable[[], Any], interval: float) -> None:
        super().__init__(name="dpa3-al-monitor", daemon=True)
        self.poll = poll
        self.interval = interval
        self.errors: list[BaseException] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.poll()
            except Exception as err:  # noqa: BLE001 - a monitor hiccup must not kill the run
                self.errors.append(err)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)
