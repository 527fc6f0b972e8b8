"""Committee stacks (model/stack.py, model/train/stacked.py): M models run as one must give each
member exactly its own energies, forces, virials and gradients, and stacked training must equal
separate training of the member whose data order the stack uses."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from dpa3_al.common.errors import UserError
from dpa3_al.model.calculator import atoms_to_batch
from dpa3_al.model.checkpoint import read_checkpoint
from dpa3_al.model.graph import Batch
from dpa3_al.model.kernels import cpp as ckernels
from dpa3_al.model.stack import StackedCommittee
from dpa3_al.model.train.config import TrainConfig
from dpa3_al.model.train.io import read_lcurve
from dpa3_al.model.train.stacked import _StackLoop, clip_per_member, train_stack
from dpa3_al.model.train.trainer import train

from .helpers import random_cluster, random_periodic, tiny_model
from .train_helpers import emt_system, tiny_config

VARIANTS = {
    "default": {},
    "compressed-avg": {"a_compress_rate": 1, "a_compress_e_rate": 2, "a_compress_use_split": False,
                       "update_style": "res_avg"},
    "sequential": {"sequential_update": True},
}


def _members(n=3, **descriptor):
    models = [tiny_model(seed=s, **descriptor) for s in range(n)]
    with torch.no_grad():       # per-member statistics, as stat_picks with each member's seed gives
        for k, m in enumerate(models):
            m.descriptor.env_std.mul_(1.0 + 0.1 * k)
            m.bias_atom_e.add_(0.3 * k)
    return models


def _two_frames(type_map) -> Batch:
    frames = []
    for atoms in (random_periodic(9, seed=3), random_cluster(7, seed=4)):
        b = atoms_to_batch(atoms, type_map)
        frames.append((b.positions.numpy(), b.types.numpy(), b.cells[0].numpy() if atoms.pbc.any() else None,
                       atoms.pbc))
    return Batch.from_arrays(frames)


@pytest.mark.parametrize("kernels", [True, False], ids=["cpp", "torch"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_stack_gives_each_member_its_own_results_and_gradients(variant, kernels, monkeypatch):
    monkeypatch.setitem(ckernels._STATE, "enabled", kernels)
    monkeypatch.setitem(ckernels._STATE, "ready", {})
    models = _members(**VARIANTS[variant])
    stack = StackedCommittee(models)
    batch = _two_frames(models[0].type_map)
    outs = stack(batch, create_graph=True)
    loss = sum((o.forces ** 2).sum() + o.energy.pow(2).sum() + o.virial.pow(2).sum() for o in outs)
    loss.backward()
    stacked_grads = [p.grad for p in stack.parameters() if p.requires_grad]
    for k, model in enumerate(models):
        ref = model(batch, create_graph=True)
        torch.testing.assert_close(outs[k].energy, ref.energy, rtol=0, atol=1e-11)
        torch.testing.assert_close(outs[k].forces, ref.forces, rtol=0, atol=1e-11)
        torch.testing.assert_close(outs[k].virial, ref.virial, rtol=0, atol=1e-11)
        own = (ref.forces ** 2).sum() + ref.energy.pow(2).sum() + ref.virial.pow(2).sum()
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(own, params, allow_unused=True)
        for g, sg in zip(grads, stacked_grads):
            if sg is None or g is None:         # a parameter this variant never uses
                assert (sg is None or not sg[k].any()) and (g is None or not g.any())
                continue
            torch.testing.assert_close(sg[k], g, rtol=1e-9, atol=1e-11)
    # members differ (else the test could not tell them apart), and copies out are the members
    assert float((outs[0].energy - outs[1].energy).detach().abs().max()) > 1e-3
    copy = stack.member(2)
    torch.testing.assert_close(copy(batch).forces, models[2](batch).forces, rtol=0, atol=1e-12)


def test_stack_refuses_members_of_different_shapes():
    with pytest.raises(ValueError, match="member 1"):
        StackedCommittee([tiny_model(seed=0), tiny_model(seed=1, n_dim=16)])


def test_per_member_clipping_matches_torch_clip_for_each_member():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4, 5)), torch.nn.Parameter(torch.randn(3, 7))]
    for p in params:
        p.grad = torch.randn_like(p) * torch.tensor([0.01, 10.0, 100.0]).view(-1, *([1] * (p.dim() - 1)))
    expected = []
    for k in range(3):
        own = [torch.nn.Parameter(p.detach()[k].clone()) for p in params]
        for o, p in zip(own, params):
            o.grad = p.grad[k].clone()
        torch.nn.utils.clip_grad_norm_(own, 1.0)
        expected.append([o.grad for o in own])
    clip_per_member(params, 1.0, 3)
    for k in range(3):
        for p, e in zip(params, expected[k]):
            torch.testing.assert_close(p.grad[k], e)
    assert float(params[0].grad[0].abs().max()) < 0.1        # the small member was left alone


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def emt(tmp_path_factory):
    root = tmp_path_factory.mktemp("emt-stack")
    return emt_system(root / "train", 16, seed=0, rattle=0.06), emt_system(root / "val", 4, seed=1, rattle=0.06)


def _cfg(emt, steps=12, **sections) -> TrainConfig:
    sections.setdefault("training", {}).update({"disp_freq": 3, "save_freq": 5})
    sections.setdefault("optimizer", {"gradient_max_norm": 5.0})
    return TrainConfig.from_dict(tiny_config([emt[0]], [emt[1]], steps=steps, **sections))


def _state(path):
    return read_checkpoint(path)["state_dict"]


def test_stacked_training_equals_separate_training_of_the_lead_member(emt, tmp_path):
    cfg = _cfg(emt)
    alone = [train(cfg, tmp_path / f"alone-{m}", member=m) for m in (0, 1)]
    results = train_stack([cfg, cfg], [tmp_path / "s0", tmp_path / "s1"], [0, 1])
    # member 0 leads (its data order): the same run as alone, to rounding
    a, b = _state(alone[0].model_path), _state(results[0].model_path)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-9, atol=1e-10)
    ra, rb = read_lcurve(tmp_path / "alone-0" / "lcurve.csv"), read_lcurve(tmp_path / "s0" / "lcurve.csv")
    np.testing.assert_allclose([r.as_list()[:10] for r in ra], [r.as_list()[:10] for r in rb], rtol=1e-8)
    # member 1 keeps its own seed (initial weights) but follows member 0's frames: it differs from alone
    s1 = results[1].summary
    assert s1["seed"] == alone[1].summary["seed"] == 8 and s1["member"] == 1 and s1["steps"] == 12
    c, d = _state(alone[1].model_path), _state(results[1].model_path)
    assert max(float((c[k] - d[k]).abs().max()) for k in c if c[k].numel()) > 1e-6
    assert read_checkpoint(tmp_path / "s1" / "checkpoint.pt")["train_state"]["stack"] == s1["stack"] == [0, 1]
    assert alone[1].summary["stack"] is None
    log = (tmp_path / "s1" / "train.log").read_text()          # the whole stack's lines, each naming its member
    assert "member 0: step 12 " in log and "member 1: step 12 " in log
    # a finished stack is not trained again
    again = train_stack([cfg, cfg], [tmp_path / "s0", tmp_path / "s1"], [0, 1])
    assert [r.summary["time_s"] for r in again] == [r.summary["time_s"] for r in results]


def test_stack_restart_after_ctrl_c_equals_uninterrupted_stack(emt, tmp_path, monkeypatch):
    cfg = _cfg(emt, steps=14)
    dirs = lambda name: [tmp_path / name / f"m{k}" for k in range(2)]   # noqa: E731
    full = train_stack([cfg, cfg], dirs("full"), [0, 1])
    original = _StackLoop._step

    def step_then_signal(self, step):
        losses = original(self, step)
        if step + 1 == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return losses

    with monkeypatch.context() as m:
        m.setattr(_StackLoop, "_step", step_then_signal)
        with pytest.raises(KeyboardInterrupt):
            train_stack([cfg, cfg], dirs("split"), [0, 1])
    for d in dirs("split"):
        assert read_checkpoint(d / "checkpoint.pt")["train_state"]["step"] == 6
    resumed = train_stack([cfg, cfg], dirs("split"), [0, 1])
    for a_dir, b_dir in zip(dirs("full"), dirs("split")):
        a, b = _state(a_dir / "model.pt"), _state(b_dir / "model.pt")
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert [r.summary["steps"] for r in resumed] == [r.summary["steps"] for r in full] == [14, 14]


def test_a_member_stopping_early_keeps_its_model_while_the_stack_trains_on(emt, tmp_path):
    cfg = _cfg(emt, steps=30, stopping={"patience": 1, "min_steps_fraction": 0.0},
               learning_rate={"start_lr": 1e-2, "stop_lr": 1e-2})
    results = train_stack([cfg, cfg, cfg], [tmp_path / f"m{k}" for k in range(3)], [0, 1, 2])
    steps = [r.summary["steps"] for r in results]
    assert all(s <= 30 for s in steps) and any(r.summary["stop_reason"] for r in results), steps
    for r in results:
        rows = read_lcurve(r.workdir / "lcurve.csv")
        assert rows[-1].step == r.summary["steps"]                      # its curve ends where it stopped


def test_stack_refuses_a_mix_of_started_and_fresh_members(emt, tmp_path):
    cfg = _cfg(emt, steps=6)
    train_stack([cfg], [tmp_path / "m0"], [0])
    (tmp_path / "m0" / "train_summary.json").unlink()          # as if killed after its last checkpoint
    with pytest.raises(UserError, match="some have a checkpoint"):
        train_stack([cfg, cfg], [tmp_path / "m0", tmp_path / "m1"], [0, 1])


def test_a_time_budget_cuts_the_whole_stack_alike(emt, tmp_path):
    cfg = _cfg(emt, steps=100_000, training={"max_time": 4.0, "disp_freq": 0, "save_freq": 0})
    results = train_stack([cfg, cfg], [tmp_path / "m0", tmp_path / "m1"], [0, 1])
    a, b = (r.summary for r in results)
    assert a["planned_steps"] == b["planned_steps"] < 100_000 and a["steps"] == b["steps"] <= a["planned_steps"] + 1
    rows = [read_lcurve(r.workdir / "lcurve.csv") for r in results]
    assert [r.lr for r in rows[0]] == [r.lr for r in rows[1]]          # one schedule, scaled to the cut budget


def test_stack_size_rule():
    from dpa3_al.model.train.config import stack_size

    assert [stack_size(0, 4, s) for s in (1, 2, 3, 4, 8)] == [4, 2, 2, 1, 1]     # auto: fill the slots
    assert stack_size(3, 2, 1) == 2 and stack_size(1, 4, 1) == 1                  # explicit: as given


def test_auto_stack_trains_large_frames_one_by_one(emt, tmp_path, monkeypatch, caplog):
    from dpa3_al.model.train import stacked

    cfg = _cfg(emt, steps=4, training={"stack": 0})
    monkeypatch.setattr(stacked, "AUTO_STACK_MAX_TRIPLES", 10)      # every batch counts as large
    with caplog.at_level("INFO", logger="dpa3_al.model"):
        results = train_stack([cfg, cfg], [tmp_path / "m0", tmp_path / "m1"], [0, 1])
    assert "members trained one by one" in caplog.text
    assert all("stack" not in read_checkpoint(r.workdir / "checkpoint.pt")["train_state"] for r in results)
    explicit = train_stack([_cfg(emt, steps=4, training={"stack": 2})] * 2, [tmp_path / "e0", tmp_path / "e1"], [0, 1])
    assert read_checkpoint(explicit[1].workdir / "checkpoint.pt")["train_state"]["stack"] == [0, 1]
