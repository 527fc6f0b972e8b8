"""The local step runner: retries and timeouts for dflow's debug mode.

dflow's debug (local) mode ignores the retry strategy and the timeout of a template, so
every step template of the ``local`` and ``dispatcher`` engines is started through this
runner instead of directly::

    python -m dpa3_al.workflows.runner --timeout 600 --retries 2 -- /venv/bin/python  <script>

dflow appends the step's generated script to the command. The runner starts the rest of
its command line in a new process group, kills the whole group when the step runs past
``--timeout`` seconds (SIGTERM, then SIGKILL after ``--grace`` seconds), and starts it
again up to ``--retries`` more times. Exit status 2 (dflow's ``FatalError``) is not
retried. Each attempt is recorded in ``runner.json`` next to the script (the dflow step
directory), which the run monitor reads to say why a step failed.

When the environment names a zygote (``DPA3_AL_ZYGOTE``, see :mod:`.zygote`), the step is
forked from that preloaded interpreter instead of started afresh (same command, ~0.5 s
less start-up). When the environment names the driver process (``DPA3_AL_DRIVER_PID``), the runner also
stops its step when that process dies (``kill -9`` of the driver), so a resumed run never
races an orphaned copy of the same step.

Stdlib only: this module starts once per step, so it must start fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
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


@dataclass
class Attempt:
    """One try of a step: exit status, wall time (s), and why it ended."""

    attempt: int
    returncode: int
    seconds: float
    timed_out: bool = False
    orphaned: bool = False


@dataclass
class RunRecord:
    """What the runner did for one step (written to ``runner.json``)."""

    command: list[str]
    timeout: float | None
    retries: int
    attempts: list[Attempt] = field(default_factory=list)

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)


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
        record: Path | None = None) -> int:
    """Run a step command with retries and a timeout; returns the final exit status."""
    driver = Driver(int(os.environ[DRIVER_ENV]) if os.environ.get(DRIVER_ENV) else None)
    rec = RunRecord(cmd, timeout, retries)
    rc = 0
    for number in range(1, retries + 2):
        if number > 1:
            _clean_outputs(Path(cmd[-1]))
            log.warning("retrying step (attempt %d of %d)", number, retries + 1)
        attempt = run_once(cmd, timeout, grace, driver, number)
        rec.attempts.append(attempt)
        if record is not None:
            rec.write(record)
        rc = attempt.returncode
        if rc == 0 or rc == FATAL_EXIT or attempt.orphaned:
            break
        log.error("attempt %d failed with exit status %d", number, rc)
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
    return run(cmd, args.timeout, args.retries, args.grace, record)


if __name__ == "__main__":
    sys.exit(main())
