"""Arm o of the AL benchmark: the loop with an oracle in place of the committee deviation.

The select step of this arm labels every candidate with EMT (the benchmark's exact reference)
and draws the cap with odds proportional to the committee mean's TRUE largest per-atom force
error squared, where arm a draws with odds ~ max_devi_f^2 (strategy ``weighted``). Everything
else (trust band, filters, cap, training, exploration) is arm a's. So:

- o against a: what a perfect error estimate would add to the deviation (the estimator's cost);
- o against b (random among explored): the most a deviation-weighted draw can buy on this
  benchmark; when o does not reach a goal, no better deviation will.

The oracle's EMT calls are not labels (they are not trained on); only the drawn frames are
labeled, by the ordinary label step.

    python bench/al/oracle.py submit RUN.yaml RUNS_DIR     # what bench_al.py runs for arm o
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ORACLE_FUNC = "al.oracle:select_candidates"


def committee_error(atoms, calcs, reference) -> float:
    """Largest per-atom |F_mean - F_ref| (eV/Å) of the committee mean on ``atoms``."""
    forces = []
    for calc in calcs:
        a = atoms.copy()
        a.calc = calc
        forces.append(np.array(a.get_forces()))
    ref = atoms.copy()
    ref.calc = reference
    return float(np.linalg.norm(np.mean(forces, axis=0) - ref.get_forces(), axis=1).max())


def select_candidates(config: dict, explored: Sequence[Path], iteration: int, workdir: Path,
                      models: Sequence[Path] | None = None, calibration: Path | None = None,
                      labeled_data: Sequence[Path] = ()) -> int:
    """The project's select step with the cap drawn by true error instead of deviation."""
    from ase.calculators.emt import EMT

    from dpa3_al import select as sel
    from dpa3_al import steps
    from dpa3_al.model import DPA3Calculator

    found = steps.checkpoints(models)
    found = [p for p in found if p.name == "model.pt"] or found
    if not found:
        raise RuntimeError("oracle selection: no committee models were given to the select step")
    calcs = [DPA3Calculator(str(p), device="cpu") for p in found]

    def oracle_cap(cands, groups, cfg, descriptor_fn):  # noqa: ARG001 (select._cap's signature)
        errors = np.array([committee_error(r.atoms, calcs, EMT()) for r in cands])
        k = len(cands) if cfg.max_select is None else min(cfg.max_select, len(cands))
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
        order = sel.weighted_draw(errors, k, rng)
        return [(cands[i], rank) for rank, i in enumerate(order)], {"all": k}

    plain_why = sel._why

    def oracle_why(ref, rank, levels, cfg):
        rec = plain_why(ref, rank, levels, cfg)
        rec["reason"] = rec["reason"].replace("draw weighted by max_devi_f^2",
                                              "oracle draw weighted by the true largest force error^2")
        return rec

    sel._cap, sel._why = oracle_cap, oracle_why   # this step process only: select() looks them up at call time
    return steps.select_candidates(config, explored, iteration, workdir, models=models,
                                   calibration=calibration, labeled_data=labeled_data)


def submit(cfg_path: Path, runs: Path) -> int:
    """Submit ``cfg_path`` as ``dpa3-al submit --wait`` does, with the oracle select step."""
    from dpa3_al.config import config_dict, load_run_config
    from dpa3_al.workflows import StepCall, submit as wf_submit, wait
    from dpa3_al.workflows.plan import plan_from_config

    cfg = load_run_config(cfg_path)
    plan = plan_from_config(cfg, cfg_path.resolve().parent)
    plan.loop.calls["select"] = StepCall(func=ORACLE_FUNC, config=plan.loop.calls["select"].config)
    run = wf_submit(runs, cfg.name, plan, config_dict(cfg))
    state = wait(run.root, interval=5.0)
    print(f"{cfg.name}: {state.status}")
    return 0 if state.status == "succeeded" else 1


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "submit":
        sys.exit(__doc__)
    sys.exit(submit(Path(sys.argv[2]), Path(sys.argv[3])))
