"""Our training step against deepmd-kit 3.2's, from the same weights (tests/data/train-reference/adamw_steps).

deepmd-kit trained a tiny float64 DPA3 for four steps on one water frame that carries an
energy, forces and a (synthetic) virial label, with AdamW, gradient clipping and a learning
rate (and with it the loss prefactors) that decays at every step. Started from deepmd-kit's
initial weights, four of our ``optimizer_step`` calls must land on its parameters: the loss,
its double backward, the clipping, the schedule and the optimiser are then the same.
"""

from __future__ import annotations

import json

import pytest
import torch

from dpa3_al.model import load_model
from dpa3_al.model.train.batching import TrainingData
from dpa3_al.model.train.data import load_systems
from dpa3_al.model.train.loss import EnergyLoss, Prefactors
from dpa3_al.model.train.lr import ExpDecay
from dpa3_al.model.train.config import OptimizerSection
from dpa3_al.model.train.loop import make_optimizer, optimizer_step


@pytest.fixture(scope="module")
def ref(data_dir):
    return data_dir / "train-reference" / "adamw_steps"


def test_four_steps_reproduce_deepmd_kit(ref):
    inp = json.loads((ref / "input.json").read_text())
    model, after = load_model(ref / "init.pt"), load_model(ref / "after4.pt")
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = TrainingData(load_systems([ref / "frame"]), model.type_map, 1)
    batch, labels = data.batch([(0, 0)])
    assert bool(labels.has_virial.all())

    lr_cfg, loss_cfg, tr = inp["learning_rate"], inp["loss"], inp["training"]
    steps = tr["numb_steps"]
    schedule = ExpDecay(lr_cfg["start_lr"], lr_cfg["stop_lr"], steps, lr_cfg["decay_steps"])
    pref = Prefactors(*(loss_cfg[f"{k}_pref_{t}"] for t in "efv" for k in ("start", "limit")))
    loss_fn = EnergyLoss(pref, lr_cfg["start_lr"])
    opt_cfg = OptimizerSection(type="AdamW", weight_decay=inp["optimizer"]["weight_decay"],
                               gradient_max_norm=tr["gradient_max_norm"])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, opt_cfg, lr_cfg["start_lr"])
    for step in range(steps):
        optimizer_step(model, opt, params, loss_fn, batch, labels, schedule(step), opt_cfg.gradient_max_norm, True)

    theirs = dict(after.named_parameters())
    moved = 0.0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        moved = max(moved, float((theirs[name].detach() - start[name]).abs().max()))
        torch.testing.assert_close(p.detach(), theirs[name].detach(), rtol=0, atol=1e-9, msg=name)
    assert moved > 1e-3        # the four steps did move the weights (lr 1e-3 .. 3e-4, Adam steps ~lr)
