"""``train_summary.json``: what one training run did, stored next to the model and in its metadata.

Keys: finished, converged (bool), reason, steps, planned_steps, stop_reason, time_s, cpu_s,
time_per_step_s, median_step_s and median_step_cpu_s (training steps of the last process), seed, member, stack (the
members of its stack, or null), model ("best" or "last"), best_step, errors ({"train",
"validation"}: RMSE of E/atom eV, F eV/Å, V/atom eV at the output model's step), data
(systems, frames, validation frames, type map), init (fine-tune or init-model source, head,
type-map remap, bias change), parameters (total, trainable), config (the full TrainConfig).
"""

from __future__ import annotations

import math
from typing import Any


def _clean(values: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if not math.isfinite(v) else float(v)) for k, v in values.items()}


def _median(values: list[float]) -> float | None:
    return round(float(sorted(values)[len(values) // 2]), 4) if values else None


def build_summary(loop: Any, verdict: Any, use_best: bool) -> dict[str, Any]:
    """The summary of a finished ``_Loop`` (model/train.py)."""
    st, trainer = loop.state, loop.t
    rows = st.rows
    out_step = st.best_step if use_best else st.step
    at = next((r for r in rows if r.step == out_step), rows[-1])
    train_err = next((r.trn for r in rows if r.step >= out_step and any(math.isfinite(v) for v in r.trn.values())),
                     rows[-1].trn)
    n_params = sum(p.numel() for p in loop.model.parameters())
    n_train = sum(p.numel() for p in loop.model.parameters() if p.requires_grad)
    return {
        "finished": True,
        "converged": bool(verdict.converged),
        "reason": verdict.reason,
        "improvement_in_window": verdict.improvement,
        "steps": st.step,
        "planned_steps": st.total_steps,
        "stop_reason": loop.stop_reason,
        "time_s": round(st.elapsed, 2),
        "cpu_s": round(st.cpu, 2),
        "time_per_step_s": round(st.elapsed / max(st.step, 1), 4),
        "median_step_s": _median([t[0] for t in loop.step_times]),
        "median_step_cpu_s": _median([t[1] for t in loop.step_times]),
        "seed": trainer.seed,
        "member": trainer.member,
        "stack": getattr(loop, "stack_members", None),       # the members it was trained with (model/stack.py)
        "model": "best" if use_best else "last",
        "best_step": st.best_step,
        "errors": {"train": _clean(train_err), "validation": _clean(at.val),
                   "force_label_rms": round(loop._force_label_rms(), 6),
                   "units": {"e": "eV/atom", "f": "eV/Å", "v": "eV/atom"}},
        "data": {"systems": [s.name for s in loop.data.systems], "frames": loop.data.n_frames,
                 "validation_systems": [s.name for s in loop.val.systems] if loop.val else [],
                 "validation_frames": loop.val.n_frames if loop.val else 0,
                 "validation_frames_checked": sum(int(lab.energy.shape[0]) for _, lab, _ in loop.val_batches),
                 "type_map": list(loop.data.type_map)},
        "init": loop.info.as_dict() if loop.info else {"mode": "scratch"},
        "parameters": {"total": int(n_params), "trainable": int(n_train)},
        "config": trainer.cfg.to_dict(),
    }
