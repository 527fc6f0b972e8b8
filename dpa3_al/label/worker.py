"""Run Python calculators in a child process, so that a hang or a segfault costs one frame.

The parent (:class:`CalcWorker`) starts ``python -m dpa3_al.label.worker`` in its own
process group, sends it a :class:`BackendSpec` once, then one frame at a time. A frame that
takes longer than the timeout gets the whole process group killed (grandchildren such as
``cp2k_shell`` included) and fails with reason ``timeout``; a child that dies fails the frame
with reason ``crash``. The next frame starts a fresh child. The child is started once per
``label`` call, not per frame, so small frames are not dominated by start-up (~0.3 s).

Messages are pickled tuples with an 8-byte length prefix over the child's stdin/stdout; the
child moves anything libraries print on stdout to its log file (stderr).
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import select
import signal
import struct
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .results import LabelError

__all__ = ["BackendSpec", "CalcWorker", "ScfNotConverged", "Unsupported", "classify_exception", "thread_env",
           "die_with_parent"]

_HEADER = struct.Struct("<Q")
SETUP_TIMEOUT = 300.0  # s for the child to import its backend (torch, pyscf) and build it


class ScfNotConverged(RuntimeError):
    """Raised by backends when the SCF stopped without converging."""


class Unsupported(RuntimeError):
    """Raised by backends for a frame the method cannot handle (element, periodicity)."""


@dataclass(frozen=True)
class BackendSpec:
    """Where the child finds the backend: ``module.factory(settings)`` -> object with ``compute``."""

    module: str
    factory: str
    settings: Any


def thread_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a labeling process with ``threads`` OpenMP/BLAS threads."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[key] = str(threads)
    env.update(extra or {})
    return env


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere).

    Used for workers and external programs, which run in their own process group: without
    it a killed labeling run would leave them computing (or hanging) as orphans.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def classify_exception(err: BaseException) -> str:
    """Failure reason for an exception raised while computing a frame."""
    if isinstance(err, ScfNotConverged) or re.search(r"not\s+converge", str(err), re.IGNORECASE):
        return "scf_not_converged"
    if isinstance(err, (Unsupported, NotImplementedError)):
        return "unsupported"
    return "crash"


class CalcWorker:
    """Parent side: one child process computing frames with a per-frame timeout."""

    def __init__(self, spec: BackendSpec, *, threads: int = 1, env: dict[str, str] | None = None):
        self.spec = spec
        self.threads = threads
        self.env = env or {}
        self._proc: subprocess.Popen | None = None
        self._log_path: Path | None = None

    def compute(self, atoms: Any, task_dir: Path, timeout: float) -> dict[str, Any]:
        """Energy/forces/stress of ``atoms`` computed in the child, with cwd ``task_dir``."""
        log_path = task_dir / "worker.log"
        if self._proc is None or self._proc.poll() is not None:
            self._start(log_path)
        else:
            self._send(("log", str(log_path)))
        self._send(("compute", atoms, str(task_dir)))
        reply = self._receive(timeout, what="the frame")
        if reply[0] == "ok":
            return reply[1]
        raise LabelError(reply[1], reply[2])

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self._write(proc, ("exit",))
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                _kill_group(proc)
        for stream in (proc.stdin, proc.stdout):
            if stream:
                stream.close()

    def _start(self, log_path: Path) -> None:
        self.close()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = thread_env(self.threads, self.env)
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in sys.path if p)
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen([sys.executable, "-m", "dpa3_al.label.worker"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=log, env=env, start_new_session=True)
        self._log_path = log_path
        self._send(("setup", self.spec, str(log_path)))
        reply = self._receive(max(SETUP_TIMEOUT, 0.0), what="the labeler set-up")
        if reply[0] != "ok":
            self.close()
            raise LabelError("crash", f"the labeling worker could not start: {reply[2]}")

    def _send(self, message: tuple) -> None:
        try:
            self._write(self._proc, message)
        except (BrokenPipeError, OSError, ValueError):
            raise self._died() from None

    @staticmethod
    def _write(proc: subprocess.Popen, message: tuple) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        proc.stdin.write(_HEADER.pack(len(data)) + data)
        proc.stdin.flush()

    def _receive(self, timeout: float, what: str) -> tuple:
        deadline = time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        header = _read_exactly(fd, _HEADER.size, deadline)
        if header is None:
            return self._timed_out(timeout, what)
        if not header:
            raise self._died()
        body = _read_exactly(fd, _HEADER.unpack(header)[0], deadline)
        if body is None:
            return self._timed_out(timeout, what)
        if not body:
            raise self._died()
        return pickle.loads(body)

    def _timed_out(self, timeout: float, what: str) -> tuple:
        _kill_group(self._proc)
        self.close()
        raise LabelError("timeout", f"no result for {what} after {timeout:g} s; the worker was killed")

    def _died(self) -> LabelError:
        proc = self._proc
        rc = proc.wait() if proc else None
        self.close()
        how = f"signal {signal.Signals(-rc).name}" if rc is not None and rc < 0 else f"exit status {rc}"
        tail = _tail(self._log_path)
        return LabelError("crash", f"the labeling worker died ({how}); log {self._log_path}: {tail}")


def _read_exactly(fd: int, size: int, deadline: float) -> bytes | None:
    """``size`` bytes; b"" at end of file; None when the deadline passes first."""
    chunks, got = [], 0
    while got < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(fd, size - got)
        if not chunk:
            return b""
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _kill_group(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _tail(path: Path | None, lines: int = 5) -> str:
    if path is None or not path.is_file():
        return "(no log)"
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "(empty log)"


# --------------------------------------------------------------------------- child side


def _child_recv(stream: BinaryIO) -> tuple | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    return pickle.loads(stream.read(_HEADER.unpack(header)[0]))


def _child_send(stream: BinaryIO, message: tuple) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _redirect_log(path: str) -> None:
    """Point fd 1 and 2 at ``path`` (the task's worker.log)."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _error_detail(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)[-1:]
    where = f" at {Path(frames[0].filename).name}:{frames[0].lineno}" if frames else ""
    return f"{type(err).__name__}: {err}{where}"


def child_main() -> None:
    """Serve frames until told to exit (run as ``python -m dpa3_al.label.worker``)."""
    die_with_parent()
    proto_out = os.fdopen(os.dup(1), "wb")
    proto_in = sys.stdin.buffer
    os.dup2(2, 1)  # library prints go to the log, never into the protocol stream
    backend = None
    while (message := _child_recv(proto_in)) is not None:
        kind = message[0]
        if kind == "exit":
            break
        if kind == "log":
            _redirect_log(message[1])
            continue
        try:
            if kind == "setup":
                spec: BackendSpec = message[1]
                _redirect_log(message[2])
                backend = getattr(importlib.import_module(spec.module), spec.factory)(spec.settings)
                _child_send(proto_out, ("ok", None))
            else:
                atoms, cwd = message[1], message[2]
                os.chdir(cwd)
                _child_send(proto_out, ("ok", backend.compute(atoms, Path(cwd))))
        except Exception as err:  # noqa: BLE001 - every failure becomes a record in the parent
            traceback.print_exc()
            _child_send(proto_out, ("error", classify_exception(err), _error_detail(err)))


if __name__ == "__main__":
    child_main()
