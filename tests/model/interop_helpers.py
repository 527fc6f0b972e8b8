"""Shared pieces of the deepmd-kit interop tests: option-set models, systems, the deepmd-kit side."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import torch

from dpa3_al.model import FittingConfig, ModelConfig, RepFlowConfig, build_model, save_model
from dpa3_al.model.graph import Batch
from dpa3_al.model.interop.deepmd_export import export_checkpoint

from ..conftest import DATA

ROOT = Path(__file__).resolve().parents[2]
REF = DATA / "dpa3-reference"
DEEPMD_VENV = Path(os.environ.get("DPA3_AL_DEEPMD_VENV") or ROOT / ".venv-deepmd")   # as setup-deepmd.sh
DP_PY = DEEPMD_VENV / "bin" / "python"
DEEPMD_EVAL = Path(__file__).with_name("deepmd_eval.py")
NO_DEEPMD = "deepmd-kit environment absent: run `bash scripts/setup-deepmd.sh` (see docs/interop.md)"

# Reference checkpoints written by deepmd-kit itself: (folder, head).
REF_CASES = [("small", None), ("dynamic", None), ("multitask", "water"), ("multitask", "hco"),
             ("multitask/sharefit", "water"), ("multitask/sharefit", "hco"), ("multitask/finetune_water", None)]

_BASE = dict(n_dim=12, e_dim=8, a_dim=8, nlayers=3, e_rcut=4.0, e_rcut_smth=3.0, a_rcut=3.0, a_rcut_smth=2.4,
             e_sel=48, a_sel=24, axis_neuron=4, a_compress_rate=0, use_exp_switch=False,
             edge_init_use_dist=False, activation_function="silut:3.0")
# name -> (descriptor options over _BASE, fitting options, precision). Every option the core supports.
OPTION_SETS: dict[str, tuple[dict, dict, str]] = {
    "static": ({}, {}, "float64"),
    "static_truncated": (dict(e_sel=20, a_sel=8), {}, "float64"),
    "dynamic": (dict(use_dynamic_sel=True, sel_reduce_factor=10.0), {}, "float64"),
    "compress_split": (dict(a_compress_rate=1, a_compress_e_rate=2, a_compress_use_split=True), {}, "float64"),
    "compress_linear": (dict(a_compress_rate=2, a_compress_e_rate=1, a_compress_use_split=False), {}, "float64"),
    "multi_edge_message": (dict(n_multi_edge_message=2), {}, "float64"),
    "exp_switch_dist_init": (dict(use_exp_switch=True, edge_init_use_dist=True), {}, "float64"),
    "tebd_bias_concat": (dict(use_tebd_bias=True, concat_output_tebd=True), {}, "float64"),
    "res_avg": (dict(update_style="res_avg"), {}, "float64"),
    "res_incr_no_angle": (dict(update_style="res_incr", update_angle=False), {}, "float64"),
    "res_residual_norm": (dict(update_residual_init="norm"), {}, "float64"),
    "sequential": (dict(sequential_update=True), {}, "float64"),
    "no_smooth_edge": (dict(smooth_edge_update=False), {}, "float64"),
    "env_protection_computed_std": (dict(env_protection=0.05, fix_stat_std=0.0), {}, "float64"),
    "case_embd": ({}, dict(dim_case_embd=3), "float64"),
    "fitting_double_no_dt_tanh": ({}, dict(neuron=[8, 16, 16], resnet_dt=False, activation_function="tanh"), "float64"),
    "dpa31_float32": (dict(use_dynamic_sel=True, use_exp_switch=True, a_compress_rate=1, a_compress_e_rate=2,
                           a_compress_use_split=True, activation_function="custom_silu:3.0"),
                      dict(activation_function="custom_silu:3.0", dim_case_embd=2), "float32"),
}


def option_model(name: str, seed: int = 0, type_map=("O", "H")):
    """A small random model of option set ``name``; residuals, biases, env-mat std and the case
    vector are randomised so that every stored tensor matters."""
    desc, fit, precision = OPTION_SETS[name]
    cfg = ModelConfig(type_map=list(type_map),
                      descriptor=RepFlowConfig(**{**_BASE, **desc}),
                      fitting=dataclasses.replace(FittingConfig(neuron=[16, 16], activation_function="silut:3.0"), **fit),
                      precision=precision)
    model = build_model(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed + 100)
    nt = len(type_map)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "residual" in pname:
                p.copy_(0.1 + 0.3 * torch.rand(p.shape, generator=gen, dtype=torch.float64))
        model.out_bias.copy_(torch.randn(nt, generator=gen, dtype=torch.float64))
        model.bias_atom_e.copy_(0.1 * torch.randn(nt, generator=gen, dtype=torch.float64))
        # one std for the radial component, one shared by x, y, z (as computed statistics are; a
        # different std per Cartesian component would break rotational invariance)
        std = 0.2 + 0.3 * torch.rand((nt, 2), generator=gen, dtype=torch.float64)
        model.descriptor.env_std.copy_(torch.cat([std[:, :1], std[:, 1:].expand(nt, 3)], dim=1))
        if model.case_embd.numel():
            model.case_embd.copy_(torch.rand(model.case_embd.shape, generator=gen, dtype=torch.float64))
    return model.eval()


def exported_option(name: str, folder: Path):
    """Option set ``name`` saved as our checkpoint and exported through the public entry point:
    returns (our model, ``folder/NAME.pt`` in deepmd-kit's format)."""
    model = option_model(name)
    save_model(model, folder / f"{name}.ours.pt")
    export_checkpoint(folder / f"{name}.ours.pt", folder / f"{name}.pt")
    return model, folder / f"{name}.pt"


def water_systems() -> dict[str, dict]:
    """{name: {coord (nf,nat,3), cell (nf,3,3) or absent, atype (nat,)}} with O=0, H=1: one 192-atom
    water frame, the 24-atom cluster and a small triclinic cell (neighbours across several images)."""
    ref = np.load(REF / "small" / "reference.npz")
    out = {"water_pbc": {"coord": ref["water_pbc__coord"][:1], "cell": ref["water_pbc__cell"][:1],
                         "atype": ref["water_pbc__atype"]},
           "water_cluster": {"coord": ref["water_cluster__coord"], "atype": ref["water_cluster__atype"]}}
    rng = np.random.default_rng(7)
    cell = np.array([[4.6, 0.0, 0.0], [0.9, 4.9, 0.0], [-0.7, 0.6, 5.2]])
    frac = rng.uniform(0, 1, (10, 3))
    out["small_triclinic"] = {"coord": (frac @ cell)[None], "cell": cell[None], "atype": np.arange(10) % 2}
    return out


def reference_systems(folder: str, head: str | None) -> dict[str, dict]:
    """The stored sets of a reference checkpoint (first frame of each)."""
    ref = np.load(REF / folder / "reference.npz")
    pre = f"{head}__" if head else ""
    names = sorted({k[len(pre):].split("__")[0] for k in ref.files if k.startswith(pre) and k.endswith("__coord")})
    out = {}
    for s in names:
        k = f"{pre}{s}__"
        out[s] = {"coord": ref[k + "coord"][:1], "atype": ref[k + "atype"]}
        if k + "cell" in ref.files:
            out[s]["cell"] = ref[k + "cell"][:1]
    return out


def save_systems(systems: dict[str, dict], path: Path) -> Path:
    np.savez(path, **{f"{s}__{q}": v for s, d in systems.items() for q, v in d.items()})
    return path


def ours(model, systems: dict[str, dict]) -> dict[str, np.ndarray]:
    """Our predictions in deepmd_eval.py's keys (float64)."""
    out = {}
    for s, d in systems.items():
        periodic = "cell" in d
        frames = [(d["coord"][f], d["atype"], d["cell"][f] if periodic else None, np.array([periodic] * 3))
                  for f in range(len(d["coord"]))]
        r = model(Batch.from_arrays(frames))
        nf = len(d["coord"])
        out[f"{s}__energy"] = r.energy.detach().numpy()
        out[f"{s}__atom_energy"] = r.atom_energy.detach().numpy().reshape(nf, -1)
        out[f"{s}__force"] = r.forces.detach().numpy().reshape(nf, -1, 3)
        out[f"{s}__virial"] = r.virial.detach().numpy()
    return out


def max_errors(a: dict, b: dict, systems: dict[str, dict]) -> dict[str, float]:
    """Largest |difference| per quantity: energy and virial per atom (eV/atom), forces (eV/Å)."""
    err = {"energy_per_atom": 0.0, "force": 0.0, "virial_per_atom": 0.0, "atom_energy": 0.0}
    for s, d in systems.items():
        nat = len(d["atype"])
        err["energy_per_atom"] = max(err["energy_per_atom"], float(np.abs(a[f"{s}__energy"] - b[f"{s}__energy"]).max()) / nat)
        err["virial_per_atom"] = max(err["virial_per_atom"], float(np.abs(a[f"{s}__virial"] - b[f"{s}__virial"]).max()) / nat)
        err["force"] = max(err["force"], float(np.abs(a[f"{s}__force"] - b[f"{s}__force"]).max()))
        err["atom_energy"] = max(err["atom_energy"],
                                 float(np.abs(a[f"{s}__atom_energy"] - b[f"{s}__atom_energy"]).max()))
    return err


def run_deepmd(jobs: list[dict], workdir: Path, timeout: int = 1800, workers: int = 2) -> None:
    """Run tests/model/deepmd_eval.py for every job (evaluations and freezes) in up to ``workers``
    deepmd-kit processes side by side (one thread each; jobs dealt round-robin)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DP_INTRA_OP_PARALLELISM_THREADS": "1",
           "DP_INTER_OP_PARALLELISM_THREADS": "1", "PYTHONPATH": ""}
    shares = [jobs[i::workers] for i in range(min(workers, len(jobs)))]
    procs, codes = [], []
    try:
        for i, share in enumerate(shares):
            spec = workdir / f"jobs{i}.json"
            spec.write_text(json.dumps([{k: (str(v) if isinstance(v, Path) else v) for k, v in j.items()}
                                        for j in share]))
            with open(workdir / f"jobs{i}.err", "w") as err:
                procs.append(subprocess.Popen([str(DP_PY), str(DEEPMD_EVAL), "--jobs", str(spec)], env=env,
                                              cwd=workdir, stdout=subprocess.DEVNULL, stderr=err))
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    missing = [j["output"] for j in jobs if not Path(j["output"]).exists()]
    if missing:
        errors = "\n".join((workdir / f"jobs{i}.err").read_text()[-3000:] for i in range(len(shares)))
        raise AssertionError(f"deepmd-kit side failed (exit codes {codes}), no results for {missing}:\n{errors}")
