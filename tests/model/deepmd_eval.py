"""Runs in the deepmd-kit environment (.venv-deepmd, made by scripts/setup-deepmd.sh), never in ours.

    .venv-deepmd/bin/python tests/model/deepmd_eval.py MODEL INPUT.npz OUT.npz [--head H]
    .venv-deepmd/bin/python tests/model/deepmd_eval.py --jobs JOBS.json   # [{model, input, output, head, jit}]

A job ``{"freeze": CHECKPOINT, "output": FROZEN.pth, "head": H}`` runs ``dp --pt freeze -c CHECKPOINT -o
FROZEN.pth [--head H]`` through deepmd-kit's own command-line entry point (``deepmd.main:main``, what the
``dp`` script calls), so several freezes share one import of torch and deepmd-kit (~10 s each otherwise).

INPUT.npz holds systems ``<name>__coord`` (nf, nat, 3) Å, ``<name>__cell`` (nf, 3, 3) Å (absent:
not periodic) and ``<name>__atype`` (nat,). For each system OUT.npz gets ``<name>__energy`` (nf,)
eV, ``__atom_energy`` (nf, nat), ``__force`` (nf, nat, 3) eV/Å and ``__virial`` (nf, 3, 3) eV, from
deepmd-kit's ``DeepPot``. For a ``.pt`` checkpoint it first loads the state dict into deepmd-kit's
own model built from ``_extra_state['model_params']`` with ``strict=True`` (DeepPot itself only
warns about missing or unexpected keys) and stores the outcome as ``strict_load`` ("ok" or the error).
Only deepmd-kit's public API is called.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def strict_load(path: str, head: str | None) -> str:
    import torch
    from deepmd.pt.model.model import get_model
    from deepmd.pt.train.wrapper import ModelWrapper

    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    params = state["_extra_state"]["model_params"]
    if "model_dict" in params:
        name = head or next(iter(params["model_dict"]))
        params = params["model_dict"][name]
        state = {"_extra_state": state["_extra_state"],
                 **{k.replace(f"model.{name}.", "model.Default."): v for k, v in state.items()
                    if k.startswith(f"model.{name}.")}}
    try:
        ModelWrapper(get_model(params)).load_state_dict(state, strict=True)
    except Exception as err:  # noqa: BLE001 - reported to the test
        return f"{type(err).__name__}: {err}"
    return "ok"


def evaluate(model: str, inputs: str, output: str, head: str | None, jit: bool = False) -> None:
    from deepmd.infer import DeepPot

    out: dict[str, np.ndarray] = {}
    if model.endswith(".pt"):
        out["strict_load"] = np.array(strict_load(model, head))
    # no_jit: the eager model (DeepPot's default scripts it with TorchScript first: the same numbers,
    # several seconds more per model); jobs with "jit": true, frozen .pth files and LAMMPS cover TorchScript.
    kwargs = {"head": head} if head else {}
    dp = DeepPot(model, no_jit=not jit, **kwargs) if model.endswith(".pt") else DeepPot(model, **kwargs)
    out["type_map"] = np.array(dp.get_type_map())
    data = np.load(inputs)
    for name in sorted({k.split("__")[0] for k in data.files}):
        coord, atype = data[f"{name}__coord"], data[f"{name}__atype"]
        cell = data[f"{name}__cell"].reshape(len(coord), 9) if f"{name}__cell" in data.files else None
        e, f, v, ae, _ = dp.eval(coord.reshape(len(coord), -1), cell, atype, atomic=True)
        out[f"{name}__energy"] = e.reshape(len(coord))
        out[f"{name}__atom_energy"] = ae.reshape(len(coord), -1)
        out[f"{name}__force"] = f.reshape(len(coord), -1, 3)
        out[f"{name}__virial"] = v.reshape(len(coord), 3, 3)
    np.savez(output, **out)


def freeze(checkpoint: str, output: str, head: str | None) -> None:
    from deepmd.main import main as dp

    dp(["--pt", "freeze", "-c", checkpoint, "-o", output] + (["--head", head] if head else []))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("input", nargs="?")
    ap.add_argument("output", nargs="?")
    ap.add_argument("--head")
    ap.add_argument("--jobs", help="JSON list of {model, input, output, head}: one process for many models")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    # TorchScript models (jit jobs, frozen .pth) run in the graph executor without its optimization passes:
    # the same operations, half the time (each new input shape is profiled and re-optimized otherwise).
    # `dp --pt test` and LAMMPS (tests/model/test_lammps.py) keep the optimized path covered.
    torch._C._get_graph_executor_optimize(False)
    jobs = json.loads(open(args.jobs).read()) if args.jobs else [
        {"model": args.model, "input": args.input, "output": args.output, "head": args.head}]
    failed = 0
    for job in jobs:
        try:
            if "freeze" in job:
                freeze(job["freeze"], job["output"], job.get("head"))
            else:
                evaluate(job["model"], job["input"], job["output"], job.get("head"), bool(job.get("jit")))
        except Exception as err:  # noqa: BLE001 - one bad model must not hide the others' results
            failed += 1
            np.savez(job["output"], error=np.array(f"{type(err).__name__}: {err}"))
            print(f"job {job}: {type(err).__name__}: {err}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
