"""The test set of a run (``test_data``): per-member and committee-mean errors (dpa3_al/evaluation.py),
the calibration pairs of the labeled frames, and the report's learning_curve.csv and plots."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dpa3_al.calibration import CalibrationPair, CalibrationRecord
from dpa3_al.evaluation import calibration_pairs, committee_errors, count_frames, error_row, read_test, write_test
from dpa3_al.report import build_report, load_run
from dpa3_al.report.accuracy import CSV_COLUMNS
from tests.model.train_helpers import emt_system

COLUMNS = "iteration,labels,member,test_e_rmse,test_f_rmse,test_f_p99,test_v_rmse"


def test_error_row_of_known_errors():
    e = (np.array([0.0, 0.0]), np.array([0.1, -0.1]))
    f = (np.zeros(6), np.array([3.0, 4.0, 0.0, 0.0, 0.0, 0.0]))         # atom errors |(3,4,0)| = 5, 0
    v = (np.zeros(9), np.full(9, 0.2))
    row = error_row(e, f, v)
    assert row["test_e_rmse"] == pytest.approx(0.1)
    assert row["test_f_rmse"] == pytest.approx(np.sqrt(25 / 6))
    assert row["test_f_p99"] == pytest.approx(np.percentile([5.0, 0.0], 99))
    assert row["test_v_rmse"] == pytest.approx(0.2)
    assert error_row(e, f, None)["test_v_rmse"] is None


@pytest.fixture(scope="module")
def committee(tmp_path_factory):
    """Two tiny random models (Au, Cu) and an EMT test system (6 frames, with virials)."""
    from dpa3_al.model import ModelConfig, build_model, save_model

    root = tmp_path_factory.mktemp("committee")
    paths = []
    for k in range(2):
        paths.append(save_model(build_model(ModelConfig.tiny(type_map=["Au", "Cu"]), seed=11 + k), root / f"m{k}.pt"))
    return paths, emt_system(root / "test", n_frames=6, seed=3)


def test_members_and_the_committee_mean_on_the_test_set(committee, tmp_path):
    from dpa3_al.model import DPA3Calculator
    from dpa3_al.model.train.data import load_systems

    models, test = committee
    rows = committee_errors(models, [test])
    assert [r["member"] for r in rows] == ["0", "1", "mean"]
    # the committee mean computed independently, frame by frame through the ASE calculators
    (system,) = load_systems([test])
    calcs = [DPA3Calculator(str(m)) for m in models]
    de, df, dv = [], [], []
    from ase import Atoms

    for i in range(system.n_frames):
        atoms = Atoms(system.symbols(), positions=system.coords[i], cell=system.cells[i], pbc=True)
        preds = []
        for calc in calcs:
            calc.reset()
            atoms.calc = calc
            preds.append((atoms.get_potential_energy(), atoms.get_forces(), -atoms.get_stress(voigt=False)
                          * atoms.get_volume()))
        n = len(atoms)
        de.append(np.mean([p[0] for p in preds]) / n - system.energy[i] / n)
        df.append(np.mean([p[1] for p in preds], axis=0) - system.forces[i])
        dv.append((np.mean([p[2] for p in preds], axis=0) - system.virial[i]) / n)
    df = np.concatenate(df)
    mean = rows[-1]
    assert mean["test_e_rmse"] == pytest.approx(np.sqrt(np.mean(np.square(de))), rel=1e-6)
    assert mean["test_f_rmse"] == pytest.approx(np.sqrt(np.mean(df ** 2)), rel=1e-6)
    assert mean["test_f_p99"] == pytest.approx(np.percentile(np.linalg.norm(df, axis=1), 99), rel=1e-6)
    assert mean["test_v_rmse"] == pytest.approx(np.sqrt(np.mean(np.square(dv))), rel=1e-5)
    assert rows[0]["test_f_rmse"] != pytest.approx(rows[1]["test_f_rmse"])      # members differ
    # no virial labels: the virial column is empty
    novir = tmp_path / "novir"
    shutil.copytree(test, novir)
    (novir / "set.000" / "virial.npy").unlink()
    assert all(r["test_v_rmse"] is None for r in committee_errors(models, [novir]))
    assert count_frames([test, novir, tmp_path / "empty-dataset"]) == 12


def test_calibration_pairs_pair_the_selection_deviation_with_the_true_error(committee, tmp_path):
    """Labeled frames are found by their candidate index (task-NNNNNN) and paired with the
    selection record of the same index; the true error is the committee mean's vs the label."""
    import ase.io
    from ase.calculators.emt import EMT

    from dpa3_al.label.results import LabelMeta, LabeledFrame
    from dpa3_al.label.taskdir import prepare_task, write_result
    from dpa3_al.model import CommitteeCalculator
    from dpa3_al.model.train.data import load_systems

    models, test = committee
    (system,) = load_systems([test])
    from ase import Atoms

    selected, frames = [], []
    for i in range(3):
        atoms = Atoms(system.symbols(), positions=system.coords[i], cell=system.cells[i], pbc=True)
        frames.append(atoms)
        selected.append({"frame": f"task-00000{i}:{i}", "max_devi_f": 0.1 * (i + 1), "avg_devi_f": 0.02 * (i + 1)})
    labeled = tmp_path / "label" / "batch-000000"
    for i in (0, 2):                                    # frame 1 was not labeled (failed)
        task = labeled / f"task-{i:06d}"
        prepare_task(task, frames[i])
        lab = frames[i].copy()
        lab.calc = EMT()
        lab.get_forces()
        from ase.calculators.singlepoint import SinglePointCalculator

        lab.calc = SinglePointCalculator(lab, energy=lab.get_potential_energy(), forces=lab.get_forces())
        write_result(task, LabeledFrame(lab, LabelMeta(labeler="emt", settings_hash="x")), "x")
    pairs = calibration_pairs(models, selected, [tmp_path / "label"], iteration=4)
    assert [(p.iteration, p.frame, p.max_devi_f) for p in pairs] == [(4, "task-000000:0", 0.1),
                                                                      (4, "task-000002:2", pytest.approx(0.3))]
    comm = CommitteeCalculator([str(m) for m in models]).evaluate_all(frames[2])
    frames[2].calc = EMT()
    diff = comm["forces_comm"].mean(axis=0) - frames[2].get_forces()
    assert pairs[1].true_f_max == pytest.approx(np.linalg.norm(diff, axis=1).max())
    assert pairs[1].true_f_rmse == pytest.approx(np.sqrt(np.mean(diff ** 2)))
    assert [p.weight for p in pairs] == [1.0, 1.0]            # no selection odds given: uniform
    # a weighted draw among more candidates than it took: each label carries its odds, max_devi_f^2
    from dpa3_al.select import Levels, SelectionReport
    report = SelectionReport(Levels(0.05, 0.6), {"accurate": 0, "candidate": 10, "failed": 0}, {}, {},
                             selected=selected, strategy="weighted", n_eligible=10)
    weighted = calibration_pairs(models, selected, [tmp_path / "label"], iteration=4, odds=report.selection_odds)
    assert [p.weight for p in weighted] == [pytest.approx(0.01), pytest.approx(0.09)]
    every = SelectionReport(Levels(0.05, 0.6), {"accurate": 0, "candidate": 10, "failed": 0}, {}, {},
                            selected=selected, strategy="weighted", n_eligible=3)   # the whole pool taken
    assert every.selection_odds(selected[2]) == 1.0
    # drawn by avg_devi_f (select.draw_by): the odds follow that deviation, not max_devi_f
    by_avg = SelectionReport(Levels(0.05, 0.6), {"accurate": 0, "candidate": 10, "failed": 0}, {}, {},
                             selected=selected, strategy="weighted", n_eligible=10, draw_by="avg_devi_f")
    assert [by_avg.selection_odds(r) for r in selected] == [pytest.approx(0.0004), pytest.approx(0.0016),
                                                            pytest.approx(0.0036)]
    assert by_avg.selection_odds({"max_devi_f": 0.3}) == 1.0     # a record without that deviation: odds 1


