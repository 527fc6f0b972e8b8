"""Statistics, loss and schedules of training: energy bias fits, env std, loss formula, lr decay."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dpa3_al.model.train.batching import Labels, TrainingData
from dpa3_al.model.train.data import DataSystem
from dpa3_al.model.energy import ModelOutput
from dpa3_al.model.train.loss import EnergyLoss, ErrorSums, Prefactors
from dpa3_al.model.train.lr import ExpDecay, prefactor
from dpa3_al.model.train.stats import (change_bias_by_statistic, env_std_from_data, lstsq_bias, set_bias_by_statistic,
                                 stat_picks)

from .helpers import tiny_model


def _synthetic_systems(per_atom: dict[str, float], seed=0, noise=0.0) -> list[DataSystem]:
    """Random compositions of the elements; E = sum of per-element energies (+ noise)."""
    rng = np.random.default_rng(seed)
    elements = list(per_atom)
    systems = []
    for k in range(5):
        nat = int(rng.integers(3, 9))
        types = rng.integers(0, len(elements), nat)
        nf = 4
        e = np.full(nf, sum(per_atom[elements[t]] for t in types)) + noise * rng.normal(size=nf)
        systems.append(DataSystem(f"sys{k}", elements, types, rng.uniform(0, 8, (nf, nat, 3)), np.tile(np.eye(3) * 8,
                                  (nf, 1, 1)), e, np.zeros((nf, nat, 3)), np.zeros((nf, 3, 3)), np.zeros(nf, bool)))
    return systems


def test_bias_fit_recovers_known_per_element_energies():
    truth = {"Cu": -3.71, "Al": -2.95, "O": -4.93}
    systems = _synthetic_systems(truth)
    model = tiny_model(["O", "Al", "Cu"])                      # model order differs from the data order
    data = TrainingData(systems, model.type_map, batch_size=1)
    fit = set_bias_by_statistic(model, data, stat_picks(data, 100, seed=0))
    np.testing.assert_allclose(model.out_bias.numpy(), [truth["O"], truth["Al"], truth["Cu"]], atol=1e-10)
    assert fit.n_frames == 20 and fit.residual_std < 1e-10


def test_bias_fit_with_noise_and_absent_type_gets_minimum_norm_zero():
    truth = {"Cu": -3.71, "Al": -2.95}
    systems = _synthetic_systems(truth, noise=1e-3, seed=1)
    model = tiny_model(["Cu", "Zn", "Al"])
    data = TrainingData(systems, model.type_map, batch_size=1)
    set_bias_by_statistic(model, data, stat_picks(data, 100, seed=0))
    assert model.out_bias[1] == 0.0                              # Zn is in no frame
    np.testing.assert_allclose(model.out_bias.numpy()[[0, 2]], [-3.71, -2.95], atol=3e-3)
    # one composition only: the minimum-norm split, proportional to the composition (as deepmd-kit)
    bias, _ = lstsq_bias(np.array([[64.0, 128.0]] * 3), np.array([-100.0, -101.0, -99.0]))
    np.testing.assert_allclose(bias, -100.0 * np.array([64, 128]) / (64 ** 2 + 128 ** 2), rtol=1e-12)


def test_change_by_statistic_adds_the_residual_fit():
    truth = {"O": -4.0, "H": -1.5}
    systems = _synthetic_systems(truth, seed=2)
    model = tiny_model(["O", "H"], e_rcut=4.0)
    data = TrainingData(systems, model.type_map, batch_size=1)
    picks = stat_picks(data, 100, seed=0)
    before = model.out_bias.clone()
    from dpa3_al.model.train.stats import predict_energies

    pred = predict_energies(model, data, picks)
    fit = change_bias_by_statistic(model, data, picks)
    np.testing.assert_allclose(model.out_bias.numpy(), (before + torch.from_numpy(fit.bias)).numpy(), atol=1e-14)
    after = predict_energies(model, data, picks)
    counts = np.array([np.bincount(data.types[s].numpy(), minlength=2) for b in picks for s, _ in b], float)
    np.testing.assert_allclose(after - pred, counts @ fit.bias, atol=1e-9)
    residual = np.array([data.systems[s].energy[f] for b in picks for s, f in b]) - after
    assert abs(counts.T @ residual).max() < 1e-8                 # normal equations hold: nothing left to fit


def test_stat_picks_use_all_frames_when_they_fit_and_sample_otherwise():
    systems = _synthetic_systems({"O": 1.0})
    data = TrainingData(systems, ["O"], batch_size=2)
    all_frames = stat_picks(data, 10, seed=0)
    assert sum(len(b) for b in all_frames) == 20 and all(len({s for s, _ in b}) == 1 for b in all_frames)
    some = stat_picks(data, 1, seed=0)
    assert sum(len(b) for b in some) == 10
    assert some == stat_picks(data, 1, seed=0) and some != stat_picks(data, 1, seed=1)


def test_env_std_from_data_matches_its_definition(data_dir):
    from dpa3_al.model.train.data import read_npy_system
    from dpa3_al.model.descriptor import poly_switch

    model = tiny_model(["O", "H"], fix_stat_std=0.0, e_rcut=4.0, e_rcut_smth=3.0, e_sel=40, a_sel=20)
    system = read_npy_system(data_dir / "water" / "data_0").subset(np.arange(2))
    data = TrainingData([system], model.type_map, batch_size=1)
    std, counts = env_std_from_data(model, data, stat_picks(data, 10, 0))
    # brute force for O (type 0), frame 0 and 1: all pairs, nearest e_sel per centre, padding as zeros
    vals_r, vals_a = [], []
    types = system.model_types(["O", "H"])
    for f in range(2):
        cell = system.cells[f]
        x = system.coords[f]
        d = x[None, :, :] - x[:, None, :]
        d -= np.round(d @ np.linalg.inv(cell)) @ cell
        r = np.linalg.norm(d, axis=-1) + np.eye(len(x)) * 100
        for i in np.flatnonzero(types == 0):
            js = np.argsort(r[i])[:40]
            js = js[r[i, js] < 4.0]
            rr = torch.from_numpy(r[i, js])
            w = poly_switch(rr, 3.0, 4.0).numpy()
            s = np.zeros(40)
            h = np.zeros((40, 3))
            s[:len(js)] = w / r[i, js]
            h[:len(js)] = (w / r[i, js] ** 2)[:, None] * d[i, js]
            vals_r.append(s)
            vals_a.append(h.reshape(-1))
    assert counts[0] == 128
    np.testing.assert_allclose(std[0, 0].item(), np.std(np.concatenate(vals_r)), rtol=1e-10)
    np.testing.assert_allclose(std[0, 1:].numpy(), np.std(np.concatenate(vals_a)), rtol=1e-10)


def test_lr_schedule_and_prefactors():
    s = ExpDecay(1e-3, 3e-5, total_steps=1_000_000, decay_steps=5000)
    assert s.interval == 5000 and abs(s.rate - 0.03 ** 0.005) < 1e-12 and s(0) == 1e-3
    assert s(4999) == 1e-3 and s(5000) == pytest.approx(1e-3 * 0.03 ** 0.005)
    assert s(1_000_000) == pytest.approx(3e-5)
    auto = ExpDecay(1e-3, 3e-5, total_steps=2000)                  # decay_steps 0: T / 200
    assert auto.interval == 10 and auto(2000) == pytest.approx(3e-5) and auto(5000) == pytest.approx(3e-5)
    assert ExpDecay(1e-3, 1e-5, total_steps=500, decay_steps=5000).interval == 6   # deepmd-kit's reduction
    assert prefactor(0.2, 20.0, 1e-3, 1e-3) == pytest.approx(0.2) and prefactor(0.2, 20.0, 0.0, 1e-3) == 20.0
    assert prefactor(100, 60, 5e-4, 1e-3) == pytest.approx(80.0)


def test_loss_matches_the_formula_and_errors():
    torch.manual_seed(0)
    natoms = torch.tensor([2.0, 3.0], dtype=torch.float64)
    lab = Labels(torch.randn(2, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64),
                 torch.randn(2, 3, 3, dtype=torch.float64), torch.tensor([True, False]), natoms)
    out = ModelOutput(lab.energy + torch.tensor([0.3, -0.6], dtype=torch.float64), torch.zeros(5),
                      lab.forces + 0.1 * torch.randn(5, 3, dtype=torch.float64),
                      lab.virial + torch.randn(2, 3, 3, dtype=torch.float64))
    pref = Prefactors(1.0, 3.0, 10.0, 20.0, 0.5, 2.0)
    loss = EnergyLoss(pref, start_lr=1e-3)(out, lab, lr=5e-4)       # halfway: p = (2, 15, 1.25)
    de, df, dv = out.energy - lab.energy, out.forces - lab.forces, out.virial - lab.virial
    fe = (de ** 2 / natoms).mean()
    ff = ((df[:2] ** 2).sum() / 6 + (df[2:] ** 2).sum() / 9) / 2
    fv = (dv[0] ** 2).sum() / 9 / 2
    assert loss.item() == pytest.approx((2 * fe + 15 * ff + 1.25 * fv).item(), rel=1e-12)
    no_v = EnergyLoss(Prefactors(1.0, 3.0, 10.0, 20.0, 0.0, 2.0), 1e-3)(out, lab, 5e-4)
    assert no_v.item() == pytest.approx((2 * fe + 15 * ff).item(), rel=1e-12)
    sums = ErrorSums()
    sums.add(out, lab)
    rmse = sums.rmse()
    assert rmse["e"] == pytest.approx(math.sqrt(((de / natoms) ** 2).mean().item()))
    assert rmse["f"] == pytest.approx(math.sqrt((df ** 2).mean().item()))
    assert rmse["v"] == pytest.approx(math.sqrt(((dv[0] / 2) ** 2).mean().item()))


def test_env_std_and_bias_reproduce_deepmd_kit(data_dir):
    """fix_stat_std 0 on all 80 frames of water/data_0 (tests/data/train-reference/envstat_water)."""
    import json

    from dpa3_al.model.train.data import read_npy_system
    from dpa3_al.model.interop.deepmd_import import config_from_deepmd
    from dpa3_al.model.energy import build_model

    ref_dir = data_dir / "train-reference" / "envstat_water"
    ref = json.loads((ref_dir / "env_stat.json").read_text())
    params = json.loads((ref_dir / "input.json").read_text())["model"]
    model = build_model(config_from_deepmd(params, str(ref_dir)), seed=0)
    assert model.config.descriptor.fix_stat_std == 0.0
    data = TrainingData([read_npy_system(data_dir / "water" / "data_0")], ["O", "H"], batch_size=1)
    picks = stat_picks(data, 200, seed=0)
    std, _ = env_std_from_data(model, data, picks)
    np.testing.assert_allclose(std.numpy(), [ref["env_std_per_type"]["O"], ref["env_std_per_type"]["H"]],
                               rtol=1e-12)
    set_bias_by_statistic(model, data, picks)
    np.testing.assert_allclose(model.out_bias.numpy(), [ref["out_bias"]["O"], ref["out_bias"]["H"]], rtol=1e-12)
