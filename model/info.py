"""What a model file holds (``dpa3-al info``): hyper-parameters, type map, parameters, provenance,
and, for a given number of atoms, the estimated peak memory of one energy+forces+virial call.
"""

from __future__ import annotations

import math
from pathlib import Path

from dpa3_al.model.checkpoint import FORMAT, load_model, read_checkpoint
from dpa3_al.model.config import FittingConfig, RepFlowConfig
from dpa3_al.model.interop.deepmd_import import deepmd_heads, is_deepmd_checkpoint
from dpa3_al.model.energy import DPA3Model
from dpa3_al.common.typed_config import to_dict


def describe(path: Path, head: str | None = None) -> str:
    """A human-readable description of the checkpoint at ``path``."""
    obj = read_checkpoint(path)
    kind = "dpa3-al" if obj.get("format") == FORMAT else "deepmd-kit" if is_deepmd_checkpoint(obj) else "unknown"
    lines = [f"model        {path}  ({kind} checkpoint)"]
    if kind == "deepmd-kit":
        params = obj["model"]["_extra_state"]["model_params"]
        if "model_dict" in params:
            lines.append(f"heads        {', '.join(deepmd_heads(params))}  (multi-task; choose one with --head)")
            if head is None:
                return "\n".join(lines)
    model = load_model(path, head=head)
    cfg = model.config
    lines += [f"head         {head}" if head else "",
              f"type map     {' '.join(cfg.type_map)}  ({len(cfg.type_map)} types)",
              f"precision    {cfg.precision}",
              f"parameters   {_count(model)}",
              "out_bias     " + ", ".join(f"{t} {float(b):.6g}" for t, b in zip(cfg.type_map, model.out_bias)) + " eV"]
    lines.append("descriptor   " + _changed(cfg.descriptor, RepFlowConfig()))
    lines.append("fitting      " + _changed(cfg.fitting, FittingConfig()))
    meta = getattr(model, "metadata", None) or {}
    lines += _provenance(meta)
    return "\n".join(line for line in lines if line)


def _count(model: DPA3Model) -> str:
    total = sum(p.numel() for p in model.parameters())
    desc = sum(p.numel() for p in model.descriptor.parameters())
    return f"{total:,} (descriptor {desc:,}, fitting {total - desc:,})"


def _changed(cfg, default) -> str:
    """All keys, those differing from the water-example defaults marked with '*'."""
    now, ref = to_dict(cfg), to_dict(default)
    return ", ".join(f"{k}={v}{'*' if ref.get(k) != v else ''}" for k, v in now.items())


def _provenance(meta: dict) -> list[str]:
    lines = []
    if meta.get("created"):
        lines.append(f"created      {meta['created']} (dpa3-al {meta.get('dpa3_al_version', '?')})")
    if meta.get("source") == "deepmd-kit":
        infos = meta.get("train_infos", {})
        lines.append(f"provenance   deepmd-kit checkpoint, step {infos.get('step', '?')}, lr {infos.get('lr', '?')}")
    tr = meta.get("training")
    if not isinstance(tr, dict) or not tr.get("finished"):
        return lines + ([f"training     checkpoint at step {tr.get('step')} (not finished)"] if isinstance(tr, dict)
                        else [])
    init = tr.get("init", {})
    start = init.get("mode", "scratch")
    if start != "scratch":
        start += f" from {init.get('source')}" + (f" head {init['head']}" if init.get("head") else "")
    err = tr.get("errors", {})
    fmt = lambda d: ", ".join(f"{k} {v:.4g}" for k, v in (d or {}).items() if isinstance(v, (int, float))  # noqa: E731
                              and math.isfinite(v))
    data = tr.get("data", {})
    lines += [f"training     {tr['steps']} steps ({tr.get('model')} model at step {tr.get('best_step')}), "
              f"{tr.get('time_s', 0):.0f} s, seed {tr.get('seed')}, start: {start}",
              f"converged    {'yes' if tr.get('converged') else 'NO'}: {tr.get('reason')}",
              f"data         {data.get('frames')} training frames in {len(data.get('systems', []))} systems, "
              f"{data.get('validation_frames')} validation frames",
              f"errors       train RMSE {fmt(err.get('train'))}; validation RMSE {fmt(err.get('validation'))} "
              f"(e, v eV/atom; f eV/Å)"]
    return lines


def memory_report(path: Path, head: str | None, n_atoms: int, budget_gb: float | None = None,
                  density: float = 0.1) -> str:
    """Estimated peak memory of E+F+V for ``n_atoms`` atoms of a homogeneous system and how many atoms fit."""
    from dpa3_al.model.kernels.memory import UNITS, available_bytes, base_bytes, max_atoms, typical_counts, unit_costs

    model = load_model(path, head=head)
    base = base_bytes()
    budget = budget_gb * 1e9 if budget_gb else base + available_bytes()
    per_atom = {u: c / 1000.0 for u, c in typical_counts(model, 1000, density).items()}
    counts = typical_counts(model, n_atoms, density)
    lines = [f"memory       {n_atoms} atoms at {density} atoms/Å^3: ~{counts['edge']:,} edges, "
             f"{counts['triple']:,} angle triples; budget {budget / 1e9:.1f} GB "
             f"({'given' if budget_gb else 'available now'})"]
    for training in (False, True):
        lines.append("  training step (E+F+V loss, one batch of that size):" if training else "  evaluation (E+F+V):")
        for mode in ("default", "low"):
            costs = unit_costs(model, mode, training=training)
            peak = costs.peak(counts, base)
            fits = max_atoms(costs, {u: per_atom[u] for u in UNITS}, 0.95 * budget, base)
            lines.append(f"    {mode:<8} peak ~{peak / 1e9:.2f} GB for {n_atoms} atoms; about {fits:,} atoms fit")
    return "\n".join(lines)
