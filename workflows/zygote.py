"""A preloaded interpreter that forks step processes (the local engines' start-up saver).

Every dflow step script starts with ``import dflow`` (about 0.5 s, most of a small step's
cost). The driver therefore starts one *zygote*: a process that imports dflow and our OP
modules once, then listens on a Unix socket. The step runner asks it to start the step
script instead of starting a new interpreter; the zygote forks, and the child (already
holding every import) runs the script as ``__main__`` in its own session, with the
runner's stdin/stdout/stderr (passed over the socket), working directory and environment.

The runner keeps full control: it learns the child's pid (timeouts kill the child's process
group), and gets its exit status over the socket. A request the zygote cannot serve (another
interpreter, zygote gone) makes the runner start the command itself, as without a zygote.

Protocol (one connection per step): runner -> ``{"argv": [...], "cwd": ..., "env": {...}}``
with 3 file descriptors; zygote child -> ``{"pid": N}`` then ``{"exit": code}``, or
``{"error": why}``. Messages are JSON lines.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["serve", "request", "preloaded", "ZygoteProcess", "ZYGOTE_ENV", "PRELOAD"]

ZYGOTE_ENV = "DPA3_AL_ZYGOTE"
FOLDER_PREFIX = "dpa3-al-"      # the socket's folder in the temporary directory (a short path)
SOCKET_NAME = "zygote.sock"
PRELOAD = ["dflow.python", "dflow.python.utils",
           "dpa3_al.workflows.ops.train", "dpa3_al.workflows.ops.prep_explore",
           "dpa3_al.workflows.ops.run_explore", "dpa3_al.workflows.ops.select_candidates",
           "dpa3_al.workflows.ops.prep_label", "dpa3_al.workflows.ops.run_label",
           "dpa3_al.workflows.ops.collect", "dpa3_al.workflows.ops.decide"]


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall((json.dumps(message) + "\n").encode())


def _recv_line(conn: socket.socket, buffer: bytearray) -> dict | None:
    while b"\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer.extend(chunk)
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return json.loads(line)


# -- zygote side ---------------------------------------------------------------------------------
def _run_script(argv: list[str]) -> int:
    import runpy

    script = argv[1]
    sys.argv = argv[1:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the step's own failure: report like python would
        import traceback

        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    return code


def _child(conn: socket.socket) -> None:
    """In the forked child: take over the runner's request and run the script."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)       # the zygote's own handler is not the step's
    fds = array.array("i")
    msg, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    req = _recv_line(conn, bytearray(msg))
    if req is None:
        os._exit(0)
    argv = req["argv"]
    same = len(argv) == 2 and os.path.abspath(argv[0]) == os.path.abspath(sys.executable)
    if not same or len(fds) != 3:
        _send(conn, {"error": f"not served by this zygote ({sys.executable}): {argv[:1]}"})
        os._exit(0)
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    _send(conn, {"pid": os.getpid()})
    code = _run_script(argv)
    try:
        _send(conn, {"exit": code})
    finally:
        os._exit(code if 0 <= code < 256 else 1)


def serve(path: str, parent: int | None, preload: list[str]) -> None:
    """Import ``preload``, then fork one child per request until ``parent`` dies."""
    for module in preload:
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(1.0)
    print("ready", flush=True)
    while parent is None or os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            _reap()
            continue
        if os.fork() == 0:
            listener.close()
            conn.settimeout(None)
            _child(conn)
        conn.close()
        _reap()


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@contextlib.contextmanager
def preloaded(python: str, enabled: bool = True, extra: list[str] | tuple[str, ...] = ()) -> Iterator[None]:
    """Run a zygote with interpreter ``python`` while the block runs; runners started inside
    the block (they inherit the environment) use it."""
    if not enabled:
        yield
        return
    sweep_stale()
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    path = folder / SOCKET_NAME
    proc = subprocess.Popen([python, "-m", "dpa3_al.workflows.zygote", "--socket", str(path),
                             "--parent", str(os.getpid()), "--preload", ",".join(extra)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        ready = proc.stdout.readline().strip() == b"ready"
        if ready:
            os.environ[ZYGOTE_ENV] = str(path)
        else:
            logging.getLogger(__name__).warning("the step preloader did not start; each step starts a fresh interpreter")
        yield
    finally:
        os.environ.pop(ZYGOTE_ENV, None)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(folder, ignore_errors=True)


# -- runner side ---------------------------------------------------------------------------------
class ZygoteProcess:
    """A step process started by the zygote; the subset of ``subprocess.Popen`` the runner uses."""

    def __init__(self, conn: socket.socket, pid: int, buffer: bytearray) -> None:
        self.conn, self.pid, self._buffer = conn, pid, buffer
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        self.conn.settimeout(timeout)
        try:
            message = _recv_line(self.conn, self._buffer)
        except socket.timeout:
            raise subprocess.TimeoutExpired(["zygote", str(self.pid)], timeout) from None
        except OSError:
            message = None
        # no message: the child died without reporting (killed by a signal)
        self.returncode = int(message["exit"]) if message and "exit" in message else -signal.SIGKILL
        self.conn.close()
        return self.returncode


def request(cmd: list[str], timeout: float = 5.0) -> ZygoteProcess | None:
    """Ask the zygote named in the environment to start ``cmd``; None = start it yourself."""
    path = os.environ.get(ZYGOTE_ENV)
    if not path or len(cmd) != 2:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(path)
        payload = (json.dumps({"argv": cmd, "cwd": os.getcwd(), "env": dict(os.environ)}) + "\n").encode()
        fds = array.array("i", [0, 1, 2])
        conn.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
        buffer = bytearray()
        reply = _recv_line(conn, buffer)
    except OSError:
        conn.close()
        return None
    if not reply or "pid" not in reply:
        conn.close()
        return None
    return ZygoteProcess(conn, int(reply["pid"]), buffer)


def _remove_folder(socket_path: Path) -> None:
    """Remove the socket and its folder (when it is one of ours and nothing else is in it)."""
    with contextlib.suppress(OSError):
        socket_path.unlink()
    if socket_path.parent.name.startswith(FOLDER_PREFIX):
        with contextlib.suppress(OSError):
            socket_path.parent.rmdir()


def sweep_stale(min_age: float = 60.0) -> list[Path]:
    """Remove socket folders that zygotes killed with SIGKILL left behind: folders named
    ``dpa3-al-*`` in the temporary directory, older than ``min_age`` s, holding nothing or a
    socket nobody listens on. Returns the folders removed."""
    import time

    removed = []
    for folder in Path(tempfile.gettempdir()).glob(FOLDER_PREFIX + "*"):
        try:
            st = folder.lstat()
            names = [p.name for p in folder.iterdir()]
        except OSError:
            continue
        if not folder.is_dir() or folder.is_symlink() or st.st_uid != os.getuid() \
                or time.time() - st.st_mtime < min_age or set(names) - {SOCKET_NAME}:
            continue
        if names and _listening(folder / SOCKET_NAME):
            continue
        _remove_folder(folder / SOCKET_NAME)
        if not folder.exists():
            removed.append(folder)
    return removed


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpa3_al.workflows.zygote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="Unix socket path to listen on")
    parser.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--preload", default="", help="more modules to import, comma separated")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))   # stop/terminate: clean up below
    try:
        serve(args.socket, args.parent, PRELOAD + [m for m in args.preload.split(",") if m])
    finally:
        _remove_folder(Path(args.socket))
    return 0


if __name__ == "__main__":
    sys.exit(main())
