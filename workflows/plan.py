"""From a validated run config (dpa3_al.config.RunConfig) to the loop's Plan.

Each step gets only its own section(s) of the config, as plain data (``StepCall.config``);
relative structure paths are read from ``base_dir`` (the config file's folder).
"""

from __future__ import annotations

import os
from pathlib import Path

from dpa3_al.explore.bootstrap import BootstrapConfig
from dpa3_al.common.typed_config import to_dict

from .spec import LoopSpec, Plan, StepCall


def plan_from_config(cfg, base_dir: Path) -> Plan:
    """The Plan of a RunConfig (committee, inputs, what each step is given)."""
    base = str(Path(base_dir).resolve())
    explore = to_dict(cfg.explore)
    label = {"label": to_dict(cfg.label), "base_dir": base}
    target = {"target": to_dict(cfg.target)} if cfg.target is not None else {}
    calls = {
        "train": StepCall(config=to_dict(cfg.train)),
        "prep-explore": StepCall(config={"explore": explore, "base_dir": base}),
        "run-explore": StepCall(config={"explore": {"drive": cfg.explore.drive},
                                        "memory": cfg.train.model.memory}),
        "select": StepCall(config={"select": to_dict(cfg.select), **target}),
        "prep-label": StepCall(config=label),
        "run-label": StepCall(config=label),
        "collect": StepCall(config={"dedup_tol": 1e-3}),
        "evaluate": StepCall(config=target),
        "decide": StepCall(config={"explore": explore, "base_dir": base, **target}),
        "bootstrap": StepCall(config={"explore": explore, "base_dir": base,
                                      "bootstrap": to_dict(cfg.bootstrap or BootstrapConfig(seed=cfg.seed))}),
    }
    ft = cfg.train.finetune.model
    loop = LoopSpec(n_models=cfg.committee, stack=_stack(cfg), init_data=list(cfg.init_data),
                    init_models=[ft] if ft else [], calls=calls, bootstrap=cfg.uses_bootstrap,
                    test_data=list(cfg.test_data))
    return Plan(workflow=cfg.workflow, loop=loop)


def _stack(cfg) -> int:
    """Members per train step: train.training.stack, or (0, auto) as many stacks as the local engine
    runs steps at a time (one member per step on the other engines: a cluster spreads them out)."""
    from dpa3_al.model.train.config import stack_size

    wf = cfg.workflow
    slots = (wf.local.parallel or os.cpu_count() or 1) if wf.engine == "local" else cfg.committee
    return stack_size(cfg.train.training.stack, cfg.committee, slots)
