"""Arm o of the AL benchmark: the loop with the true error as its selection draw's weight.

Arm a draws its cap with odds ~ max_devi_f^2 (strategy ``weighted``). The oracle replaces that
weight in the select step and keeps everything else (trust band, filters, cap, training,
exploration) as arm a's: the select step labels every candidate with EMT (the benchmark's exact
reference) and draws with odds ~ the committee mean's TRUE largest per-atom force error squared.
o against a: what a perfect error estimate would add to the deviation; o against b (random
among explored): the most a deviation-weighted draw can buy on this benchmark. The oracle's EMT
calls are not labels (nothing trains on them); only the drawn frames are labeled, by the
ordinary label step. (Arm v, the draw by avg_devi_f, is the project's ``select.draw_by``.)

The selection record still says strategy ``weighted`` by max_devi_f, so the calibration weighs
this arm's labels by max_devi_f^2 odds: its target estimates (not used at conv_accuracy 1) are not
exact.

    python bench/al/oracle.py submit o RUN.yaml RUNS_DIR     # what bench_al.py runs for arm o
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ARM_FUNCS = {"o": "al.oracle:select_oracle"}


def committee_error(atoms, committee, reference) -> float:
    """Largest per-atom |F_mean - F_ref| (eV/Å) of the committee mean on ``atoms``
    (``committee``: a CommitteeCalculator, whose forces are the members' mean)."""
    a, ref = atoms.copy(), atoms.copy()
    a.calc, ref.calc = committee, reference
    return float(np.linalg.norm(a.get_forces() - ref.get_forces(), axis=1).max())


def _select_drawn_by(weights, label: str, config: dict, explored: Sequence[Path], iteration: int, workdir: Path,
                     models: Sequence[Path] | None, calibration: Path | None, labeled_data: Sequence[Path]) -> int:
    """The project's select step with the cap drawn with odds ~ ``weights(candidates)``^2."""
    from dpa3_al import select as sel
    from dpa3_al import steps

    def drawn_cap(cands, groups, cfg, descriptor_fn):  # noqa: ARG001 (select._cap's signature)
        k = len(cands) if cfg.max_select is None else min(cfg.max_select, len(cands))
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
        order = sel.weighted_draw(np.asarray(weights(cands, models), dtype=np.float64), k, rng)
        return [(cands[i], rank) for rank, i in enumerate(order)], {"all": k}

    plain_why = sel._why

    def why(ref, rank, levels, cfg):
        rec = plain_why(ref, rank, levels, cfg)
        rec["reason"] = rec["reason"].replace("draw weighted by max_devi_f^2", f"draw weighted by {label}^2")
        return rec

    sel._cap, sel._why = drawn_cap, why     # this step process only: select() looks them up at call time
    return steps.select_candidates(config, explored, iteration, workdir, models=models,
                                   calibration=calibration, labeled_data=labeled_data)


def true_errors(cands, models) -> list[float]:
    """The committee mean's true largest per-atom force error (eV/Å) on each candidate (EMT)."""
    from ase.calculators.emt import EMT

    from dpa3_al import steps
    from dpa3_al.model import CommitteeCalculator

    found = steps.checkpoints(models)
    found = [p for p in found if p.name == "model.pt"] or found
    if not found:
        raise RuntimeError("oracle selection: no committee models were given to the select step")
    committee = CommitteeCalculator([str(p) for p in found], device="cpu")
    return [committee_error(r.atoms, committee, EMT()) for r in cands]


def select_oracle(config: dict, explored: Sequence[Path], iteration: int, workdir: Path,
                  models: Sequence[Path] | None = None, calibration: Path | None = None,
                  labeled_data: Sequence[Path] = ()) -> int:
    """Arm o's select step: the draw weighted by the true error."""
    return _select_drawn_by(true_errors, "the oracle's true largest force error", config, explored, iteration,
                            workdir, models, calibration, labeled_data)


def submit(arm: str, cfg_path: Path, runs: Path) -> int:
    """Submit ``cfg_path`` as ``dpa3-al submit --wait`` does, with ``arm``'s select step."""
    from dpa3_al.config import config_dict, load_run_config
    from dpa3_al.workflows import StepCall, submit as wf_submit, wait
    from dpa3_al.workflows.plan import plan_from_config

    cfg = load_run_config(cfg_path)
    plan = plan_from_config(cfg, cfg_path.resolve().parent)
    plan.loop.calls["select"] = StepCall(func=ARM_FUNCS[arm], config=plan.loop.calls["select"].config)
    run = wf_submit(runs, cfg.name, plan, config_dict(cfg))
    state = wait(run.root, interval=5.0)
    print(f"{cfg.name}: {state.status}")
    return 0 if state.status == "succeeded" else 1


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "submit" or sys.argv[2] not in ARM_FUNCS:
        sys.exit(__doc__)
    sys.exit(submit(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])))
