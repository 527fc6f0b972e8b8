"""Helpers of the workflow tests: toy plans and the toy functions' ledger."""

from __future__ import annotations

import time

from pathlib import Path

from dpa3_al.common.typed_config import from_dict
from dpa3_al.workflows import LoopSpec, Plan, StepCall, WorkflowConfig
from dpa3_al.workflows.keys import CALL_NAMES


def toy_plan(workflow: dict | None = None, configs: dict | None = None, n_models: int = 2,
             **loop) -> Plan:
    """A plan whose steps call the toy functions of ``wf_toy`` (``configs``: per step name)."""
    configs = configs or {}
    calls = {name: StepCall(func=f"wf_toy:{name.replace('-', '_')}", config=configs.get(name, {}))
             for name in CALL_NAMES}
    local = {"poll_interval": 0.5, "grace": 1.0, "preload_modules": [], **(workflow or {}).get("local", {})}
    wcfg = from_dict(WorkflowConfig, {**(workflow or {}), "local": local})
    return Plan(workflow=wcfg, loop=LoopSpec(n_models=n_models, calls=calls, **loop))


def ledger_lines(ledger: Path, run: str) -> list[tuple[str, str, str]]:
    """(step, name, iteration) of every toy call of run ``run``, in order."""
    if not ledger.exists():
        return []
    lines = [line.split() for line in ledger.read_text().splitlines() if line.strip()]
    return [tuple(parts[1:]) for parts in lines if parts[0] == run]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    """``predicate()``'s first truthy value within ``timeout`` seconds, else an AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")
