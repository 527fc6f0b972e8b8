"""The local step runner: retries and timeouts for dflow's debug mode.

dflow's debug (local) mode ignores the retry strategy and the timeout of a template, so
every step template of the ``local`` and ``dispatcher`` engines is started through this
runner instead of directly::

    python -m dpa3_al.workflows.runner --timeout 600 --retries 2 -- /venv/bin/python  <script>

dflow appends the step's generated script to the command. The runner starts the rest of
its command line in a new process group, kills the whole group when the step runs past
``--timeout`` seconds (SIGTERM, then SIGKILL after ``--grace`` seconds), and starts it
again up to ``--retries`` more times. Exit status 2 (dflow's ``FatalError``) is not
retried, and neither is a failure that would repeat itself: the runner passes the step's
output through (to dflow's ``log.txt``), keeps its tail, and reads the last exception line;
an error of the input or the installation (``UserError``, ``ConfigError``,
``LabelerUnavailable``, ``ImportError``, ... see :data:`DETERMINISTIC`) fails the step at
once. Each attempt is recorded in ``runner.json`` next to the script (the dflow step
directory) with that error line, which the run monitor shows as the step's reason.

When the environment names a zygote (``DPA3_AL_ZYGOTE``, see :mod:`.zygote`), the step is
forked from that preloaded interpreter instead of started afresh (same command, ~0.5 s
less start-up). When the environment names the driver process (``DPA3_AL_DRIVER_PID``), the runner also
stops its step when that process dies (``kill -9`` of the driver), so a resumed run never
races an orphaned copy of the same step.

Stdlib only: this module starts once per step, so it must start fast.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .zygote import request

log = logging.getLogger("dpa3_al.runner")

DRIVER_ENV = "DPA3_AL_DRIVER_PID"
RECORD_NAME = "runner.json"
FATAL_EXIT = 2          # dflow.python.FatalError
TIMEOUT_EXIT = 124      # as coreutils timeout(1)
ORPHAN_EXIT = 137
#: exception class names (the last part of the traceback's last line) that fail the same way on
#: every attempt: bad input or configuration, a missing program, module or function
DETERMINISTIC = frozenset({
    "UserError", "ConfigError", "InputError", "CheckpointError", "MemoryEstimateError", "LabelerUnavailable",
    "FunctionNotFound", "ImportError", "ModuleNotFoundError", "SyntaxError", "FatalError"})
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Unavailable|NotFound|Exit))(?::\s.*)?$")


def error_line(lines) -> tuple[str, str]:
    """(the last exception line of a log, its class name), ("", "") when there is none."""
    for line in reversed(list(lines)):
        match = _ERROR_LINE.match(line.strip())
        if match:
            return line.strip()[:400], match.group(1)
    return "", ""


@dataclass
class Attempt:
    """One try of a step: exit status, wall time (s), and why it ended."""

    attempt: int
    returncode: int
    seconds: float
    timed_out: bool = False
    orphaned: bool = False
    error: str = ""                  # the last exception line of the attempt's output
    deterministic: bool = False      # that exception fails the same way every time: not retried


@dataclass
class RunRecord:
    """What the runner did for one step (written to ``runner.json``)."""

    command: list[str]
    timeout: float | None
    retries: int
    attempts: list[Attempt] = field(default_factory=list)

    def write(self, path: Path) -> None:
        from dpa3_al.common.fileio import atomic_write_text

        atomic_write_text(path, json.dumps(asdict(self), indent=1))


class OutputTail:
    """Passes this process's stdout/stderr (and so every child's) through a pipe, forwarding
    everything to the original stdout and keeping the last lines of each attempt."""

    def __init__(self, keep: int = 200) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._marks: dict[str, threading.Event] = {}
        sys.stdout.flush()
        sys.stderr.flush()
        self._out = os.dup(1)
        read, write = os.pipe()
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        self._reader = threading.Thread(target=self._pump, args=(read,), daemon=True)
        self._reader.start()

    def _pump(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for raw in pipe:
                text = raw.decode("utf-8", "replace").rstrip("\n")
                mark = next((m for m in list(self._marks) if text.endswith(m)), None)
                if mark is not None:        # maybe after a last line that had no newline
                    text, raw = text[:-len(mark)], text[:-len(mark)].encode() + b"\n"
                if mark is None or text:
                    self.lines.append(text)
                    os.write(self._out, raw)
                if mark is not None:
                    self._marks.pop(mark).set()

    def take(self, timeout: float = 5.0) -> list[str]:
        """The lines seen since the last call (everything the exited child wrote is read first)."""
        mark = f"\0dpa3-al-runner-mark-{time.monotonic_ns()}"
        event = self._marks[mark] = threading.Event()
        os.write(1, (mark + "\n").encode())
        event.wait(timeout)
        lines = list(self.lines)
        self.lines.clear()
        return lines


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time) of a process from /proc, None if it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], fields[19]


class Driver:
    """The driver process whose death stops the step (zombie or reused pid = dead)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        stat = _proc_stat(pid) if pid else None
        self.start = stat[1] if stat else None

    def alive(self) -> bool:
        if self.pid is None:
            return True
        if self.start is None:          # no /proc: fall back to signal 0
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
            return True
        stat = _proc_stat(self.pid)
        return stat is not None and stat[0] not in "ZX" and stat[1] == self.start


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after ``grace`` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure its group is gone too
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def run_once(cmd: list[str], timeout: float | None, grace: float, driver: Driver,
             number: int) -> Attempt:
    """Run ``cmd`` once in its own process group, enforcing ``timeout`` (s)."""
    start = time.monotonic()
    proc = request(cmd) or subprocess.Popen(cmd, start_new_session=True)
    forward = _install_forwarding(proc, grace)
    try:
        while True:
            try:
                rc = proc.wait(timeout=1.0)
                return Attempt(number, rc, time.monotonic() - start)
            except subprocess.TimeoutExpired:
                pass
            elapsed = time.monotonic() - start
            if timeout is not None and elapsed > timeout:
                log.error("step timed out after %.1f s (limit %.1f s); killing it", elapsed, timeout)
                _kill_group(proc, grace)
                return Attempt(number, TIMEOUT_EXIT, time.monotonic() - start, timed_out=True)
            if not driver.alive():
                log.error("driver process %s is gone; stopping this step", driver.pid)
                _kill_group(proc, grace)
                return Attempt(number, ORPHAN_EXIT, time.monotonic() - start, orphaned=True)
    finally:
        forward()


