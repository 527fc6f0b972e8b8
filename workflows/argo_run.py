"""Runs on an Argo server: submit, resume with reused steps, fetch status and outputs.

Not exercised by the test suite (no Argo server here); the offline YAML render is.
``download`` fetches the published artifacts of succeeded steps from S3 into the run
directory, with the same layout as the local engines (:data:`~.rundir.PUBLISH`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .keys import parse_step_key
from .rundir import RunDir
from .spec import Plan
from .state import RunState

__all__ = ["submit_argo", "download", "reusable_steps"]


def reusable_steps(steps: list[Any]) -> list[Any]:
    """Succeeded pod steps with one of our keys: what a resumed workflow may reuse."""
    return [s for s in steps
            if s.phase == "Succeeded" and s.type == "Pod" and parse_step_key(getattr(s, "key", None))]


def _engine(run: RunDir, plan: Plan):
    from .argo import ArgoEngine

    engine = ArgoEngine(plan.workflow, run.dflow_dir, run_name=run.name)
    engine.configure()
    return engine


def submit_argo(run: RunDir, plan: Plan, state: RunState, resume: bool) -> RunState:
    """Submit the loop (reusing the previous workflow's finished steps when resuming)."""
    from dflow import Workflow

    from .loop import build_workflow

    engine = _engine(run, plan)
    reuse = None
    if resume and state.workflow_id and state.workflow_id != run.name:
        reuse = reusable_steps(Workflow(id=state.workflow_id, token=engine.token).query_step())
    wf = build_workflow(engine, plan.loop, name=run.name)
    wf.submit(reuse_step=reuse)
    state.workflow_id, state.status = wf.id, "running"
    state.message = f"submitted to {plan.workflow.argo.host} as {wf.id}"
    run.write_state(state)
    return state


def download(run: RunDir, plan: Plan) -> RunState:
    """Refresh ``state.json`` from the server and fetch new outputs (``dpa3-al download``)."""
    from dflow import Workflow, download_artifact

    from .monitor import refresh

    engine = _engine(run, plan)
    state = run.read_state()
    wf = Workflow(id=state.workflow_id, token=engine.token)
    cache = run.dflow_dir / "downloads"

    def artifact_path(step: Any, name: str) -> Path | None:
        try:
            art = step.outputs.artifacts[name]
        except (AttributeError, KeyError):
            return None
        dest = cache / str(step.key) / name
        dest.mkdir(parents=True, exist_ok=True)
        with engine.credentials():
            download_artifact(art, path=str(dest))
        return dest

    state = refresh(run, state, wf.query_step(), None, plan.workflow.group_size, artifact_path)
    phase = wf.query_status()
    if phase in ("Succeeded", "Failed", "Error"):
        state.status = "succeeded" if phase == "Succeeded" else "failed"
        run.write_state(state)
    return state
