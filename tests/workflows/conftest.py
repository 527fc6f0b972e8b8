"""Fixtures of the workflow tests: toy step functions on the path, plans, a real Slurm.

The ``slurm`` fixture starts a real single-node Slurm cluster (munged, slurmctld, slurmd)
with every file under a temporary folder, waits until the node is idle, and stops the
daemons by pid afterwards. It needs root (the daemons run as root here) and Debian's
``slurm-wlm`` + ``munge`` (installed by scripts/setup-env.sh); otherwise the test skips
and says which of the two is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")


@pytest.fixture
def toy_env(monkeypatch, tmp_path):
    """Toy functions importable by every step process; returns the ledger file."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(HERE))
    ledger = tmp_path / "ledger.txt"
    monkeypatch.setenv("WF_TOY_LEDGER", str(ledger))
    return ledger


# -- a real single-node Slurm --------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _slurm_conf(root: Path, host: str) -> str:
    return "\n".join([
        "ClusterName=dpa3test", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", f"AuthInfo=socket={root}/munge/munge.socket", "CredType=cred/munge",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log", f"SlurmdLogFile={root}/log/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "SchedulerType=sched/backfill",
        "ReturnToService=2", "MpiDefault=none", "JobCompType=jobcomp/none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "SwitchType=switch/none", "InactiveLimit=0", "KillWait=2", "MinJobAge=300",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", "",
    ])


def _stop(pid_files: list[Path]) -> None:
    pids = []
    for pid_file in pid_files:
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
        except (OSError, ValueError):
            pass
    deadline = time.time() + 10
    for pid in pids:
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _wait_idle(env: dict, root: Path, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        if out.returncode == 0 and "idle" in out.stdout:
            return
        time.sleep(0.5)
    logs = "\n".join(p.read_text()[-2000:] for p in (root / "log").glob("*.log"))
    raise RuntimeError(f"the test Slurm node did not become idle in {timeout:.0f} s:\n{logs}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running single-node Slurm; yields the environment (SLURM_CONF) to use it."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm test starts munged/slurmctld/slurmd and needs root")
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm/munge not installed (missing {', '.join(missing)}); "
                    "apt-get install slurm-wlm munge (scripts/setup-env.sh does)")
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir()
    root.chmod(0o755)
    (root / "munge").chmod(0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, host))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    pid_files = [root / "slurmd.pid", root / "slurmctld.pid", root / "munge" / "munged.pid"]
    try:
        subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={root}/munge/munge.socket",
                        f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/log/munged.log",
                        f"--seed-file={root}/munge/munged.seed"], check=True, env=env)
        subprocess.run(["slurmctld", "-i", "-f", str(conf)], check=True, env=env)
        subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
        _wait_idle(env, root)
        yield env
    finally:
        _stop(pid_files)
