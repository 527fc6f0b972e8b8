"""Committees: N models that differ in seed (initial weights and data order), trained one after
another or as P parallel processes, alone or in stacks of ``training.stack`` members (one stacked
model per process, model/train/stacked.py), each member in its own resumable directory::

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
from dpa3_al.model.train.config import TrainConfig, stack_size
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
    n = cfg.training.numb_models
    parallel = min(cfg.training.parallel or cores(), n)     # 0 (auto): a process per core
    if n == 1:
        result = train(cfg, workdir, restart=restart)
        return [{**result.summary, "model_path": str(result.model_path)}]
    for i in range(n):
        ckpt = member_dir(workdir, i, n) / "checkpoint.pt"
        if ckpt.is_file() and not restart and not (member_dir(workdir, i, n) / "train_summary.json").is_file():
            raise UserError(f"{ckpt.parent} already holds a training checkpoint; continue with --restart")
    groups = stacks(n, stack_size(cfg.training.stack, n, parallel))
    parallel = min(parallel, len(groups))
    if parallel <= 1:
        for group in groups:
            _train_group(cfg, workdir, group, n)
    else:
        _run_parallel(cfg, workdir, groups, parallel)
    summaries = [_member_summary(workdir, i, n) for i in range(n)]
    write_json(workdir / "committee_summary.json", {"members": summaries,
                                                    "converged": all(s["converged"] for s in summaries)})
    return summaries


def stacks(n: int, size: int) -> list[list[int]]:
    """Members 0..n-1 in groups of ``size`` (the last may be smaller)."""
    return [list(range(i, min(i + size, n))) for i in range(0, n, max(1, size))]


def _train_group(cfg: TrainConfig, workdir: Path, group: list[int], n: int) -> None:
    """One member alone, or a stack of them, in this process; then publish their models."""
    from dpa3_al.model.train.trainer import train

    dirs = [member_dir(workdir, i, n) for i in group]
    if len(group) == 1:
        train(cfg, dirs[0], member=group[0], restart=(dirs[0] / "checkpoint.pt").is_file())
    else:
        from dpa3_al.model.train.stacked import train_stack

        train_stack([cfg] * len(group), dirs, group)
    for i in group:
        _publish(workdir, i, n)


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


def _run_parallel(cfg: TrainConfig, workdir: Path, groups: list[list[int]], parallel: int) -> None:
    """Members (or stacks of them) as child processes, ``parallel`` at a time, each with cores // parallel threads."""
    n = sum(len(g) for g in groups)
    threads = cfg.training.threads or max(1, cores() // parallel)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_file = workdir / "committee_config.json"
    child_cfg = cfg.with_changes(training={"progress": False, "threads": threads})
    write_json(cfg_file, child_cfg.to_dict())
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    pending, running, failed = list(groups), {}, []
    log.info("training %d members%s, %d process(es) at a time with %d thread(s) each", n,
             f" in stacks of up to {len(groups[0])}" if len(groups[0]) > 1 else "", parallel, threads)
    try:
        while pending or running:
            while pending and len(running) < parallel:
                group = pending.pop(0)
                d = member_dir(workdir, group[0], n)
                d.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, "-m", "dpa3_al.model.train.committee", "--config", str(cfg_file),
                       "--workdir", str(workdir), "--members", ",".join(map(str, group)), "--n", str(n)]
                with open(d / "process.log", "ab") as out:
                    running[tuple(group)] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
            time.sleep(0.2)
            for group, proc in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[group]
                if proc.returncode == 0:
                    log.info("member(s) %s finished", list(group))
                else:
                    failed.extend(group)
                    log.error("member(s) %s failed (exit %d); see %s", list(group), proc.returncode,
                              member_dir(workdir, group[0], n) / "process.log")
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
    """One member, or one stack of members, in a child process (started by :func:`_run_parallel`)."""
    ap = argparse.ArgumentParser(prog="python -m dpa3_al.model.train.committee")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, required=True, help="the committee's folder")
    ap.add_argument("--members", required=True, help="comma-separated member indices (more than one: a stack)")
    ap.add_argument("--n", type=int, required=True, help="committee size")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import torch

    cfg = TrainConfig.from_dict(json.loads(args.config.read_text()), source=str(args.config))
    torch.set_num_threads(max(1, cfg.training.threads))
    try:
        _train_group(cfg, args.workdir, [int(m) for m in args.members.split(",")], args.n)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_main())
