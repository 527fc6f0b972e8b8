"""The training engine: learning, exact restarts, interruption, committees, CLI, workflow entry point."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from dpa3_al.model import load_model
from dpa3_al.model.checkpoint import read_checkpoint
from dpa3_al.common.errors import UserError
from dpa3_al.model.train.trainer import _Loop, train
from dpa3_al.steps import train_member
from dpa3_al.model.train.config import TrainConfig
from dpa3_al.model.train.io import read_lcurve

from .train_helpers import emt_system, tiny_config


@pytest.fixture(scope="module")
def emt(tmp_path_factory):
    root = tmp_path_factory.mktemp("emt")
    return emt_system(root / "train", 32, seed=0, rattle=0.06), emt_system(root / "val", 8, seed=1, rattle=0.06)


def _cfg(emt, steps, **sections) -> TrainConfig:
    return TrainConfig.from_dict(tiny_config([emt[0]], [emt[1]], steps=steps, **sections))


def test_loss_falls_and_train_error_reaches_threshold(emt, tmp_path):
    cfg = _cfg(emt, 120, learning_rate={"start_lr": 1e-2, "stop_lr": 1e-3}, training={"disp_freq": 6})
    result = train(cfg, tmp_path)
    rows = read_lcurve(tmp_path / "lcurve.csv")
    label_rms = math.sqrt(np.mean(np.load(emt[0] / "set.000" / "force.npy") ** 2))
    assert rows[0].step == 0 and rows[-1].step == 120 and math.isnan(rows[0].trn["f"])
    first_val, last_val = rows[0].val["f"], rows[-1].val["f"]
    assert last_val < 0.65 * first_val, (first_val, last_val)
    train_f = np.mean([r.trn["f"] for r in rows[-3:]])
    assert train_f < 0.7 * label_rms, (train_f, label_rms)
    losses = [r.loss_val for r in rows]
    assert losses[-1] < 0.3 * losses[0]
    s = result.summary
    assert s["finished"] and s["steps"] == 120 and isinstance(s["converged"], bool) and s["reason"]
    assert s["model"] == "best" and 0 < s["best_step"] <= 120
    assert s["errors"]["validation"]["f"] == pytest.approx(next(r.val["f"] for r in rows if r.step == s["best_step"]))
    assert json.loads((tmp_path / "train_summary.json").read_text())["converged"] == s["converged"]
    assert (tmp_path / "lcurve.png").stat().st_size > 1000
    meta = read_checkpoint(tmp_path / "model.pt")["metadata"]["training"]
    assert meta["data"]["systems"] == [str(emt[0])] and meta["seed"] == 7 and meta["init"] == {"mode": "scratch"}
    model = load_model(tmp_path / "model.pt")
    assert model.type_map == ["Cu", "Au"] and "train_state" not in read_checkpoint(tmp_path / "model.pt")


def _interrupt_at(monkeypatch, step: int) -> None:
    """Send SIGINT to this process right after training step ``step`` (as Ctrl-C would)."""
    original = _Loop._step

    def step_then_signal(self):
        loss = original(self)
        if self.state.step + 1 == step:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(_Loop, "_step", step_then_signal)


def test_restart_after_ctrl_c_equals_uninterrupted_run(emt, tmp_path, monkeypatch):
    cfg = _cfg(emt, 16, training={"disp_freq": 3, "save_freq": 5}, stopping={"patience": 0})
    full = train(cfg, tmp_path / "full")
    with monkeypatch.context() as m:
        _interrupt_at(m, 7)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path / "split")
    ckpt = read_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert ckpt["train_state"]["step"] == 7                 # saved at the end of the interrupted step
    with pytest.raises(UserError, match="--restart"):
        train(cfg, tmp_path / "split")
    resumed = train(cfg, tmp_path / "split", restart=True)
    for name in ("checkpoint.pt", "model.pt", "best.pt"):
        a = read_checkpoint(tmp_path / "full" / name)["state_dict"]
        b = read_checkpoint(tmp_path / "split" / name)["state_dict"]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    ra, rb = read_lcurve(tmp_path / "full" / "lcurve.csv"), read_lcurve(tmp_path / "split" / "lcurve.csv")
    np.testing.assert_array_equal([r.as_list()[:10] for r in ra], [r.as_list()[:10] for r in rb])
    assert resumed.summary["steps"] == full.summary["steps"] == 16
    assert train(cfg, tmp_path / "split", restart=True).summary["steps"] == 16      # finished: nothing to do


def test_restart_refuses_other_settings(emt, tmp_path, monkeypatch):
    cfg = _cfg(emt, 8, training={"save_freq": 2})
    with monkeypatch.context() as m:
        _interrupt_at(m, 3)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path)
    other = cfg.with_changes(training={"seed": 99})
    with pytest.raises(UserError, match="training.seed"):
        train(other, tmp_path, restart=True)


def test_kill_leaves_the_last_checkpoint_usable(emt, tmp_path):
    cfg = tiny_config([emt[0]], [], steps=400, training={"save_freq": 1, "disp_freq": 1, "threads": 1})
    (tmp_path / "in.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "dpa3_al.cli", "train", str(tmp_path / "in.yaml"), "-o", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file() and read_checkpoint(ckpt)["train_state"]["step"] >= 3:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    state = read_checkpoint(ckpt)["train_state"]             # readable: never a half-written file
    assert 3 <= state["step"] < 400
    model = load_model(ckpt)
    assert model.type_map == ["Cu", "Au"]


def test_sigterm_saves_a_checkpoint_and_restart_finishes(emt, tmp_path):
    cfg = tiny_config([emt[0]], [], steps=60, training={"save_freq": 1000, "threads": 1})
    (tmp_path / "in.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "dpa3_al.cli", "train", str(tmp_path / "in.yaml"), "-o", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lcurve = tmp_path / "run" / "lcurve.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (lcurve.is_file() and len(lcurve.read_text().splitlines()) > 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    step = read_checkpoint(tmp_path / "run" / "checkpoint.pt")["train_state"]["step"]
    assert 0 < step < 60
    result = train(TrainConfig.from_dict(cfg), tmp_path / "run", restart=True)
    assert result.summary["steps"] == 60


def test_time_budget_cuts_the_steps_and_scales_the_schedule(emt, tmp_path):
    cfg = _cfg(emt, 100000, training={"max_time": 2.0})
    result = train(cfg, tmp_path)
    s = result.summary
    assert s["planned_steps"] < 100000 and s["steps"] <= s["planned_steps"] + 1
    assert s["time_s"] < 60      # uncut, 100000 steps take ~30 min; a loose bound: the suite may run on loaded cores
    rows = read_lcurve(tmp_path / "lcurve.csv")
    assert rows[-1].lr < 0.5 * 1e-2                     # the decay ran over the cut budget


def test_a_budget_is_judged_before_slow_steps_spend_it(emt, tmp_path, monkeypatch):
    # on loaded cores 10 calibration steps can outlast the budget: the cut must come sooner, from
    # the steps timed so far, so the plan (and the schedule's decay) fits what can run
    slow = _Loop._step

    def step_on_a_loaded_machine(self):
        time.sleep(0.4)
        return slow(self)

    monkeypatch.setattr(_Loop, "_step", step_on_a_loaded_machine)
    result = train(_cfg(emt, 100000, training={"max_time": 2.0, "disp_freq": 0, "save_freq": 0}), tmp_path)
    s = result.summary
    assert s["steps"] < 10 and s["planned_steps"] < 10 and s["steps"] <= s["planned_steps"] + 1
    assert read_lcurve(tmp_path / "lcurve.csv")[-1].lr < 0.5 * 1e-2      # the decay ran over the cut plan


def test_committee_in_parallel_processes(emt, tmp_path):
    from dpa3_al.model.train.committee import train_committee

    cfg = _cfg(emt, 4, training={"numb_models": 2, "parallel": 2})
    summaries = train_committee(cfg, tmp_path)
    assert [s["seed"] for s in summaries] == [7, 8]
    a, b = (read_checkpoint(tmp_path / f"model-{i}.pt")["state_dict"] for i in range(2))
    assert not torch.equal(a["fitting.out.matrix"], b["fitting.out.matrix"])
    assert json.loads((tmp_path / "committee_summary.json").read_text())["members"][1]["member"] == 1
    assert (tmp_path / "member-1" / "lcurve.csv").is_file()
    assert train_committee(cfg, tmp_path, restart=True)[0]["steps"] == 4      # finished members are kept


def test_committee_in_stacks_in_parallel_processes(emt, tmp_path):
    # 3 members, stacks of 2: processes for (0, 1) and (2), each member in its own folder
    from dpa3_al.model.train.committee import train_committee

    cfg = _cfg(emt, 4, training={"numb_models": 3, "parallel": 2, "stack": 2})
    summaries = train_committee(cfg, tmp_path)
    assert [s["seed"] for s in summaries] == [7, 8, 9] and [s["steps"] for s in summaries] == [4, 4, 4]
    states = [read_checkpoint(tmp_path / f"member-{i}" / "checkpoint.pt")["train_state"] for i in range(3)]
    assert [s.get("stack") for s in states] == [[0, 1], [0, 1], None]
    models = [read_checkpoint(tmp_path / f"model-{i}.pt")["state_dict"]["fitting.out.matrix"] for i in range(3)]
    assert not torch.equal(models[0], models[1]) and not torch.equal(models[1], models[2])
    assert "training members [0, 1] as one stack" in (tmp_path / "member-0" / "process.log").read_text()


@pytest.mark.parametrize("cores", [1, 2])
def test_committee_parallel_auto_is_a_process_per_core(emt, tmp_path, monkeypatch, cores):
    # training.parallel 0 (the default) with stack 0: as many processes as cores, stacks of
    # ceil(members / cores); one core: one stack of all members in this process
    from dpa3_al.model.train import committee

    monkeypatch.setattr(committee, "cores", lambda: cores)
    cfg = _cfg(emt, 4, training={"numb_models": 4})
    assert cfg.training.parallel == 0 and cfg.training.stack == 0
    committee.train_committee(cfg, tmp_path)
    states = [read_checkpoint(tmp_path / f"member-{i}" / "checkpoint.pt")["train_state"] for i in range(4)]
    want = [[0, 1, 2, 3]] * 4 if cores == 1 else [[0, 1], [0, 1], [2, 3], [2, 3]]
    assert [s.get("stack") for s in states] == want
    assert (tmp_path / "member-2" / "process.log").is_file() == (cores == 2)


def test_cli_train_test_info(emt, tmp_path, capsys):
    from dpa3_al.cli import main

    cfg = tiny_config([emt[0]], [emt[1]], steps=4)
    (tmp_path / "in.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "in.yaml"), "-o", str(out), "--steps", "5", "--seed", "3",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "model.pt: 5 steps" in text and "validation RMSE" in text
    assert main(["test", str(out / "model.pt"), str(emt[1]), "--plot", str(tmp_path / "p.png"),
                 "--json", str(tmp_path / "e.json")]) == 0
    text = capsys.readouterr().out
    assert "E/atom RMSE" in text and str(emt[1])[-30:] in text
    errors = json.loads((tmp_path / "e.json").read_text())["systems"][0]
    summary = json.loads((out / "train_summary.json").read_text())
    assert errors["frames"] == 8 and errors["rmse"]["f"] == pytest.approx(summary["errors"]["validation"]["f"])
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert main(["info", str(out / "model.pt"), "--atoms", "500"]) == 0
    text = capsys.readouterr().out
    assert "type map     Cu Au" in text and "training     5 steps" in text and "converged" in text
    assert "default  peak" in text and "low      peak" in text and "atoms fit" in text
    evaluation, training = text.split("evaluation (E+F+V):")[1].split("training step")
    peaks = [float(t.split("peak ~")[1].split(" GB")[0]) for t in (evaluation, training)]   # default mode
    assert peaks[1] > peaks[0]          # a training step keeps the force pass's graph as well


def test_init_model_defaults_train_each_iteration_like_the_first():
    # bench/bench_al.py: shorter, lower-rate continuations starved the committee (docs/al-benchmark.md)
    from dpa3_al.model.train.config import TrainConfig

    cfg = TrainConfig.from_dict({}, source="test")
    assert (cfg.init_model.steps_factor, cfg.init_model.lr_factor) == (1.0, 1.0)


def test_workflow_member_is_idempotent_and_continues_with_init_model(emt, tmp_path):
    config = tiny_config([], [emt[1]], steps=6, init_model={"steps_factor": 0.5, "lr_factor": 0.1})
    first = train_member(config, [emt[0]], None, member=1, iteration=0, workdir=tmp_path / "it0")
    meta = read_checkpoint(first)["metadata"]["training"]
    assert meta["seed"] == 8 and meta["steps"] == 6
    stamp = first.stat().st_mtime_ns
    assert train_member(config, [emt[0]], None, 1, 0, tmp_path / "it0") == first and first.stat().st_mtime_ns == stamp
    second = train_member(config, [emt[0]], first, member=1, iteration=1, workdir=tmp_path / "it1")
    meta2 = read_checkpoint(second)["metadata"]["training"]
    assert meta2["init"]["mode"] == "init-model" and meta2["init"]["bias_mode"] == "kept"
    assert meta2["steps"] == 3                                   # 6 * steps_factor 0.5
    rows = read_lcurve(tmp_path / "it1" / "lcurve.csv")
    assert rows[0].lr == pytest.approx(1e-3)                     # start_lr 1e-2 * lr_factor 0.1
    assert torch.equal(load_model(second).out_bias, load_model(first).out_bias)


def test_finetune_of_our_model_with_frozen_descriptor(emt, tmp_path):
    base = train(_cfg(emt, 3), tmp_path / "base").model_path
    cfg = _cfg(emt, 4, finetune={"model": str(base), "freeze_descriptor": True})
    tuned = train(cfg, tmp_path / "ft")
    a, b = read_checkpoint(base)["state_dict"], read_checkpoint(tuned.model_path)["state_dict"]
    for k in a:
        if k.startswith("descriptor."):
            assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["fitting.out.matrix"], b["fitting.out.matrix"])
    s = tuned.summary
    assert s["init"]["mode"] == "finetune" and s["init"]["source"] == str(base)
    assert s["parameters"]["trainable"] < s["parameters"]["total"]


@pytest.mark.parametrize("min_frames, fraction, model", [(10, 0.1, "last"), (3, 0.25, "best")])
def test_small_hold_out_trains_on_every_frame_and_keeps_the_last_model(emt, tmp_path, min_frames, fraction, model):
    """10% of 32 frames is about 3: under data.min_validation_frames nothing is held out (a 3-frame
    validation set picks checkpoints by noise) and the last model is the output."""
    from dpa3_al.model.train.data import load_systems, split_validation

    cfg = TrainConfig.from_dict(tiny_config([emt[0]], steps=24, data={"validation_fraction": fraction,
                                                                       "min_validation_frames": min_frames},
                                            training={"disp_freq": 4, "seed": 7}))
    held = sum(v.n_frames for v in split_validation(load_systems([emt[0]]), fraction, 7)[1])
    held_out = held if held >= min_frames else 0
    assert held_out == 0 if model == "last" else held_out >= min_frames
    s = train(cfg, tmp_path).summary
    assert s["data"]["validation_frames"] == held_out
    assert s["model"] == model
    assert s["data"]["frames"] == 32 - held_out


def test_optimizer_is_fused_on_cpu_and_a_restored_state_keeps_the_kernel():
    """make_optimizer takes torch's fused Adam(W) where it exists; loading a state written by the
    per-parameter optimiser (an older checkpoint) keeps the fused kernel and restores the moments."""
    from dpa3_al.model.train.config import OptimizerSection
    from dpa3_al.model.train.loop import load_optimizer_state, make_optimizer

    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    for p in params:
        p.grad = torch.ones_like(p)
    old = torch.optim.AdamW(params, lr=1e-3, fused=False)
    old.step()
    opt = make_optimizer(params, OptimizerSection(), 1e-3)
    assert all(g["fused"] is True for g in opt.param_groups)
    load_optimizer_state(opt, old.state_dict())
    assert all(g["fused"] is True for g in opt.param_groups)
    assert torch.equal(opt.state[params[0]]["exp_avg"], old.state[params[0]]["exp_avg"])
    opt.step()                                    # the fused kernel accepts the restored state
    assert all(float(opt.state[p]["step"]) == 2 for p in params)
    half = [torch.nn.Parameter(torch.randn(2, dtype=torch.float16))]
    assert not make_optimizer(half, OptimizerSection(), 1e-3).param_groups[0]["fused"]   # no kernel: torch's default
