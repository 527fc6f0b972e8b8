"""Committees: N models that differ in seed (initial weights and data order), trained one after
another or as P parallel processes, each in its own resumable directory::

    WORKDIR/member-0/ ... member-{N-1}/    one training run each (model.pt, lcurve.csv, ...)
    WORKDIR/model-0.pt ... model-{N-1}.pt  the trained models (copies of member-i/model.pt)
    WORKDIR/committee_summary.json         per member: converged, reason, errors, time

With one model the run's files are written to WORKDIR itself. Parallel members get
``cores // P`` torch (OpenMP) threads each: oversubscribed OpenMP threads stall badly on a
small machine. Run as ``python -m dpa3_al.model.train.committee`` for one member (what the parallel
driver starts).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dpa3_al.common.errors import UserError
from dpa3_al.model.train.config import TrainConfig
from dpa3_al.common.fileio import atomic_write_json as write_json
from dpa3_al.common.fileio import atomic_write_path as atomic_write

log = logging.getLogger(__name__)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def member_dir(workdir: Path, member: int, n: int) -> Path:
    return Path(workdir) if n == 1 else Path(workdir) / f"member-{member}"


def train_committee(cfg: TrainConfig, workdir: Path, *, restart: bool = False) -> list[dict[str, Any]]:
    """Train ``cfg.training.numb_models`` members; returns one summary dict per member (with "model")."""
    from dpa3_al.model.train.trainer import train

    workdir = Path(workdir)
    n, parallel = cfg.training.numb_models, min(cfg.training.parallel, cfg.training.numb_models)
    if n == 1:
        result = train(cfg, workdir, restart=restart)
        return [{**result.summary, "model_path": str(result.model_path)}]
    for i in range(n):
        ckpt = member_dir(workdir, i, n) / "checkpoint.pt"
        if ckpt.is_file() and not restart and not (member_dir(workdir, i, n) / "train_summary.json").is_file():
            raise UserError(f"{ckpt.parent} already holds a training checkpoint; continue with --restart")
    if parallel <= 1:
        for i in range(n):
            d = member_dir(workdir, i, n)
            train(cfg, d, member=i, restart=(d / "checkpoint.pt").is_file())
            _publish(workdir, i, n)
    else:
        _run_parallel(cfg, workdir, n, parallel)
    summaries = [_member_summary(workdir, i, n) for i in range(n)]
    write_json(workdir / "committee_summary.json", {"members": summaries,
                                                    "converged": all(s["converged"] for s in summaries)})
    return summaries


def _publish(workdir: Path, member: int, n: int) -> Path:
    src = member_dir(workdir, member, n) / "model.pt"
    dst = workdir / f"model-{member}.pt"
    atomic_write(dst, lambda p: shutil.copyfile(src, p))
    return dst


def _member_summary(workdir: Path, member: int, n: int) -> dict[str, Any]:
    path = member_dir(workdir, member, n) / "train_summary.json"
    s = json.loads(path.read_text())
    return {"member": member, "model_path": str(workdir / f"model-{member}.pt"), "converged": s["converged"],
            "reason": s["reason"], "steps": s["steps"], "time_s": s["time_s"], "errors": s["errors"],
            "seed": s["seed"]}


def _run_parallel(cfg: TrainConfig, workdir: Path, n: int, parallel: int) -> None:
    """Members as child processes, ``parallel`` at a time, each with cores // parallel threads."""
    threads = cfg.training.threads or max(1, cores() // parallel)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_file = workdir / "committee_config.json"
    child_cfg = cfg.with_changes(training={"progress": False, "threads": threads})
    write_json(cfg_file, child_cfg.to_dict())
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    pending, running, failed = list(range(n)), {}, []
    log.info("training %d members, %d at a time with %d thread(s) each", n, parallel, threads)
    try:
        while pending or running:
            while pending and len(running) < parallel:
                i = pending.pop(0)
                d = member_dir(workdir, i, n)
                d.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, "-m", "dpa3_al.model.train.committee", "--config", str(cfg_file),
                       "--workdir", str(d), "--member", str(i)]
                with open(d / "process.log", "ab") as out:
                    running[i] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
            time.sleep(0.2)
            for i, proc in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[i]
                if proc.returncode == 0:
                    _publish(workdir, i, n)
                    log.info("member %d finished", i)
                else:
                    failed.append(i)
                    log.error("member %d failed (exit %d); see %s", i, proc.returncode,
                              member_dir(workdir, i, n) / "process.log")
    except BaseException:
        for proc in running.values():          # Ctrl-C: members save a checkpoint on SIGTERM, then stop
            proc.terminate()
        for proc in running.values():
            proc.wait()
        raise
    if failed:
        raise UserError(f"committee members {failed} failed; see process.log in their directories "
                        f"(rerun with --restart to continue the others' checkpoints)")


def _main(argv: list[str] | None = None) -> int:
    """One member in a child process (started by :func:`_run_parallel`)."""
    ap = argparse.ArgumentParser(prog="python -m dpa3_al.model.train.committee")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--member", type=int, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import torch

    from dpa3_al.model.train.trainer import train

    cfg = TrainConfig.from_dict(json.loads(args.config.read_text()), source=str(args.config))
    torch.set_num_threads(max(1, cfg.training.threads))
    try:
        train(cfg, args.workdir, member=args.member, restart=(args.workdir / "checkpoint.pt").is_file())
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_main())
