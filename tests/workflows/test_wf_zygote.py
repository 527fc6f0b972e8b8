"""The step preloader: steps forked from an interpreter that has imported dflow once."""

from __future__ import annotations

import json
import os
import sys
import time

from dpa3_al.workflows.runner import TIMEOUT_EXIT, run
from dpa3_al.workflows.zygote import ZYGOTE_ENV, preloaded, request


def _script(tmp_path, body: str):
    step = tmp_path / "step"
    step.mkdir(exist_ok=True)
    script = step / "script"
    script.write_text(body)
    return script


def test_steps_are_forked_with_dflow_loaded(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("STEP_VALUE", "from-the-runner")
    script = _script(tmp_path, """
import os, sys
print("preloaded", "dflow.python" in sys.modules, os.environ["STEP_VALUE"], os.getcwd(), sys.argv[0])
print("to stderr", file=sys.stderr)
sys.exit(3)
""")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with preloaded(sys.executable):
        assert os.environ.get(ZYGOTE_ENV)
        start = time.monotonic()
        rc = run([sys.executable, str(script)], timeout=60, retries=0)
        elapsed = time.monotonic() - start
    assert ZYGOTE_ENV not in os.environ
    out, err = capfd.readouterr()
    assert rc == 3
    assert f"preloaded True from-the-runner {work} {script}" in out
    assert "to stderr" in err
    assert elapsed < 0.5, f"a preloaded step should start in well under the ~0.5 s of import dflow ({elapsed:.2f} s)"


def test_preloaded_step_timeout_kills_it(tmp_path):
    script = _script(tmp_path, "import time; time.sleep(600)")
    record = script.parent / "runner.json"
    with preloaded(sys.executable):
        rc = run([sys.executable, str(script)], timeout=1.0, retries=0, grace=0.5, record=record)
    assert rc == TIMEOUT_EXIT
    assert json.loads(record.read_text())["attempts"][0]["timed_out"]


def test_other_interpreters_are_not_served(tmp_path):
    with preloaded(sys.executable):
        assert request(["/usr/bin/python3-other", str(tmp_path / "script")]) is None
        assert request([sys.executable, "-c", "pass"]) is None          # not a plain script call
    assert request([sys.executable, str(tmp_path / "script")]) is None     # no zygote running