def _install_forwarding(proc: subprocess.Popen, grace: float):
    """Pass SIGTERM/SIGINT sent to the runner on to the step's process group."""
    def handler(signum, frame):  # noqa: ARG001
        _kill_group(proc, grace)
        sys.exit(128 + signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    return lambda: [signal.signal(sig, h) for sig, h in old.items()]


def _clean_outputs(script: Path) -> None:
    """Remove the outputs a failed attempt left in a dflow step directory."""
    outputs = script.parent / "workdir" / "tmp" / "outputs"
    if script.name == "script" and outputs.is_dir():
        shutil.rmtree(outputs, ignore_errors=True)


def run(cmd: list[str], timeout: float | None = None, retries: int = 0, grace: float = 5.0,
        record: Path | None = None, tail: OutputTail | None = None) -> int:
    """Run a step command with retries and a timeout; returns the final exit status.
    ``tail`` (the step's output) lets the runner see why an attempt failed."""
    driver = Driver(int(os.environ[DRIVER_ENV]) if os.environ.get(DRIVER_ENV) else None)
    rec = RunRecord(cmd, timeout, retries)
    rc = 0
    for number in range(1, retries + 2):
        if number > 1:
            _clean_outputs(Path(cmd[-1]))
            log.warning("retrying step (attempt %d of %d)", number, retries + 1)
        attempt = run_once(cmd, timeout, grace, driver, number)
        if tail is not None:
            lines = tail.take()
            if attempt.returncode not in (0, ORPHAN_EXIT) and not attempt.timed_out:
                attempt.error, name = error_line(lines)
                attempt.deterministic = name in DETERMINISTIC
        rec.attempts.append(attempt)
        if record is not None:
            rec.write(record)
        rc = attempt.returncode
        if rc == 0 or rc == FATAL_EXIT or attempt.orphaned:
            break
        log.error("attempt %d failed with exit status %d%s", number, rc, f": {attempt.error}" if attempt.error else "")
        if attempt.deterministic and number <= retries:
            log.error("not retried: this error fails the same way every time (fix the input, then resume)")
            break
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpa3_al.workflows.runner",
                                     description="Run one workflow step with retries and a timeout.")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per attempt")
    parser.add_argument("--retries", type=int, default=0, help="extra attempts after a failure")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command (dflow appends the script)")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given after --")
    logging.basicConfig(level=logging.INFO, format="[dpa3-al runner] %(levelname)s %(message)s",
                        stream=sys.stderr)
    script = Path(cmd[-1])
    record = script.parent / RECORD_NAME if script.is_file() else None
    tail = OutputTail()
    try:
        return run(cmd, args.timeout, args.retries, args.grace, record, tail)
    finally:
        for handler in logging.getLogger().handlers:
            handler.flush()
        tail.take()             # forward what the runner itself printed last before exiting


if __name__ == "__main__":
    sys.exit(main())
