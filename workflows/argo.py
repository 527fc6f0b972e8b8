"""The ``argo`` engine: the loop on an Argo Workflows server, and its offline YAML.

Submitting needs a reachable Argo server and S3/MinIO storage (``workflow.argo`` in the
config; the token and keys come from environment variables). Rendering needs neither:
:func:`render_yaml` turns the same workflow object into a complete Argo ``Workflow``
manifest (``apiVersion: argoproj.io/v1alpha1``, ``kind: Workflow``). Input artifacts are
then referenced by the S3 keys that ``submit`` uploads them to, so the rendered file is the
manifest ``submit`` would send, apart from those uploads.

Retries and timeouts are Argo's own here (``retryStrategy``, ``activeDeadlineSeconds``);
per-task timeouts inside a grouped fan-out are enforced by the step script itself.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import random
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import yaml
from dflow import S3Artifact, Steps, Workflow, config as dflow_config, s3_config, upload_artifact

from .config import WorkflowConfig
from .engine import Engine

__all__ = ["ArgoEngine", "render_yaml", "normalise_manifest", "deterministic_names"]

API_VERSION = "argoproj.io/v1alpha1"


class ArgoEngine(Engine):
    """Argo server + S3 artifacts; ``offline=True`` never contacts either (for rendering)."""

    kind = "argo"
    debug_mode = False

    def __init__(self, cfg: WorkflowConfig, workdir: Path | None = None, *, offline: bool = False,
                 run_name: str = "run") -> None:
        super().__init__(cfg, workdir)
        self.offline = offline
        self.run_name = run_name

    def configure(self) -> None:
        """Public settings only: dflow copies its whole global config (S3 keys and the Argo
        token included) into every step script, so secrets never enter it; the token goes to
        the Workflow object, the S3 keys are set only around uploads/downloads."""
        super().configure()
        argo = self.cfg.argo
        dflow_config["host"] = argo.host
        dflow_config["namespace"] = argo.namespace
        dflow_config["token"] = None
        dflow_config["k8s_api_server"] = argo.k8s_api_server or None
        dflow_config["util_image"] = argo.image
        dflow_config["util_image_pull_policy"] = argo.image_pull_policy or None
        s3 = argo.s3
        s3_config.update(endpoint=s3.endpoint, bucket_name=s3.bucket, secure=s3.secure, prefix=s3.prefix,
                         repo_key=None if self.offline else (s3.repo_key or None), access_key="", secret_key="")

    @property
    def token(self) -> str | None:
        return os.environ.get(self.cfg.argo.token_env) or None

    @contextlib.contextmanager
    def credentials(self) -> Iterator[None]:
        """S3 keys from the environment, for the duration of an upload or download."""
        s3 = self.cfg.argo.s3
        s3_config.update(access_key=os.environ.get(s3.access_key_env, ""),
                         secret_key=os.environ.get(s3.secret_key_env, ""))
        try:
            yield
        finally:
            s3_config.update(access_key="", secret_key="")

    def template_kwargs(self, step: str) -> dict[str, Any]:
        policy = self.cfg.policy(step)
        kwargs: dict[str, Any] = {"image": self.cfg.argo.image, "command": [self.cfg.argo.python],
                                  "image_pull_policy": self.cfg.argo.image_pull_policy or None}
        if policy.timeout is not None:
            kwargs["timeout"] = math.ceil(policy.timeout)
        if policy.retries:
            kwargs["retry_on_failure_and_error"] = policy.retries
        return kwargs

    def step_kwargs(self) -> dict[str, Any]:
        return {"util_image": self.cfg.argo.image, "util_command": [self.cfg.argo.python],
                "util_image_pull_policy": self.cfg.argo.image_pull_policy or None}

    def input_key(self, name: str) -> str:
        """S3 key of the workflow's input artifact ``name`` (stable, so renders are stable)."""
        return f"{self.cfg.argo.s3.prefix}dpa3-al/{self.run_name}/inputs/{name}.tgz"

    def input_artifact(self, name: str, paths: list[Path]):
        if not paths:
            return None
        if self.offline:
            return S3Artifact(key=self.input_key(name))
        with self.credentials():
            return upload_artifact([str(p) for p in paths], key=self.input_key(name))

    def workflow(self, name: str, entry: Steps, workflow_id: str | None = None) -> Workflow:
        self.finalize(entry)
        return Workflow(name=name, steps=entry, id=workflow_id, parallelism=self.cfg.argo.parallelism,
                        token=self.token)


@contextlib.contextmanager
def deterministic_names(prefix: str = "x") -> Iterator[None]:
    """Make dflow's random name suffixes (``randstr``) a counter while building a workflow,
    so that a render is byte-for-byte reproducible. Restores everything afterwards."""
    import dflow.utils

    original = dflow.utils.randstr
    counter = itertools.count()

    def randstr(length: int = 5) -> str:
        return f"{prefix}{next(counter):0{max(length - len(prefix), 1)}d}"

    patched = [m for name, m in list(sys.modules.items())
               if name.startswith("dflow") and getattr(m, "randstr", None) is original]
    state = random.getstate()
    for module in patched:
        module.randstr = randstr
    try:
        yield
    finally:
        for module in patched:
            module.randstr = original
        random.setstate(state)


_EMBEDDED_CONFIG = re.compile(r"((?:s3_)?config)\.update\(jsonpickle\.loads\(r'''.*?'''\)\)", re.S)


def normalise_manifest(manifest: dict[str, Any], image_tag: str | None = "<tag>") -> dict[str, Any]:
    """Remove what changes between two renders of the same config: the generated name, the
    creation timestamp, the tags of the images (when ``image_tag`` is given), and the copy
    of dflow's global configuration that dflow embeds in every step script (it depends on
    ``DFLOW_*`` environment variables of the rendering machine)."""
    meta = manifest.setdefault("metadata", {})
    meta.pop("creationTimestamp", None)
    if "name" in meta:
        meta["generateName"] = meta.pop("name").rsplit("-", 1)[0] + "-"
    for template in manifest.get("spec", {}).get("templates", []):
        for part in ("script", "container"):
            body = template.get(part)
            if not body:
                continue
            if image_tag is not None and isinstance(body.get("image"), str):
                body["image"] = _retag(body["image"], image_tag)
            if isinstance(body.get("source"), str):
                body["source"] = _EMBEDDED_CONFIG.sub(r"\1.update(<dflow config of the renderer>)", body["source"])
    return manifest


def _retag(image: str, tag: str) -> str:
    name, _, digest = image.partition("@")
    base, colon, old = name.rpartition(":")
    if colon and "/" not in old:
        name = base
    return f"{name}:{tag}"


def render_yaml(workflow: Workflow, *, normalise: bool = False) -> str:
    """The complete Argo Workflow manifest of ``workflow`` as YAML (offline)."""
    manifest = workflow.to_dict()
    manifest = {"apiVersion": API_VERSION, "kind": "Workflow", **manifest}
    manifest.pop("status", None)
    if normalise:
        manifest = normalise_manifest(manifest)
    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False, width=100)