def _row(member, f):
    return {"member": member, "test_e_rmse": f / 10, "test_f_rmse": f, "test_f_p99": 3 * f, "test_v_rmse": None}


def test_report_learning_curve_csv_and_plots(tmp_path):
    run = tmp_path / "runs" / "cu"
    for it, (labels, f) in enumerate([(10, 0.3), (25, 0.2)]):
        folder = run / f"iter-{it:06d}" / "decide"
        folder.mkdir(parents=True)
        write_test(folder, it, labels, [_row("0", f), _row("1", 1.5 * f), _row("mean", 0.9 * f)])
        pairs = [CalibrationPair(it, f"f{k}", 0.1 * (k + 1), 0.05 * (k + 1), 0.12 * (k + 1)) for k in range(4)]
        CalibrationRecord(tuple(pairs)).write(folder)
    (run / "final").mkdir()
    write_test(run / "final", "final", 40, [_row("0", 0.1), _row("1", 0.12), _row("mean", 0.09)])
    (run / "final" / "final.json").write_text(json.dumps({"model": "model.pt", "member": 0, "reason": "lowest",
                                                          "committee": ["committee/member-000.pt"]}))
    out = build_report(run)
    text = (out / "learning_curve.csv").read_text()
    assert text.splitlines()[0] == COLUMNS == ",".join(CSV_COLUMNS)
    rows = list(csv.DictReader(text.splitlines()))
    assert [(r["iteration"], r["labels"], r["member"]) for r in rows] == [
        ("0", "10", "0"), ("0", "10", "1"), ("0", "10", "mean"), ("1", "25", "0"), ("1", "25", "1"),
        ("1", "25", "mean"), ("final", "40", "0"), ("final", "40", "1"), ("final", "40", "mean")]
    assert float(rows[5]["test_f_rmse"]) == pytest.approx(0.18) and rows[5]["test_v_rmse"] == ""
    assert (out / "accuracy-learning-curve.png").stat().st_size > 1000
    assert (out / "accuracy-calibration.png").stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "## Accuracy" in md and "## Final model" in md and "final/model.pt: member 0" in md
    data = load_run(run)
    assert [len(it.calibration) for it in data.iterations] == [4, 4]
    # predicted RMSE: median(true RMSE / devi) = 0.5 times the RMS of the explored deviations
    from dpa3_al.report.accuracy import predicted_rmse

    data.iterations[0].devi_f = np.array([0.1, 0.3, np.nan])
    assert predicted_rmse(data.iterations[0]) == pytest.approx(0.5 * np.sqrt((0.01 + 0.09) / 2))
    assert read_test(run / "final")["labels"] == 40
    # a run without test_data: no CSV, and the report says how to get one
    shutil.rmtree(run / "final")
    for it in (0, 1):
        (run / f"iter-{it:06d}" / "decide" / "test.json").unlink()
    out = build_report(run)
    assert not (out / "learning_curve.csv").exists() and "add test_data" in (out / "report.md").read_text()
