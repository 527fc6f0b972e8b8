"""``dpa3-al train | test | info``: train models (committees, fine-tunes), measure errors, describe a model."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from dpa3_al.commands import add_head_option, add_model_argument, add_verb


def register(subparsers: Any) -> None:
    _register_train(subparsers)
    _register_test(subparsers)
    _register_info(subparsers)


def _register_train(subparsers: Any) -> None:
    p = add_verb(
        subparsers, "train", run_train, "train a DPA3 model or committee (from scratch, fine-tune, or continue)",
        "Train from INPUT.yaml (a training config, or a run config with a `train:` section) and/or "
        "flags. Writes into OUTPUT: model.pt, lcurve.csv, lcurve.png, train_summary.json (converged: yes/no "
        "and why), checkpoint.pt, train.log; with --numb-models N, member-I/ folders and model-I.pt. "
        "Ctrl-C saves a checkpoint; --restart continues exactly where the run stopped.")
    p.add_argument("input", nargs="?", type=Path, help="YAML/JSON training config (optional)")
    p.add_argument("--data", nargs="+", type=Path, default=[], metavar="PATH",
                   help="training data: deepmd npy directories (searched recursively) and/or extxyz files")
    p.add_argument("--valid", nargs="+", type=Path, default=[], metavar="PATH", help="validation data")
    p.add_argument("-o", "--output", type=Path, default=Path("."), help="output directory (default: .)")
    p.add_argument("--type-map", nargs="+", metavar="EL", help="element order of the model")
    p.add_argument("--steps", type=int, help="training steps (training.numb_steps)")
    p.add_argument("--max-time", type=float, help="time budget in seconds (training.max_time)")
    p.add_argument("--start-lr", type=float, help="learning_rate.start_lr")
    p.add_argument("--batch-size", help="frames per batch, 'auto' or 'auto:N'")
    p.add_argument("--seed", type=int, help="training.seed (member i uses seed + i)")
    p.add_argument("--numb-models", type=int, help="committee size (models differing in seed)")
    p.add_argument("--parallel", type=int, help="members (or stacks) trained at the same time (processes; default 0: one per CPU core)")
    p.add_argument("--stack", type=int, help="members trained together as one stacked model per process "
                   "(training.stack; faster for small cells; a stack's members share the data order)")
    p.add_argument("--threads", type=int, help="torch threads per process (default: cores / parallel)")
    p.add_argument("--memory", choices=["default", "low"], help="model.memory")
    p.add_argument("--restart", action="store_true", help="continue the checkpoints in OUTPUT exactly")
    p.add_argument("--finetune", type=Path, metavar="CKPT", help="fine-tune a pre-trained model (ours or deepmd-kit)")
    add_head_option(p, "head of a multi-task pre-trained model (RANDOM: new fitting net)")
    p.add_argument("--freeze-descriptor", action="store_true", help="fine-tune the fitting net only")
    p.add_argument("--init-model", type=Path, metavar="CKPT", help="continue a trained model (fewer steps, lower lr)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _register_test(subparsers: Any) -> None:
    p = add_verb(subparsers, "test", run_test, "errors of a model on labeled data (RMSE/MAE per system, parity plots)",
                 "Evaluate MODEL on DATA and print RMSE and MAE of the energy per atom, forces and virial per atom "
                 "for every system; write parity plots.")
    add_model_argument(p)
    p.add_argument("data", nargs="+", type=Path, help="deepmd systems (npy, npy/mixed, raw directories searched "
                   "recursively; .h5 files) and/or extxyz files")
    p.add_argument("--fmt", help="dpdata format of other files (e.g. vasp/outcar)")
    p.add_argument("--plot", type=Path, default=Path("parity.png"), help="parity plot PNG (default parity.png)")
    p.add_argument("--json", type=Path, help="also write the errors as JSON")
    p.add_argument("-d", "--detail-file", type=Path, metavar="PREFIX",
                   help="write dp test's detail files PREFIX.e.out, .e_peratom.out, .f.out, .v.out, .v_peratom.out")


def _register_info(subparsers: Any) -> None:
    p = add_verb(subparsers, "info", run_info, "hyper-parameters, type map, parameter count and provenance of a model",
                 "Describe MODEL; with --atoms N, also the estimated peak memory of one energy+forces+virial "
                 "evaluation of N atoms and how many atoms fit (default and low-memory mode).")
    add_model_argument(p)
    p.add_argument("--atoms", type=int, help="estimate the memory of N atoms (liquid-water density by default)")
    p.add_argument("--density", type=float, default=0.1, help="atoms per Å^3 for --atoms (default 0.1)")
    p.add_argument("--memory-budget", type=float, metavar="GB", help="memory to plan for (default: available now)")


def build_config(args: argparse.Namespace):
    """The TrainConfig from INPUT (if any) with the flags applied on top."""
    from dpa3_al.model.train.config import TrainConfig, load_train_config

    cfg = load_train_config(args.input) if args.input else TrainConfig()
    changes: dict[str, dict] = {"data": {}, "model": {}, "training": {}, "learning_rate": {}, "finetune": {},
                                "init_model": {}}
    if args.data:
        changes["data"]["systems"] = [*cfg.data.systems, *args.data]
    if args.valid:
        changes["data"]["validation"] = [*cfg.data.validation, *args.valid]
    if args.batch_size:
        changes["data"]["batch_size"] = int(args.batch_size) if args.batch_size.isdigit() else args.batch_size
    for flag, section, key in (("type_map", "model", "type_map"), ("memory", "model", "memory"),
                               ("steps", "training", "numb_steps"), ("max_time", "training", "max_time"),
                               ("seed", "training", "seed"), ("numb_models", "training", "numb_models"),
                               ("parallel", "training", "parallel"), ("threads", "training", "threads"),
                               ("stack", "training", "stack"),
                               ("start_lr", "learning_rate", "start_lr"), ("finetune", "finetune", "model"),
                               ("head", "finetune", "head"), ("init_model", "init_model", "model")):
        value = getattr(args, flag)
        if value is not None:
            changes[section][key] = value
    if args.freeze_descriptor:
        changes["finetune"]["freeze_descriptor"] = True
    if args.no_progress:
        changes["training"]["progress"] = False
    from dpa3_al.common.typed_config import from_dict

    return from_dict(TrainConfig, _merge(cfg.to_dict(), changes), source="command line")


def _merge(base: dict, changes: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in changes.items():
        out[section].update({k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()})
    return out


def run_train(args: argparse.Namespace) -> int:
    from dpa3_al.model.train.committee import train_committee

    cfg = build_config(args)
    summaries = train_committee(cfg, args.output, restart=args.restart)
    for s in summaries:
        val = s["errors"]["validation"]
        errs = ", ".join(f"{k} {v:.3g}" for k, v in val.items() if isinstance(v, float) and math.isfinite(v))
        print(f"{s['model_path']}: {s['steps']} steps, {'converged' if s['converged'] else 'NOT converged'} "
              f"({s['reason']}); validation RMSE {errs or '-'} (e, v eV/atom; f eV/Å)")
    return 0


def run_test(args: argparse.Namespace) -> int:
    from dpa3_al.model import load_model
    from dpa3_al.model.train.data import load_systems
    from dpa3_al.model.train.evaluate import evaluate_systems, format_table, parity_plots, total_errors
    from dpa3_al.model.kernels.runtime import tune_malloc

    tune_malloc()
    model = load_model(args.model, head=args.head)
    systems = load_systems(args.data, args.fmt)
    results = evaluate_systems(model, systems, progress=True)
    print(format_table(results))
    parity_plots(results, args.plot, title=str(args.model))
    print(f"parity plots: {args.plot}")
    if args.detail_file:
        from dpa3_al.interop.dp_test import write_detail_files

        written = write_detail_files(results, systems, args.detail_file)
        print("detail files: " + ", ".join(str(p) for p in written))
    if args.json:
        from dpa3_al.common.fileio import atomic_write_json as write_json

        write_json(args.json, {"model": str(args.model), "systems": [r.as_dict() for r in results],
                               "all": total_errors(results).as_dict()})
    return 0


def run_info(args: argparse.Namespace) -> int:
    from dpa3_al.model.info import describe, memory_report

    print(describe(args.model, args.head))
    if args.atoms:
        print(memory_report(args.model, args.head, args.atoms, args.memory_budget, args.density))
    return 0

