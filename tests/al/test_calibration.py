"""Trust levels from an accuracy target (dpa3_al/calibration.py) and the convergence they give
(dpa3_al/schedule.py): calibrated levels from a known calibration, the configured levels while
too few labels exist, explicit levels winning, and a stage that converges once the committee
is accurate and not before."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dpa3_al.calibration import (CalibrationPair, CalibrationRecord, TargetConfig, TargetLevels, derive_levels,
                                 fit)
from dpa3_al.explore.config import StageConfig
from dpa3_al.common.typed_config import from_dict
from dpa3_al.schedule import IterationOutcome, ScheduleRecord, decide, judge, ScheduleState
from dpa3_al.select import Levels, SelectionReport, classify


def _pairs(devi, ratio, iteration=0, max_factor=2.0):
    return [CalibrationPair(iteration, f"f{i}", float(d), float(r * d), float(max_factor * r * d))
            for i, (d, r) in enumerate(zip(devi, ratio))]


def test_fit_of_a_known_calibration():
    devi = np.linspace(0.1, 1.0, 10)
    ratio = np.linspace(0.2, 0.65, 10)                       # e / d from 0.2 to 0.65
    f = fit(_pairs(devi, ratio), confidence=0.9)
    assert f.n == 10
    assert f.ratio_q == pytest.approx(np.quantile(ratio, 0.9))
    assert f.ratio_median == pytest.approx(np.median(ratio))
    emax = 2.0 * ratio * devi
    assert f.slope_max == pytest.approx(devi @ emax / (devi @ devi))
    assert f.corr_max == pytest.approx(np.corrcoef(devi, emax)[0, 1])
    # NaN or zero deviations are left out, not propagated
    bad = [CalibrationPair(0, "x", math.nan, 0.1, 0.2), CalibrationPair(0, "y", 0.0, 0.1, 0.2)]
    assert fit([*_pairs(devi, ratio), *bad]).n == 10
    assert fit([]).n == 0 and math.isnan(fit([]).ratio_q)
    # k: the RMS ratio, so that k * RMS(d) reproduces the labeled frames' RMSE; above confidence 0.5
    # its bootstrap quantile, larger (safer), and reproducible
    e = ratio * devi
    assert f.k_rms == pytest.approx(np.sqrt(np.sum(e ** 2) / np.sum(devi ** 2)))
    assert fit(_pairs(devi, ratio), confidence=0.5).k == f.k_rms
    assert f.k > f.k_rms and f.k == fit(_pairs(devi, ratio), confidence=0.9).k
    assert fit(_pairs(devi, [0.3] * 10), confidence=0.9).k == pytest.approx(0.3)


def test_pairs_drawn_by_deviation_count_with_the_inverse_of_their_odds():
    """Strategy ``weighted`` labels high-deviation frames, where the error per unit deviation is
    lower (a shared error floor): k from those pairs, unweighted, underestimates the candidates'
    error; weighted by 1/d^2 (Horvitz-Thompson) it does not, on average over draws."""
    from dpa3_al.calibration import selection_weight
    from dpa3_al.select import weighted_draw

    rng = np.random.default_rng(3)
    d = rng.lognormal(np.log(0.1), 0.6, 300)
    e = np.sqrt(0.05 ** 2 + (0.3 * d) ** 2)                    # error floor 0.05 eV/Å + 0.3 x deviation
    k_true = np.sqrt(np.sum(e ** 2) / np.sum(d ** 2))
    plain, weighted = [], []
    for _ in range(200):
        idx = weighted_draw(d, 15, rng)
        pairs = [CalibrationPair(0, str(i), d[i], e[i], 2 * e[i], selection_weight("weighted", d[i], False))
                 for i in idx]
        weighted.append(fit(pairs, 0.5).k_rms)
        plain.append(fit([CalibrationPair(0, p.frame, p.max_devi_f, p.true_f_rmse, p.true_f_max) for p in pairs],
                         0.5).k_rms)
    assert np.mean(plain) < 0.9 * k_true                          # biased towards the high-deviation ratio
    assert np.mean(weighted) == pytest.approx(k_true, rel=0.06)
    assert selection_weight("random", 0.3, False) == 1.0 and selection_weight("weighted", 0.3, True) == 1.0
    assert selection_weight("weighted", 0.3, False) == pytest.approx(0.09)
    assert selection_weight("diversity", 0.3, False) == pytest.approx(0.09)
    assert selection_weight("weighted", 0.3, False, 1.0) == pytest.approx(0.3)        # select.draw_power 1
    assert selection_weight("diversity", 0.3, False, 1.0) == pytest.approx(0.09)      # no power of its own
    assert selection_weight("highest", 0.3, False) == 1.0 and selection_weight("diversity", 0.3, True) == 1.0


def test_levels_follow_the_target_through_the_calibration():
    target = TargetConfig(f_rmse=0.04, confidence=0.8, window=2, min_frames=5, hi_factor=3.0)
    # iteration 0: e = 0.5 d (old committee), iterations 1-2: e = 0.25 d exactly
    pairs = [*_pairs([0.1] * 6, [0.5] * 6, 0), *_pairs(np.linspace(0.1, 0.3, 6), [0.25] * 6, 1),
             *_pairs(np.linspace(0.1, 0.3, 6), [0.25] * 6, 2)]
    levels = derive_levels(target, pairs, f_lo=0.05, f_hi=0.15)
    assert levels.calibrated and not levels.explicit
    assert levels.f_lo == pytest.approx(0.04 / 0.25)         # only the latest `window` iterations count
    assert levels.f_hi == pytest.approx(3 * 0.04 / 0.25)      # above select.f_hi 0.15: raised
    assert derive_levels(target, pairs, f_lo=0.05, f_hi=0.9).f_hi == 0.9     # select.f_hi kept
    assert levels.fit.n == 12 and "iterations [1, 2]" in levels.reason
    # a frame just below f_lo has a true RMSE below the target by construction (e = 0.25 d)
    assert 0.25 * (levels.f_lo * 0.999) < target.f_rmse


@pytest.mark.parametrize("seed", range(6))
def test_the_accurate_share_is_reached_exactly_when_the_estimated_rmse_meets_the_target(seed):
    """With explored deviations, f_lo is placed so that accurate ratio >= share <=> k RMS(d) <= target."""
    rng = np.random.default_rng(seed)
    pairs = _pairs(rng.uniform(0.05, 0.5, 20), rng.uniform(0.4, 0.8, 20))
    k = fit(pairs, 0.5).k
    devi = rng.lognormal(np.log(0.1), 0.5, 300)
    devi[rng.integers(0, 300, 3)] = np.nan                      # frames without a deviation: never accurate
    estimate = k * np.sqrt(np.nanmean(devi ** 2))
    for f_rmse in estimate * np.array([0.7, 0.95, 0.999, 1.001, 1.05, 1.5]):
        target = TargetConfig(f_rmse=float(f_rmse), confidence=0.5, min_frames=5, share=0.9)
        lv = derive_levels(target, pairs, f_lo=0.05, f_hi=0.15, explored=devi)
        assert lv.calibrated and lv.estimated_f_rmse == pytest.approx(estimate)
        accurate = float(np.mean(classify(devi, None, Levels(lv.f_lo, lv.f_hi)) == 0))
        assert (accurate >= 0.9) == (estimate <= f_rmse), (f_rmse, estimate, accurate)
        assert lv.f_hi == pytest.approx(max(0.15, 3 * lv.f_lo)) and "estimated" in lv.reason


def test_before_calibration_every_explored_frame_is_a_candidate():
    levels = derive_levels(TargetConfig(f_rmse=0.05, min_frames=5), _pairs([0.2] * 4, [0.5] * 4), 0.05, 0.15)
    assert (levels.calibrated, levels.f_lo, levels.f_hi) == (False, 0.0, 1.0e9)
    assert "4 calibration frames" in levels.reason
    assert classify(np.array([0.0, 0.3, 50.0]), None, Levels(levels.f_lo, levels.f_hi)).tolist() == [1, 1, 1]


def test_explicit_levels_win():
    target = TargetConfig(f_rmse=0.05, explicit_levels=True)
    levels = derive_levels(target, _pairs([0.2] * 10, [0.5] * 10), 0.07, 0.2)
    assert (levels.f_lo, levels.f_hi, levels.explicit, levels.calibrated) == (0.07, 0.2, True, False)


def test_files_round_trip_and_a_rerun_replaces_its_iteration(tmp_path):
    record = CalibrationRecord().with_iteration(0, _pairs([0.1, 0.2], [0.5, 0.5], 0))
    record = record.with_iteration(1, _pairs([0.3], [0.4], 1)).with_iteration(1, _pairs([0.3, 0.4], [0.4, 0.4], 1))
    record.write(tmp_path)
    back = CalibrationRecord.read(tmp_path)
    assert [p.iteration for p in back.pairs] == [0, 0, 1, 1] and back.pairs == record.pairs
    assert CalibrationRecord.read(tmp_path / "nothing-here").pairs == ()
    levels = derive_levels(TargetConfig(min_frames=1), back.pairs, 0.05, 0.15)
    levels.write(tmp_path)
    assert TargetLevels.read(tmp_path) == levels
    (tmp_path / "calibration.json").write_text('{"pairs": [{"nonsense": 1}]}')
    with pytest.raises(ValueError):
        CalibrationRecord.read(tmp_path)


def test_target_section_errors_name_the_key():
    with pytest.raises(Exception, match=r"target.confidence"):
        from_dict(TargetConfig, {"confidence": 1.5}, path="target")


# -- convergence: a stage that converges when the committee is accurate, and not before -------------
STAGE = from_dict(StageConfig, {"max_iter": 10, "conv_accuracy": 0.9, "task_groups": [
    {"configurations": [{"lattice": {"symbols": "Cu", "crystal": "fcc", "a": 3.6}}], "temps": [300]}]})


def _explored(rng, true_rmse, ratio=0.25, n=400):
    """Deviations of explored frames of a committee whose frame force RMSE is spread around
    ``true_rmse`` and whose deviation tracks it (true = ratio * devi, +-10 %)."""
    true = rng.lognormal(np.log(true_rmse), 0.3, n)
    return true / (ratio * rng.uniform(0.9, 1.1, n)), true


def _outcome(target, pairs, devi):
    lv = derive_levels(target, pairs, f_lo=0.05, f_hi=0.15, explored=devi)
    classes = classify(devi, None, Levels(lv.f_lo, lv.f_hi))
    return IterationOutcome(accurate_ratio=float(np.mean(classes == 0)), n_frames=len(devi), f_lo=lv.f_lo,
                            calibrated=lv.calibrated), lv


def test_a_stage_converges_once_the_committee_reaches_the_target_and_not_before():
    rng = np.random.default_rng(0)
    target = TargetConfig(f_rmse=0.05, confidence=0.9, min_frames=5)
    state, history = ScheduleState(), []
    pairs: list[CalibrationPair] = []
    # the committee's typical true error falls iteration by iteration: 0.2, 0.1, 0.05, 0.025, 0.02 eV/Å
    for it, rmse in enumerate([0.2, 0.1, 0.05, 0.025, 0.02]):
        devi, true = _explored(rng, rmse)
        outcome, levels = _outcome(target, pairs, devi)
        decision, state = judge([STAGE], state, outcome)
        history.append((float(np.sqrt(np.mean(true ** 2))), outcome.accurate_ratio, decision.converged,
                        levels.calibrated))
        if state.finished:
            break
        # label 12 of the candidates (between the levels): their true error calibrates the next levels
        cand = np.flatnonzero((devi >= levels.f_lo) & (devi < levels.f_hi))[:12]
        pairs += [CalibrationPair(it, str(i), float(devi[i]), float(true[i]), float(2 * true[i])) for i in cand]
    rmses = [h[0] for h in history]
    assert history[0][3] is False and history[0][2] is False          # iteration 0: levels not calibrated
    assert all(calibrated for *_, calibrated in history[1:])
    # not converged (accurate ratio below 0.9) while the explored frames' force RMSE is above the target ...
    assert all(not conv and ratio < 0.9 for rmse, ratio, conv, _ in history if rmse > 0.05)
    # ... converged in the first iteration where it is below, at calibrated levels
    assert history[-1][2] is True and history[-1][3] is True and history[-1][1] >= 0.9
    assert rmses[-1] <= 0.05 and all(r > 0.05 for r in rmses[:-1]) and len(rmses) == 4


def test_decide_reads_target_json_beside_the_selection(tmp_path):
    sel = tmp_path / "select"
    sel.mkdir()
    SelectionReport(Levels(0.05, 0.15), {"accurate": 95, "candidate": 5, "failed": 0, "failed_nan": 0}, {}, {}
                    ).write(sel)
    stages = [STAGE]
    TargetLevels(0.05, 0.9, False, 0.0, 1e9, "uncalibrated").write(sel)
    assert decide(stages, None, sel, 0, tmp_path / "d0") is False
    assert "not yet calibrated" in ScheduleRecord.read(tmp_path / "d0").decisions[-1].reason
    TargetLevels(0.05, 0.9, True, 0.2, 0.6, "calibrated").write(sel)
    assert decide(stages, None, sel, 0, tmp_path / "d1") is True
    TargetLevels(0.05, 0.9, False, 0.05, 0.15, "explicit", explicit=True).write(sel)
    assert decide(stages, None, sel, 0, tmp_path / "d2") is True      # explicit levels: judged as usual
    (sel / "target.json").unlink()
    assert decide(stages, None, sel, 0, tmp_path / "d3") is True      # no target: as before


def _write_selection(folder: Path, devi: np.ndarray, levels: TargetLevels) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    classes = classify(devi, None, Levels(levels.f_lo, levels.f_hi))
    counts = {"accurate": int(np.sum(classes == 0)), "candidate": int(np.sum(classes == 1)),
              "failed": int(np.sum(classes == 2)), "failed_nan": 0}
    SelectionReport(Levels(levels.f_lo, levels.f_hi), counts, {}, {}).write(folder)
    levels.write(folder)
    return folder


def test_the_verdict_is_recalibrated_on_the_iterations_own_labels(tmp_path):
    """The select step's levels come from an earlier committee (k lags); the decide step judges
    at the levels this iteration's own labels give, on the same explored deviations."""
    rng = np.random.default_rng(1)
    target = TargetConfig(f_rmse=0.05, min_frames=5, confidence=0.5)
    devi, true = _explored(rng, 0.04)                  # this committee: true = 0.25 devi, RMSE ~0.044 eV/Å
    assert np.sqrt(np.mean(true ** 2)) <= 0.05
    old = _pairs(np.linspace(0.1, 0.3, 10), [1.0] * 10, 2)           # the previous committee: true = devi
    selected = derive_levels(target, old, 0.05, 0.15, explored=devi)
    assert selected.calibrated and selected.estimated_f_rmse > 0.15   # lagged: 4x too pessimistic
    sel = _write_selection(tmp_path / "select", devi, selected)
    assert TargetLevels.read(sel).explored == tuple(sorted(float(f"{d:.6g}") for d in devi))
    top = np.argsort(devi)[-10:]                                       # the labels of iteration 3
    own = [CalibrationPair(3, str(i), float(devi[i]), float(true[i]), float(2 * true[i])) for i in top]
    cal = tmp_path / "evaluate"
    cal.mkdir()
    CalibrationRecord((*old, *own)).write(cal)

    assert decide([STAGE], None, sel, 3, tmp_path / "lagged") is False        # no calibration: as selected
    assert decide([STAGE], None, sel, 3, tmp_path / "d", target=target, calibration=cal) is True
    decision = ScheduleRecord.read(tmp_path / "d").decisions[-1]
    fresh = TargetLevels.read(tmp_path / "d")
    k = fit(own, 0.5).k
    assert fresh.estimated_f_rmse == pytest.approx(k * np.sqrt(np.mean(devi ** 2)), rel=1e-4)
    assert fresh.estimated_f_rmse <= 0.05 and fresh.fit.n == 10         # only this iteration's pairs
    assert decision.f_lo == pytest.approx(fresh.f_lo) and decision.f_lo > selected.f_lo
    assert decision.accurate_ratio == pytest.approx(np.mean(devi < fresh.f_lo)) and decision.accurate_ratio >= 0.9
    assert "recalibrated on this iteration's labels" in decision.reason
    history = ScheduleRecord.read(tmp_path / "d").state.history
    assert history == () or history[-1].selected_ratio < 0.9             # the lagged levels said "no"

    # the other way: a committee worse than its predecessor is not passed on the old k
    worse = [CalibrationPair(3, p.frame, p.max_devi_f, 4 * p.true_f_rmse, 4 * p.true_f_max) for p in own]
    good_old = _pairs(np.linspace(0.1, 0.3, 10), [0.25] * 10, 2)
    sel2 = _write_selection(tmp_path / "select2", devi, derive_levels(target, good_old, 0.05, 0.15, explored=devi))
    assert decide([STAGE], None, sel2, 3, tmp_path / "lagged2") is True
    CalibrationRecord((*good_old, *worse)).write(cal)
    assert decide([STAGE], None, sel2, 3, tmp_path / "d2", target=target, calibration=cal) is False

    # fewer of its own labels than min_frames: the select step's levels judge
    CalibrationRecord((*old, *own[:4])).write(cal)
    assert decide([STAGE], None, sel, 3, tmp_path / "d3", target=target, calibration=cal) is False
    assert not (tmp_path / "d3" / "target.json").exists()


