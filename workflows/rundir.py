"""The run directory: everything one run produces, under ``runs/<name>/``.

::

    runs/<name>/
      config.yaml        frozen copy of the input config (written once at submit)
      plan.json          the resolved loop + workflow settings the driver builds from
                         (written once; spec.Plan.write / Plan.read)
      state.json         iteration, stage, status of each step (atomic writes;
                         RunDir.write_state / read_state, i.e. state.RunState.write / read)
      driver.log         output of the driver (dflow's and the steps' output)
      dataset -> iter-000003/dataset      the latest dataset (symlink, replaced atomically)
      iter-000003/
        train/member-000/   model + learning curve + log of each committee member
        explore/task-000017/
        select/
        label/task-000005/
        dataset/
        decide/
      .dflow/            dflow's own files (local engines): work dirs, artifacts; not a contract
      .lock              held by the run's driver (flock), holds its pid

Step outputs reach the run directory by *publication*: when a step with a key of ours has
succeeded, each of its published output artifacts is copied (hard links where possible)
into the folder given by :data:`PUBLISH`, entry by entry, each entry atomically (copied
to a temporary name, then renamed). Entries already present are kept, so publication is
idempotent and resumes never duplicate anything. Two runs never share a folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

from dpa3_al.common.errors import UserError
from dpa3_al.common.fileio import atomic_write_text, replace_entry

from .keys import StepKey, iteration_name
from .spec import Plan
from .state import RunState

__all__ = ["RunDir", "RunBusy", "RunExists", "PUBLISH", "publish_tree", "check_run_name"]

#: (step name, output artifact) -> folder under ``iter-NNNNNN/`` receiving its entries
PUBLISH = {
    ("train", "member_dir"): "train",
    ("run-explore", "result"): "explore",
    ("select", "result"): ".",
    ("run-label", "result"): "label",
    ("collect", "dataset"): ".",
    ("decide", "result"): ".",
    ("bootstrap", "result"): ".",                   # iter-000000/bootstrap/candidates.extxyz
    ("bootstrap-run-label", "result"): "bootstrap-label",
    ("bootstrap-collect", "dataset"): "bootstrap",  # iter-000000/bootstrap/dataset
    ("final-train", "member_dir"): "final-train",   # iter-N/final-train/member-NNN (the committee on every label)
    ("final-evaluate", "result"): "..",             # runs/<name>/final/: model.pt, committee/, final.json
}
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?")


_HELD_LOCKS: set[int] = set()


def _drop_locks_in_child() -> None:
    """A forked child (dflow's worker processes) must not keep the run's lock alive."""
    for fd in list(_HELD_LOCKS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)


class RunBusy(UserError):
    """Another process (the run's driver) holds the run."""


class RunExists(UserError):
    """A run of that name exists already."""


def check_run_name(name: str) -> str:
    """Run names are dflow workflow names: lower-case letters, digits, dashes (<= 40)."""
    if not _NAME_RE.fullmatch(name) or "--" in name:
        raise UserError(f"run name {name!r}: use 1-40 lower-case letters, digits and single dashes, "
                        "starting and ending with a letter or digit (e.g. 'water-01')")
    return name


class RunDir:
    """Paths and files of one run directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    @property
    def name(self) -> str:
        return self.root.name

    config_file = property(lambda self: self.root / "config.yaml")
    plan_file = property(lambda self: self.root / "plan.json")
    state_file = property(lambda self: self.root / "state.json")
    log_file = property(lambda self: self.root / "driver.log")
    lock_file = property(lambda self: self.root / ".lock")
    dflow_dir = property(lambda self: self.root / ".dflow")
    dataset_link = property(lambda self: self.root / "dataset")

    def iteration_dir(self, iteration: int) -> Path:
        return self.root / iteration_name(iteration)

    def exists(self) -> bool:
        return self.state_file.is_file()

    @classmethod
    def create(cls, parent: Path, name: str, config: dict[str, Any], plan: Plan) -> "RunDir":
        """Make ``parent/name`` with its frozen config, plan and initial state (``submitted``)."""
        import yaml

        run = cls(Path(parent) / check_run_name(name))
        run.root.parent.mkdir(parents=True, exist_ok=True)
        try:
            run.root.mkdir()
        except FileExistsError:
            raise RunExists(f"{run.root} exists already; choose another --name or resume it "
                            f"(dpa3-al resume {run.root})") from None
        atomic_write_text(run.config_file, yaml.safe_dump(config, sort_keys=False))
        plan.write(run.plan_file)
        run.write_state(RunState(name=name, engine=plan.workflow.engine, workflow_id=name))
        return run

    def read_state(self) -> RunState:
        """The run's ``state.json`` (UserError when this folder is not a run)."""
        if not self.state_file.is_file():
            raise UserError(f"{self.root} is not a run directory (no state.json)")
        return RunState.read(self.state_file)

    def write_state(self, state: RunState) -> None:
        """Replace the run's ``state.json`` atomically (stamps ``state.updated``)."""
        state.write(self.state_file)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run exclusively (released by the kernel if this process dies)."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                pid = self.holder()
                raise RunBusy(f"run {self.root} is active (driver pid {pid}); "
                              f"wait, or stop it first (dpa3-al stop {self.root})") from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            _HELD_LOCKS.add(fd)
            yield
        finally:
            _HELD_LOCKS.discard(fd)
            os.close(fd)

    def holder(self) -> int | None:
        """Pid of the process holding the lock, or None when the run is not active."""
        if not self.lock_file.exists():
            return None
        fd = os.open(self.lock_file, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                text = self.lock_file.read_text().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    # -- publication --------------------------------------------------------------------
    def publish(self, key: StepKey, artifact: str, source: Path) -> list[Path]:
        """Copy the entries of step output ``artifact`` (a folder) into the run directory."""
        sub = PUBLISH.get((key.name, artifact))
        if sub is None or not source.is_dir():
            return []
        dest = (self.iteration_dir(key.iteration) / sub).resolve()
        new = publish_tree(source, dest)
        if key.name == "collect" and (dest / "dataset").is_dir():
            self._point_dataset(key.iteration)
        return new

    def _point_dataset(self, iteration: int) -> None:
        """``dataset`` -> the newest iteration's dataset (a symlink, replaced atomically)."""
        target = Path(iteration_name(iteration)) / "dataset"
        link = self.dataset_link
        if link.is_symlink():
            current = Path(os.readlink(link))
            if current.parts[:1] and current.parts[0] > target.parts[0]:
                return
        tmp = link.with_name(f".dataset.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target)
        replace_entry(tmp, link)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def publish_tree(source: Path, dest: Path) -> list[Path]:
    """Copy every entry of ``source`` (except dflow's ``.dflow`` catalog) that ``dest``
    does not have yet; each entry appears complete or not at all. Returns the new ones."""
    dest.mkdir(parents=True, exist_ok=True)
    new = []
    for entry in sorted(source.iterdir()):
        if entry.name == ".dflow" or (dest / entry.name).exists():
            continue
        tmp = dest / f".{entry.name}.publishing-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        if entry.is_dir():
            shutil.copytree(entry, tmp, symlinks=False, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry.resolve()), str(tmp))
        replace_entry(tmp, dest / entry.name)
        new.append(dest / entry.name)
    return new
