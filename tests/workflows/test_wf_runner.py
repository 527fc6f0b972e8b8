"""The local step runner: retries, timeouts (whole process group), fatal exits, orphans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dpa3_al.workflows.runner import FATAL_EXIT, ORPHAN_EXIT, TIMEOUT_EXIT, main, run


def _script(tmp_path: Path, body: str) -> Path:
    """A dflow-like step directory: <step>/script, run with cwd anywhere."""
    step = tmp_path / "step"
    step.mkdir(exist_ok=True)
    script = step / "script"
    script.write_text(body)
    return script


def test_retry_until_success_and_record(tmp_path):
    marker = tmp_path / "count"
    script = _script(tmp_path, f"""
import pathlib, sys
p = pathlib.Path({str(marker)!r})
n = int(p.read_text()) if p.exists() else 0
p.write_text(str(n + 1))
sys.exit(0 if n >= 2 else 1)
""")
    outputs = script.parent / "workdir" / "tmp" / "outputs"
    outputs.mkdir(parents=True)
    (outputs / "stale").write_text("from a failed attempt")
    rc = main(["--retries", "3", "--", sys.executable, str(script)])
    assert rc == 0
    assert marker.read_text() == "3"
    record = json.loads((script.parent / "runner.json").read_text())
    assert [a["returncode"] for a in record["attempts"]] == [1, 1, 0]
    assert not (outputs / "stale").exists(), "outputs of a failed attempt must be removed before a retry"


def test_retries_exhausted_returns_last_status(tmp_path):
    script = _script(tmp_path, "import sys; sys.exit(3)")
    assert main(["--retries", "1", "--", sys.executable, str(script)]) == 3
    record = json.loads((script.parent / "runner.json").read_text())
    assert len(record["attempts"]) == 2


def test_fatal_error_is_not_retried(tmp_path):
    script = _script(tmp_path, f"import sys; sys.exit({FATAL_EXIT})")
    assert main(["--retries", "5", "--", sys.executable, str(script)]) == FATAL_EXIT
    assert len(json.loads((script.parent / "runner.json").read_text())["attempts"]) == 1


def test_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    script = _script(tmp_path, f"""
import subprocess, sys, time, pathlib
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))
time.sleep(600)
""")
    start = time.monotonic()
    rc = main(["--timeout", "1.5", "--retries", "1", "--grace", "0.5", "--", sys.executable, str(script)])
    elapsed = time.monotonic() - start
    assert rc == TIMEOUT_EXIT
    assert elapsed < 15, elapsed
    record = json.loads((script.parent / "runner.json").read_text())
    assert [a["timed_out"] for a in record["attempts"]] == [True, True]
    grandchild = int(pid_file.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]


def test_step_stops_when_the_driver_dies(tmp_path, monkeypatch):
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    monkeypatch.setenv("DPA3_AL_DRIVER_PID", str(driver.pid))
    start = time.monotonic()
    rc = run([sys.executable, "-c", "import time; time.sleep(600)"], timeout=None, retries=3, grace=0.5)
    driver.wait()
    assert rc == ORPHAN_EXIT
    assert time.monotonic() - start < 15


def test_runner_as_a_module_passes_output_through(tmp_path):
    script = _script(tmp_path, "print('hello from the step')")
    out = subprocess.run([sys.executable, "-m", "dpa3_al.workflows.runner", "--", sys.executable, str(script)],
                         capture_output=True, text=True, env={**os.environ, "DPA3_AL_DRIVER_PID": ""})
    assert out.returncode == 0
    assert "hello from the step" in out.stdout


def _runner_process(tmp_path: Path, body: str, retries: int) -> tuple[subprocess.CompletedProcess, dict]:
    """The runner as dflow starts it (its own process: it passes its output through a pipe)."""
    script = tmp_path / "script"
    script.write_text(body)
    done = subprocess.run([sys.executable, "-m", "dpa3_al.workflows.runner", "--retries", str(retries), "--",
                           sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    return done, json.loads((tmp_path / "runner.json").read_text())


def test_an_input_error_is_not_retried_and_its_line_is_recorded(tmp_path):
    done, record = _runner_process(tmp_path, "print('working on it')\nclass ConfigError(Exception):\n    pass\n"
                                             "raise ConfigError('label.kind: bad value; use one of a, b')\n", 2)
    assert done.returncode == 1 and len(record["attempts"]) == 1
    attempt = record["attempts"][0]
    assert attempt["deterministic"] is True
    assert attempt["error"] == "ConfigError: label.kind: bad value; use one of a, b"
    # the step's output still reaches dflow's log (the runner's stdout), traceback included
    assert "working on it" in done.stdout and "Traceback" in done.stdout and "not retried" in done.stdout


def test_another_error_is_retried_and_recorded_each_time(tmp_path):
    done, record = _runner_process(tmp_path, "raise RuntimeError('disk hiccup')\n", 2)
    assert done.returncode == 1
    assert [(a["error"], a["deterministic"]) for a in record["attempts"]] == [("RuntimeError: disk hiccup", False)] * 3