def test_explored_deviations_kept_for_the_verdict_are_bounded_and_keep_nan_frames():
    from dpa3_al.calibration import EXPLORED_KEEP

    devi = np.concatenate([np.random.default_rng(0).uniform(0, 1, 10_000), [np.nan] * 500])
    lv = derive_levels(TargetConfig(min_frames=1), _pairs([0.1, 0.2], [0.5, 0.5]), 0.05, 0.15, explored=devi)
    assert len(lv.explored) == EXPLORED_KEEP and math.isnan(lv.explored[-1])
    # the accurate ratio from the kept quantiles matches the full set's to a few parts in a thousand
    for level in (0.1, 0.5, 0.9):
        assert lv.accurate_ratio(level) == pytest.approx(np.mean(np.nan_to_num(devi, nan=9) < level), abs=2e-3)


@pytest.mark.slow
def test_a_real_loop_calibrates_its_levels_from_the_first_labels(tmp_path):
    """The loop with tiny models trained for real and EMT labels, 2 iterations with a target:
    iteration 0 labels on uncalibrated levels, iteration 1's levels come from iteration 0's
    labels (f_lo = target / k, k from calibration.json) and its decision is judged on them."""
    from dpa3_al.config import config_dict
    from dpa3_al.workflows import submit, wait
    from dpa3_al.workflows.plan import plan_from_config
    from tests.al.test_seeds import _config, _load

    cfg = _config(tmp_path, 2, target={"f_rmse": 0.05, "confidence": 0.8, "min_frames": 3})
    cfg["select"] = {"max_select": 4, "strategy": "random"}                  # no explicit levels
    cfg["explore"]["stages"][0]["max_iter"] = 2
    run_cfg = _load(tmp_path, cfg)
    assert run_cfg.target is not None and not run_cfg.target.explicit_levels
    run = submit(tmp_path / "runs", "cal", plan_from_config(run_cfg, tmp_path), config_dict(run_cfg))
    state = wait(run.root, 900, 0.5)
    assert state.status == "succeeded", state.message
    t0 = TargetLevels.read(run.iteration_dir(0) / "select")
    t1 = TargetLevels.read(run.iteration_dir(1) / "select")
    assert not t0.calibrated and (t0.f_lo, t0.f_hi) == (0.0, 1.0e9)
    pairs = CalibrationRecord.read(run.iteration_dir(0) / "decide").iteration(0)
    assert len(pairs) == 4 and all(p.true_f_rmse > 0 for p in pairs)
    k = fit(pairs, 0.8).k
    from dpa3_al.explore.frames import read_frames_table
    from dpa3_al.explore.tasks import task_dirs
    devi = read_frames_table(task_dirs(run.iteration_dir(1) / "explore")).column("max_devi_f")
    assert t1.calibrated and t1.estimated_f_rmse == pytest.approx(k * np.sqrt(np.nanmean(devi ** 2)))
    sel1 = SelectionReport.read(run.iteration_dir(1) / "select")
    assert sel1.levels.f_lo == pytest.approx(t1.f_lo)
    assert (sel1.ratio("accurate") >= t1.share) == (t1.estimated_f_rmse <= 0.05)
    d0 = ScheduleRecord.read(run.iteration_dir(0) / "decide").latest(0)
    d1 = ScheduleRecord.read(run.iteration_dir(1) / "decide").latest(1)
    # the verdicts: recalibrated on each iteration's own labels (iteration 0 too: its 4 labels >= min_frames)
    assert not d0.converged and "recalibrated on this iteration's labels" in d0.reason
    assert "recalibrated on this iteration's labels" in d1.reason
    v1 = TargetLevels.read(run.iteration_dir(1) / "decide")
    own = CalibrationRecord.read(run.iteration_dir(1) / "decide").iteration(1)
    assert v1.fit.n == len(own) and v1.estimated_f_rmse == pytest.approx(
        fit(own, 0.8).k * np.sqrt(np.nanmean(devi ** 2)), rel=1e-4)
    assert (d1.accurate_ratio >= t1.share) == (v1.estimated_f_rmse <= 0.05)
    assert t1.f_hi == pytest.approx(max(0.15, 3 * 0.05 / k))                # select.f_hi default 0.15 kept
    md = (run.root / "report" / "report.md").read_text()
    assert "## Accuracy" in md and "calibrated: explored force RMSE estimated" in md


