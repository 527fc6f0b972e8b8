"""Failure injection for labelers: raising, hanging and crashing calculators, retries, resume.

The calculators below are imported by the labeling worker through ``label.ase.calculator``
(this module is on the worker's path because pytest puts tests/al on sys.path).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from dpa3_al.label import LabeledFrame, LabelFailure, make_labeler


class FlakyEMT(EMT):
    """EMT that raises for frames with info tag ``fail``, hangs for ``hang`` and segfaults for ``segv``.

    The tag travels as the first atom's initial charge (info does not reach calculators):
    1 = raise, 2 = hang, 3 = segfault, 4 = not converged. Every call is logged to ``log``.
    """

    def __init__(self, log: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.log = log

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        tag = int(round(atoms.get_initial_charges()[0]))
        if self.log:
            with open(self.log, "a") as handle:
                handle.write(f"{tag}\n")
        if tag == 1:
            raise RuntimeError("injected failure")
        if tag == 2:
            time.sleep(60)
        if tag == 3:
            os.kill(os.getpid(), signal.SIGSEGV)
        if tag == 4:
            raise RuntimeError("SCF not converged after 3 cycles (injected)")
        super().calculate(atoms, properties, system_changes)


class SlowEMT(FlakyEMT):
    """EMT that takes ``delay`` seconds per frame (for kill-and-resume tests)."""

    def __init__(self, log: str | None = None, delay: float = 0.4, **kwargs):
        super().__init__(log=log, **kwargs)
        self.delay = delay

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        time.sleep(self.delay)
        super().calculate(atoms, properties, system_changes)


def cu_frames(tags: list[int]) -> list:
    frames = []
    for i, tag in enumerate(tags):
        atoms = bulk("Cu", cubic=True)
        atoms.rattle(0.05, seed=i)
        charges = np.zeros(len(atoms))
        charges[0] = tag
        atoms.set_initial_charges(charges)
        atoms.info["task"] = f"task-{i:06d}"
        frames.append(atoms)
    return frames


def flaky_config(log: Path, timeout: float = 3.0, retries: int = 0, cls: str = "FlakyEMT", **kwargs) -> dict:
    return {"kind": "ase", "timeout": timeout, "retries": retries,
            "ase": {"calculator": f"{__name__}.{cls}", "kwargs": {"log": str(log), **kwargs}}}


def direct_emt(atoms) -> tuple[float, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_potential_energy(), atoms.get_forces()


def test_failing_hanging_and_crashing_frames_become_records_and_the_rest_is_labeled(tmp_path):
    tags = [0, 1, 0, 2, 0, 3, 4, 0]
    frames = cu_frames(tags)
    start = time.perf_counter()
    results = make_labeler(flaky_config(tmp_path / "calls.log", timeout=2.0)).label(frames, tmp_path / "work")
    elapsed = time.perf_counter() - start

    assert len(results) == len(frames)
    expected = {1: "crash", 2: "timeout", 3: "crash", 4: "scf_not_converged"}
    for atoms, tag, result in zip(frames, tags, results):
        if tag == 0:
            assert isinstance(result, LabeledFrame)
            energy, forces = direct_emt(atoms)
            assert result.energy == pytest.approx(energy, abs=1e-10)
            np.testing.assert_allclose(result.forces, forces, atol=1e-10)
            assert result.atoms.info["task"] == atoms.info["task"]
        else:
            assert isinstance(result, LabelFailure), tag
            assert result.reason == expected[tag], (tag, result.detail)
            status = json.loads((result.workdir / "status.json").read_text())
            assert status["status"] == "failed" and status["reason"] == expected[tag]
    assert "injected failure" in results[1].detail
    assert "SIGSEGV" in results[5].detail
    assert elapsed < 20, "the hung frame must be cut at the timeout, not waited for"


def test_retries_rerun_crashed_frames_but_not_unconverged_ones(tmp_path):
    log = tmp_path / "calls.log"
    results = make_labeler(flaky_config(log, retries=2)).label(cu_frames([1, 4, 0]), tmp_path / "work")
    assert [getattr(r, "reason", "ok") for r in results] == ["crash", "scf_not_converged", "ok"]
    calls = log.read_text().split()
    assert calls.count("1") == 3 and calls.count("4") == 1
    assert results[0].meta.attempts == 3
    assert (results[0].workdir / "attempt-1" / "worker.log").is_file()


def test_rerun_reuses_finished_tasks_and_relabels_changed_frames(tmp_path):
    log = tmp_path / "calls.log"
    frames = cu_frames([0, 0, 1])
    labeler = make_labeler(flaky_config(log))
    first = labeler.label(frames, tmp_path / "work")
    assert len(log.read_text().split()) == 3
    second = labeler.label(frames, tmp_path / "work")
    assert len(log.read_text().split()) == 3, "finished frames (ok and failed) are not recomputed"
    assert second[0].energy == first[0].energy and second[2].reason == "crash"
    labeler.label(frames, tmp_path / "work", redo_failed=True)
    assert len(log.read_text().split()) == 4
    frames[1].positions[0, 0] += 0.1
    changed = labeler.label(frames, tmp_path / "work")
    assert len(log.read_text().split()) == 5, "a different frame in an old task directory is labeled again"
    assert changed[1].energy != first[1].energy
    assert (tmp_path / "work" / "task-000001" / "stale-1" / "result.extxyz").is_file(), "old outputs are kept aside"


def test_killed_run_loses_at_most_the_frame_in_flight(tmp_path):
    import ase.io

    ase.io.write(tmp_path / "frames.extxyz", cu_frames([0] * 6))
    frames = ase.io.read(tmp_path / "frames.extxyz", ":")  # exactly what the killed run read
    log = tmp_path / "calls.log"
    config = flaky_config(log, timeout=30, cls="SlowEMT", delay=0.5)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import ase.io, sys
        sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parents[2])!r}]
        from dpa3_al.label import make_labeler
        frames = ase.io.read({str(tmp_path / 'frames.extxyz')!r}, ":")
        make_labeler({config!r}).label(frames, {str(tmp_path / 'work')!r})
    """))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "work").glob("task-*/status.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.parent.name for p in (tmp_path / "work").glob("task-*/status.json"))
    assert 3 <= len(finished) < 6
    calls_before = len(log.read_text().split())

    results = make_labeler(config).label(frames, tmp_path / "work")
    assert all(isinstance(r, LabeledFrame) for r in results)
    recomputed = len(log.read_text().split()) - calls_before
    assert recomputed == 6 - len(finished), "only unfinished frames are labeled again"
    for atoms, result in zip(frames, results):
        assert result.energy == pytest.approx(direct_emt(atoms)[0], abs=1e-10)


def test_twenty_small_frames_are_not_dominated_by_worker_start_up(tmp_path):
    frames = cu_frames([0] * 20)
    start = time.perf_counter()
    results = make_labeler({"kind": "ase"}).label(frames, tmp_path / "work")
    elapsed = time.perf_counter() - start
    assert all(isinstance(r, LabeledFrame) for r in results)
    assert elapsed < 8, f"20 EMT frames took {elapsed:.1f} s"
