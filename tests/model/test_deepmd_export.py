"""Export to deepmd-kit 3.2 checkpoints.

Without deepmd-kit (default suite): export then import gives the identical model for every option set
and every reference checkpoint, and re-exporting deepmd-kit's own checkpoints reproduces their tensors.
With .venv-deepmd (scripts/setup-deepmd.sh): deepmd-kit's DeepPot evaluates the exported files to our
numbers (1e-10 eV/atom and eV/Å in float64, 1e-5 in float32), and `dp --pt freeze` / `dp --pt test` work.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch

from dpa3_al.model import CheckpointError, load_model, save_model
from dpa3_al.model.interop.deepmd_export import HeadExtras, export_checkpoint, export_deepmd
from dpa3_al.model.interop.deepmd_import import import_deepmd

from .interop_helpers import (DP_PY, NO_DEEPMD, OPTION_SETS, REF, REF_CASES, exported_option, max_errors,
                              option_model, ours, reference_systems, run_deepmd, save_systems, water_systems)

needs_deepmd = pytest.mark.skipif(not DP_PY.exists(), reason=NO_DEEPMD)
TOL = {"float64": 1e-10, "float32": 1e-5}


def assert_same_model(a, b):
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def assert_same_predictions(a, b, systems, tol=1e-12):
    pa, pb = ours(a, systems), ours(b, systems)
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=0, atol=tol, err_msg=k)


# ---------------------------------------------------------------- round trip (no deepmd-kit needed)

@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_round_trip_option_sets(name, tmp_path):
    model = option_model(name)
    back, _ = import_deepmd(export_deepmd(model), None, "memory")
    assert_same_model(model, back)
    assert_same_predictions(model, back, water_systems())
    # through files and the public entry point: our checkpoint -> deepmd-kit checkpoint -> load_model
    save_model(model, tmp_path / "ours.pt")
    summary = export_checkpoint(tmp_path / "ours.pt", tmp_path / "deepmd.pt")
    assert summary["heads"] == ["Default"] and summary["precision"] == OPTION_SETS[name][2]
    assert_same_model(model, load_model(tmp_path / "deepmd.pt"))


@pytest.mark.parametrize("folder,head", REF_CASES, ids=[f"{f}-{h}" for f, h in REF_CASES])
def test_round_trip_reference(folder, head, tmp_path):
    """deepmd-kit checkpoint -> ours -> exported: same model, and the SAME tensors as deepmd-kit wrote."""
    src = REF / folder / "model.ckpt.pt"
    export_checkpoint(src, tmp_path / "out.pt", head=head)
    orig = load_model(src, head=head)
    assert_same_model(orig, load_model(tmp_path / "out.pt"))
    theirs = torch.load(src, weights_only=True)["model"]
    mine = torch.load(tmp_path / "out.pt", weights_only=True)["model"]
    h = head or "Default"
    theirs = {k.replace(f"model.{h}.", "model.Default."): v for k, v in theirs.items() if k.startswith(f"model.{h}.")}
    assert sorted(theirs) == sorted(k for k in mine if k != "_extra_state")
    for k, v in theirs.items():
        assert v.dtype == mine[k].dtype and torch.equal(v, mine[k]), k
    # the model parameters deepmd-kit builds its model from describe the same model
    params = mine["_extra_state"]["model_params"]
    back, _ = import_deepmd({"model": mine}, None, "x")
    assert back.config == orig.config and params["type_map"] == orig.type_map


@pytest.mark.parametrize("folder", ["multitask", "multitask/sharefit"])
def test_round_trip_whole_multitask(folder, tmp_path):
    src = REF / folder / "model.ckpt.pt"
    summary = export_checkpoint(src, tmp_path / "mt.pt")
    assert summary["heads"] == ["water", "hco"]
    theirs = torch.load(src, weights_only=True)["model"]
    mine = torch.load(tmp_path / "mt.pt", weights_only=True)["model"]
    assert sorted(theirs) == sorted(mine)
    for k, v in theirs.items():
        if k != "_extra_state":
            assert torch.equal(v, mine[k]), k
    # shared tensors are stored once (shared storage), as deepmd-kit stores them
    key = "atomic_model.descriptor.repflows.layers.0.node_self_mlp.matrix"
    assert mine[f"model.water.{key}"].data_ptr() == mine[f"model.hco.{key}"].data_ptr()
    params = mine["_extra_state"]["model_params"]
    assert list(params["model_dict"]) == ["water", "hco"] and "dpa3_descriptor" in params["shared_dict"]
    assert ("shared_fitting" in params["shared_dict"]) == (folder == "multitask/sharefit")
    for head in ("water", "hco"):
        assert_same_model(load_model(src, head=head), load_model(tmp_path / "mt.pt", head=head))
    assert float(mine["model.water.min_nbor_dist"]) == float(theirs["model.water.min_nbor_dist"])


def test_multitask_from_our_models():
    """Two of our heads sharing a descriptor -> one multi-task checkpoint; each head comes back."""
    a, b = option_model("case_embd", seed=1), option_model("case_embd", seed=2)
    b.descriptor.load_state_dict(a.descriptor.state_dict())
    with torch.no_grad():
        b.case_embd.copy_(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    ckpt = export_deepmd({"one": a, "two": b}, {"one": HeadExtras(min_nbor_dist=0.9)}, {"lr": 1e-4, "step": 7})
    state = ckpt["model"]
    params = state["_extra_state"]["model_params"]
    assert "dpa3_descriptor" in params["shared_dict"] and "shared_fitting" not in params["shared_dict"]
    assert state["_extra_state"]["train_infos"] == {"lr": 1e-4, "step": 7}
    assert float(state["model.one.min_nbor_dist"]) == 0.9 and float(state["model.two.min_nbor_dist"]) == -1.0
    for head, model in (("one", a), ("two", b)):
        back, meta = import_deepmd(ckpt, head, "memory")
        assert meta["heads"] == ["one", "two"]
        assert_same_model(model, back)


def test_multitask_needs_one_type_map():
    with pytest.raises(CheckpointError, match="share one type map"):
        export_deepmd({"a": option_model("static"), "b": option_model("static", type_map=("H", "O"))})


def test_export_cli(tmp_path):
    from dpa3_al.cli import main

    save_model(option_model("dynamic"), tmp_path / "m.pt")
    assert main(["export", str(tmp_path / "m.pt"), "-o", str(tmp_path / "x" / "dp.pt")]) == 0
    assert "_extra_state" in torch.load(tmp_path / "x" / "dp.pt", weights_only=True)["model"]
    assert main(["export", str(REF / "multitask" / "model.ckpt.pt"), "--head", "hco", "-o", str(tmp_path / "h.pt")]) == 0
    assert load_model(tmp_path / "h.pt").metadata["heads"] == ["Default"]
    assert main(["export", str(REF / "multitask" / "model.ckpt.pt"), "--head", "nope", "-o", str(tmp_path / "n.pt")]) == 1
    assert not (tmp_path / "n.pt").exists()


# ---------------------------------------------------------------- against deepmd-kit (needs .venv-deepmd)

@pytest.fixture(scope="module")
def deepmd_results(tmp_path_factory):
    """Export every option set and reference case, evaluate all with deepmd-kit in ONE process."""
    if not DP_PY.exists():
        pytest.skip(NO_DEEPMD)
    work = tmp_path_factory.mktemp("deepmd")
    systems = water_systems()
    save_systems(systems, work / "water.npz")
    jobs, cases = [], {}
    for name in OPTION_SETS:
        model, exported = exported_option(name, work)
        jobs.append({"model": exported, "input": work / "water.npz", "output": work / f"{name}.out.npz",
                     "jit": name == "dpa31_float32"})     # one model through DeepPot's TorchScript path
        cases[name] = (model, systems, work / f"{name}.out.npz")
    for folder, head in REF_CASES:
        tag = f"{folder.replace('/', '_')}-{head}"
        export_checkpoint(REF / folder / "model.ckpt.pt", work / f"{tag}.pt", head=head)
        sys_ = reference_systems(folder, head)
        save_systems(sys_, work / f"{tag}.in.npz")
        jobs.append({"model": work / f"{tag}.pt", "input": work / f"{tag}.in.npz", "output": work / f"{tag}.out.npz"})
        cases[tag] = (load_model(REF / folder / "model.ckpt.pt", head=head), sys_, work / f"{tag}.out.npz")
    # the whole multi-task export, evaluated per head by deepmd-kit's head selection
    export_checkpoint(REF / "multitask" / "sharefit" / "model.ckpt.pt", work / "sharefit_whole.pt")
    for head in ("water", "hco"):
        sys_ = reference_systems("multitask/sharefit", head)
        save_systems(sys_, work / f"whole-{head}.in.npz")
        jobs.append({"model": work / "sharefit_whole.pt", "head": head, "input": work / f"whole-{head}.in.npz",
                     "output": work / f"whole-{head}.out.npz"})
        cases[f"whole-{head}"] = (load_model(REF / "multitask" / "sharefit" / "model.ckpt.pt", head=head), sys_,
                                  work / f"whole-{head}.out.npz")
    run_deepmd(jobs, work)
    return cases, work


def _check_against_deepmd(case, deepmd_results):
    cases, work = deepmd_results
    model, systems, out = cases[case]
    theirs = dict(np.load(out))
    assert "error" not in theirs, str(theirs.get("error"))
    assert str(theirs["strict_load"]) == "ok", theirs["strict_load"]
    assert [str(t) for t in theirs["type_map"]] == model.type_map
    err = max_errors(ours(model, systems), theirs, systems)
    record = os.environ.get("DPA3_AL_INTEROP_ERRORS")    # a .jsonl path: collect the numbers for docs/interop.md
    if record:
        with open(record, "a") as f:
            f.write(json.dumps({"case": case, "precision": model.config.precision, **err}) + "\n")
    tol = TOL[model.config.precision]
    assert max(err.values()) <= tol, err


@needs_deepmd
@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_deepmd_evaluates_export(name, deepmd_results):
    _check_against_deepmd(name, deepmd_results)


@needs_deepmd
@pytest.mark.parametrize("folder,head", REF_CASES, ids=[f"{f}-{h}" for f, h in REF_CASES])
def test_deepmd_evaluates_reexported_reference(folder, head, deepmd_results):
    _check_against_deepmd(f"{folder.replace('/', '_')}-{head}", deepmd_results)


@needs_deepmd
@pytest.mark.parametrize("head", ["water", "hco"])
def test_deepmd_evaluates_whole_multitask(head, deepmd_results):
    _check_against_deepmd(f"whole-{head}", deepmd_results)


@needs_deepmd
def test_dp_freeze_and_dp_test(frozen_models, tmp_path):
    """`dp --pt freeze` on the export (the session's frozen_models), `dp --pt test -d` on a data system:
    deepmd-kit's frozen model predicts our energies and forces."""
    model, frozen = frozen_models["compress_split"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    cmd = [str(DP_PY.parent / "dp"), "--pt", "test", "-m", str(frozen), "-s", str(REF.parent / "water" / "data_3"),
           "-n", "2", "-d", "detail"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from ..conftest import water_frame

    pred_e = np.loadtxt(tmp_path / "detail.e.out", ndmin=2)[:, 1]
    pred_f = np.loadtxt(tmp_path / "detail.f.out", ndmin=2)[:, 3:6]
    frames = [water_frame("data_3", i) for i in range(2)]
    systems = {f"f{i}": {"coord": c[None], "cell": b[None], "atype": t} for i, (c, t, b) in enumerate(frames)}
    mine = ours(model, systems)
    np.testing.assert_allclose(pred_e, [mine["f0__energy"][0], mine["f1__energy"][0]], rtol=0, atol=192e-10)
    np.testing.assert_allclose(pred_f, np.concatenate([mine["f0__force"][0], mine["f1__force"][0]]), rtol=0, atol=1e-10)
    # our writer of the same detail files (for `dpa3-al test -d`): same headers, same data columns
    from dpa3_al.model.interop.deepmd_formats import write_test_detail

    sset = REF.parent / "water" / "data_3" / "set.000"
    data = {"energy": np.load(sset / "energy.npy")[:2].astype(np.float64),
            "force": np.load(sset / "force.npy")[:2].astype(np.float64)}
    pred = {"energy": np.array([mine["f0__energy"][0], mine["f1__energy"][0]]),
            "force": np.stack([mine["f0__force"][0], mine["f1__force"][0]]),
            "virial": np.stack([mine["f0__virial"][0], mine["f1__virial"][0]])}
    write_test_detail(tmp_path / "ours", str(REF.parent / "water" / "data_3"), 192, pred, data)
    for suffix in ("e.out", "e_peratom.out", "f.out", "v.out", "v_peratom.out"):
        theirs_text, ours_text = (tmp_path / f"detail.{suffix}").read_text(), (tmp_path / f"ours.{suffix}").read_text()
        assert theirs_text.splitlines()[0] == ours_text.splitlines()[0], suffix
        a, b = np.loadtxt(tmp_path / f"detail.{suffix}", ndmin=2), np.loadtxt(tmp_path / f"ours.{suffix}", ndmin=2)
        half = a.shape[1] // 2
        assert a.shape == b.shape and np.array_equal(a[:, :half], b[:, :half]), suffix
        np.testing.assert_allclose(a[:, half:], b[:, half:], rtol=0, atol=1e-10, err_msg=suffix)


@needs_deepmd
def test_dp_freeze_one_head_of_whole_multitask(frozen_models, tmp_path):
    """`dp --pt freeze --head hco` on a whole multi-task export (the session's frozen_models); the frozen
    head predicts our numbers."""
    model, frozen = frozen_models["sharefit-hco"]
    systems = reference_systems("multitask/sharefit", "hco")
    save_systems(systems, tmp_path / "in.npz")
    run_deepmd([{"model": frozen, "input": tmp_path / "in.npz", "output": tmp_path / "out.npz"}], tmp_path)
    theirs = dict(np.load(tmp_path / "out.npz"))
    assert "error" not in theirs, str(theirs.get("error"))
    err = max_errors(ours(model, systems), theirs, systems)
    assert max(err.values()) <= 1e-10, err