def test_the_select_step_uses_the_levels_the_target_gives(tmp_path, monkeypatch):
    """steps.select_candidates: uncalibrated, calibrated and explicit levels reach select()."""
    import dpa3_al.select as select_mod
    from dpa3_al.steps import select_candidates

    used = []

    def fake_select(dirs, cfg, out_dir, descriptor_fn=None, labeled=(), table=None):
        used.append((cfg.f_lo, cfg.f_hi))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return SelectionReport(Levels(cfg.f_lo, cfg.f_hi), {"accurate": 0, "candidate": 0, "failed": 0}, {}, {})

    monkeypatch.setattr(select_mod, "select", fake_select)
    target = {"f_rmse": 0.05, "confidence": 0.9, "min_frames": 3}
    cal = tmp_path / "cal"
    cal.mkdir()
    select_candidates({"select": {}, "target": target}, [], 0, tmp_path / "s0", calibration=None)
    CalibrationRecord(tuple(_pairs([0.1, 0.2, 0.3, 0.4], [0.5] * 4, 0))).write(cal)
    select_candidates({"select": {}, "target": target}, [], 1, tmp_path / "s1", calibration=cal)
    explicit = {**target, "explicit_levels": True}
    select_candidates({"select": {"f_lo": 0.07, "f_hi": 0.2}, "target": explicit}, [], 1, tmp_path / "s2",
                      calibration=cal)
    assert used == [(0.0, 1.0e9), (pytest.approx(0.1), pytest.approx(0.3)), (0.07, 0.2)]
    # a starved committee (true error 50x its deviation): tiny f_lo, select.f_hi kept, frames stay candidates
    CalibrationRecord(tuple(_pairs([0.01, 0.02, 0.03, 0.04], [50.0] * 4, 0))).write(cal)
    select_candidates({"select": {"f_hi": 0.5}, "target": target}, [], 1, tmp_path / "s3", calibration=cal)
    assert used[-1] == (pytest.approx(0.001), 0.5)
    assert [TargetLevels.read(tmp_path / s).calibrated for s in ("s0", "s1", "s2")] == [False, True, False]


def test_a_lower_level_written_in_the_config_wins_over_the_target(tmp_path):
    from tests.al.test_seeds import _config, _load

    target = {"f_rmse": 0.05}
    written = _load(tmp_path, _config(tmp_path, 1, target=target, select={"f_lo": 0.1, "f_hi": 0.4}), "a.yaml")
    only_hi = _load(tmp_path, _config(tmp_path, 1, target=target, select={"f_hi": 0.4}), "b.yaml")
    assert written.target.explicit_levels and not only_hi.target.explicit_levels


def test_with_a_target_the_stages_share_one_conv_accuracy(tmp_path):
    from dpa3_al.common.typed_config import ConfigError
    from tests.al.test_seeds import _config, _load

    cfg = _config(tmp_path, 1, target={"f_rmse": 0.05})
    cfg["explore"]["stages"][0]["conv_accuracy"] = 0.8
    assert _load(tmp_path, cfg, "a.yaml").target.share == 0.8
    cfg["explore"]["stages"].append({**cfg["explore"]["stages"][0], "conv_accuracy": 0.95})
    with pytest.raises(ConfigError, match=r"explore.stages.*one value"):
        _load(tmp_path, cfg, "b.yaml")
