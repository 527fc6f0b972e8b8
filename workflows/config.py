"""The ``workflow:`` section of a run config: engine, fan-out, retries, timeouts.

Shape (YAML)::

    workflow:
      engine: local                  # local | argo | dispatcher
      group_size: 4                  # tasks per fan-out step (run-explore, run-label)
      continue_on_success_ratio: 0.8 # a fan-out continues when this fraction of tasks succeeded
      max_iterations: 20             # hard stop of the loop (decide may stop earlier)
      final_training: true           # after the last iteration, train the committee on every label
      retries: 1                     # extra attempts of a failed step (all steps)
      timeout: null                  # seconds per attempt (all steps); null = none
      steps:                         # per-step overrides (names: train, prep-explore, ...)
        run-label: {retries: 2, timeout: 3600, task_timeout: 600}
      local: {parallel: 0, python: ""}
      argo: {host: https://argo:2746, namespace: argo, image: "dpa3-al:0.1.0", s3: {...}}
      dispatcher:
        machine: {batch_type: Slurm, context_type: LocalContext, remote_root: /scratch/dpa3-al}
        resources: {number_node: 1, cpu_per_node: 4, queue_name: normal, group_size: 1}

Times are in seconds. Secrets (Argo token, S3 keys) are never stored here: the config
names the environment variables that hold them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from dpa3_al.common.typed_config import ConfigError, field

from .keys import FANOUT_STEPS, HEAVY_STEPS, STEP_NAMES, base_step

__all__ = ["WorkflowConfig", "StepPolicy", "LocalConfig", "ArgoConfig", "S3Config",
           "DispatcherConfig", "EffectivePolicy"]

Engine = Literal["local", "argo", "dispatcher"]
BATCH_TYPES = ("Slurm", "SlurmJobArray", "PBS", "Torque", "LSF", "Shell", "SGE", "Fugaku",
               "OpenAPI", "Bohrium", "DistributedShell")


@dataclass(frozen=True)
class StepPolicy:
    """Overrides for one step; null fields inherit the section-wide values."""

    retries: int | None = field(None, doc="extra attempts after a failure", ge=0)
    timeout: float | None = field(None, doc="limit per attempt of the whole step", unit="s", gt=0)
    task_timeout: float | None = field(None, doc="limit per task inside a grouped fan-out step "
                                       "(run-explore, run-label); the task fails, the group goes on",
                                       unit="s", gt=0)


@dataclass(frozen=True)
class EffectivePolicy:
    """Retries and timeouts that apply to one step after overrides."""

    retries: int
    timeout: float | None
    task_timeout: float | None


@dataclass(frozen=True)
class LocalConfig:
    """The ``local`` engine (dflow debug mode: steps are subprocesses of this machine)."""

    parallel: int = field(0, doc="steps of one fan-out run at once; 0 = number of CPUs", ge=0)
    python: str = field("", doc="interpreter that runs each step; empty = the interpreter running dpa3-al")
    poll_interval: float = field(2.0, doc="seconds between updates of state.json and the run directory", gt=0)
    grace: float = field(5.0, doc="seconds between SIGTERM and SIGKILL when a step times out", ge=0)
    preload: bool = field(True, doc="fork steps from an interpreter that has imported dflow once "
                          "(saves ~0.5 s per step); false = a fresh interpreter per step")
    preload_modules: list[str] = field(default_factory=lambda: ["torch"], doc="more modules the preloader "
                                       "imports once (torch: ~1.5 s saved per training/MD step); missing ones "
                                       "are skipped")


@dataclass(frozen=True)
class S3Config:
    """Artifact storage of the ``argo`` engine (S3 or MinIO)."""

    endpoint: str = field("127.0.0.1:9000", doc="host:port of the S3/MinIO server")
    bucket: str = field("my-bucket", doc="bucket holding the artifacts")
    secure: bool = field(False, doc="use HTTPS")
    prefix: str = field("", doc="key prefix of every artifact of this project")
    repo_key: str = field("", doc="Argo artifact repository key (ConfigMap 'artifact-repositories'); empty = none")
    access_key_env: str = field("DFLOW_S3_ACCESS_KEY", doc="environment variable holding the access key")
    secret_key_env: str = field("DFLOW_S3_SECRET_KEY", doc="environment variable holding the secret key")


@dataclass(frozen=True)
class ArgoConfig:
    """The ``argo`` engine: an Argo Workflows server with S3/MinIO artifacts."""

    host: str = field("https://127.0.0.1:2746", doc="URL of the Argo server")
    namespace: str = field("argo", doc="Kubernetes namespace of the workflows")
    token_env: str = field("DFLOW_TOKEN", doc="environment variable holding the Argo token (may be unset)")
    k8s_api_server: str = field("", doc="Kubernetes API server (needed only with repo_key); empty = none")
    image: str = field("dpa3-al:latest", doc="container image with dpa3-al installed, for every step")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never", ""] = field(
        "", doc="image pull policy; empty = the cluster default")
    python: str = field("python3", doc="interpreter inside the image")
    parallelism: int | None = field(None, doc="maximum pods at once; null = no limit", ge=1)
    s3: S3Config = field(default_factory=S3Config, doc="artifact storage")


@dataclass(frozen=True)
class DispatcherConfig:
    """The ``dispatcher`` engine: heavy steps become batch jobs through dpdispatcher."""

    machine: dict[str, Any] = field(default_factory=lambda: {"batch_type": "Slurm", "context_type": "LocalContext"},
                                    doc="dpdispatcher machine: batch_type, context_type, remote_root, remote_profile")
    resources: dict[str, Any] = field(default_factory=lambda: {"number_node": 1, "cpu_per_node": 1},
                                      doc="dpdispatcher resources: number_node, cpu_per_node, gpu_per_node, "
                                      "queue_name, group_size, custom_flags, envs, ...")
    steps: list[str] = field(default_factory=lambda: list(HEAVY_STEPS),
                             doc="steps sent to the scheduler; the others run locally")
    python: str = field("", doc="interpreter on the compute nodes; empty = the local one")
    poll_interval: float = field(30.0, doc="seconds between scheduler status checks", gt=0)

    def __post_init__(self) -> None:
        batch = self.machine.get("batch_type")
        if batch not in BATCH_TYPES:
            raise ConfigError("machine.batch_type", f"{batch!r} is not a dpdispatcher batch type; "
                              f"use one of {', '.join(BATCH_TYPES)}")
        if "context_type" not in self.machine:
            raise ConfigError("machine.context_type", "required: LocalContext (same machine or shared "
                              "file system) or SSHContext (with remote_profile)")
        for i, name in enumerate(self.steps):
            if name not in STEP_NAMES:
                raise ConfigError(f"steps[{i}]", f"{name!r} is not a step; use some of {', '.join(STEP_NAMES)}")


@dataclass(frozen=True)
class WorkflowConfig:
    """How the loop runs: engine, fan-out grouping, failure tolerance, retries, timeouts."""

    engine: Engine = field("local", doc="local (dflow debug mode), argo (Argo server), dispatcher (Slurm/PBS/LSF)")
    group_size: int = field(1, doc="tasks per fan-out step; larger groups pay the per-step start-up once", ge=1)
    continue_on_success_ratio: float = field(0.8, doc="a fan-out goes on when at least this fraction of its "
                                             "tasks succeeded", ge=0, le=1)
    max_iterations: int = field(100, doc="the loop stops after this many iterations at the latest", ge=1)
    final_training: bool = field(True, doc="after the last iteration, train the committee on every label "
                                 "(final-train) and name the final model (final-evaluate); false = the run "
                                 "ends after its last labeling, and its last labels are trained on by no model")
    retries: int = field(1, doc="extra attempts of a failed step (every step)", ge=0)
    timeout: float | None = field(None, doc="limit per attempt of every step; null = none", unit="s", gt=0)
    steps: dict[str, StepPolicy] = field(default_factory=dict, doc="per-step overrides, by step name")
    local: LocalConfig = field(default_factory=LocalConfig, doc="local engine")
    argo: ArgoConfig = field(default_factory=ArgoConfig, doc="argo engine")
    dispatcher: DispatcherConfig = field(default_factory=DispatcherConfig, doc="dispatcher engine")

    def __post_init__(self) -> None:
        for name, policy in self.steps.items():
            if name not in STEP_NAMES:
                raise ConfigError(f"steps.{name}", f"unknown step; use one of {', '.join(STEP_NAMES)}")
            if policy.task_timeout is not None and name not in FANOUT_STEPS:
                raise ConfigError(f"steps.{name}.task_timeout",
                                  f"only fan-out steps ({', '.join(FANOUT_STEPS)}) run tasks in groups")

    def policy(self, step: str) -> EffectivePolicy:
        """Retries and timeouts of ``step`` (a name of :data:`STEP_NAMES`)."""
        over = self.steps.get(step) or self.steps.get(base_step(step), StepPolicy())
        return EffectivePolicy(
            retries=self.retries if over.retries is None else over.retries,
            timeout=self.timeout if over.timeout is None else over.timeout,
            task_timeout=over.task_timeout,
        )

    def replace(self, **changes: Any) -> "WorkflowConfig":
        return dataclasses.replace(self, **changes)
