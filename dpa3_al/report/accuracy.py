"""How accurate the committee is: the test-set learning curve, the calibration of the deviation
against true errors, the levels an accuracy target gives, and the final model.

``learning_curve.csv`` (columns ``iteration,labels,member,test_e_rmse,test_f_rmse,test_f_p99,
test_v_rmse``; member ``mean`` is the committee mean; iteration ``final`` the final committee)
is assembled from each iteration's ``decide/test.json`` and ``final/test.json``. Units: energy
and virial RMSE eV/atom, force RMSE and p99 of the per-atom force error norm eV/Å.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence

import numpy as np

from dpa3_al.calibration import fit

from .data import IterationData, RunData
from .document import Heading, Para, Table, fmt, place
from .plots import _figure, _png

__all__ = ["LEARNING_CURVE_CSV", "CSV_COLUMNS", "learning_curve_rows", "learning_curve_csv", "predicted_rmse",
           "accuracy_blocks"]

LEARNING_CURVE_CSV = "learning_curve.csv"
CSV_COLUMNS = ("iteration", "labels", "member", "test_e_rmse", "test_f_rmse", "test_f_p99", "test_v_rmse")


def _tests(run: RunData) -> list[dict[str, Any]]:
    found = [it.test for it in run.iterations if it.test is not None]
    return found + ([run.final_test] if run.final_test is not None else [])


def learning_curve_rows(run: RunData) -> list[dict[str, Any]]:
    """One row per (iteration, member), the committee mean as member ``mean``, in CSV column order."""
    rows = []
    for test in _tests(run):
        for row in test.get("rows", []):
            if isinstance(row, dict):
                rows.append({"iteration": test.get("iteration"), "labels": test.get("labels"),
                             **{k: row.get(k) for k in CSV_COLUMNS[2:]}})
    return rows


def learning_curve_csv(run: RunData) -> str | None:
    """The CSV text (None when no iteration was tested: the run has no ``test_data``)."""
    rows = learning_curve_rows(run)
    if not rows:
        return None
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[k] is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                         for k in CSV_COLUMNS])
    return buf.getvalue()


def _curve_figure(rows: list[dict[str, Any]]) -> bytes | None:
    """Test force and energy RMSE against labels: members thin, committee mean thick, final marked."""
    rows = [r for r in rows if isinstance(r.get("labels"), int)]
    if not rows or all(r.get("test_f_rmse") is None for r in rows):
        return None
    fig, axes = _figure(2)
    for ax, key, label in ((axes[0], "test_f_rmse", "test force RMSE (eV/Å)"),
                           (axes[1], "test_e_rmse", "test energy RMSE (eV/atom)")):
        for member in sorted({r["member"] for r in rows}, key=lambda m: (m == "mean", m)):
            pts = [(r["labels"], r[key], r["iteration"] == "final") for r in rows
                   if r["member"] == member and r.get(key) is not None]
            if not pts:
                continue
            x, y = [p[0] for p in pts], [p[1] for p in pts]
            mean = member == "mean"
            ax.plot(x, y, "o-" if mean else "-", color="k" if mean else "0.6", linewidth=2 if mean else 0.8,
                    ms=4, label="committee mean" if mean else None)
            finals = [p for p in pts if p[2]]
            if finals and mean:
                ax.plot([finals[-1][0]], [finals[-1][1]], "*", color="C3", ms=12, label="final model (mean)")
        ax.set_xlabel("labeled frames in the training set")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].plot([], [], "-", color="0.6", linewidth=0.8, label="members")
    axes[0].legend(fontsize=7, frameon=False)
    return _png(fig)


def _calibration_figure(its: Sequence[IterationData]) -> bytes | None:
    """Selection-time max_devi_f against the committee mean's true largest per-atom force error."""
    pts = [(p.max_devi_f, p.true_f_max, it.index) for it in its for p in it.calibration
           if math.isfinite(p.max_devi_f) and math.isfinite(p.true_f_max)]
    if not pts:
        return None
    fig, (ax,) = _figure()
    d, e, k = (np.array(c, dtype=np.float64) for c in zip(*pts))
    for index in sorted(set(k.astype(int))):
        m = k == index
        ax.plot(d[m], e[m], "o", ms=4, alpha=0.8, color=f"C{index % 10}", label=f"iteration {index}")
    top = float(max(d.max(), e.max())) * 1.05 or 1.0
    ax.plot([0, top], [0, top], ":", color="0.4", linewidth=1, label="true error = deviation")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("max_devi_f at selection (eV/Å)")
    ax.set_ylabel("true max per-atom force error (eV/Å)")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.3)
    return _png(fig)


def predicted_rmse(it: IterationData) -> float:
    """The force RMSE of all explored frames that the deviation predicts: k (the RMS ratio of true
    frame force RMSE to max_devi_f over this iteration's labels, same committee, each label weighted
    by the inverse of its selection odds; at the target's confidence, else central) times the RMS
    of max_devi_f over every recorded frame (eV/Å): the estimate the decide step judges a target
    on (dpa3_al.calibration); NaN without labels or deviations."""
    devi = it.devi_f[np.isfinite(it.devi_f)]
    ratio = fit(it.calibration, it.target.confidence if it.target else 0.5).k
    return float(ratio * np.sqrt(np.mean(devi ** 2))) if devi.size and math.isfinite(ratio) else math.nan


def _calibration_rows(run: RunData) -> list[tuple[str, ...]]:
    rows = []
    for it in run.iterations:
        if not it.calibration and it.target is None:
            continue
        f = fit(it.calibration, it.target.confidence if it.target else 0.5)
        tg = it.target
        test = {str(r.get("member")): r for r in (it.test or {}).get("rows", []) if isinstance(r, dict)}
        rows.append((str(it.index), str(f.n), fmt(f.ratio_median, 3), fmt(f.k, 3), fmt(f.slope_max, 3),
                     fmt(f.corr_max, 3), fmt(predicted_rmse(it), 4), fmt(test.get("mean", {}).get("test_f_rmse"), 4),
                     "-" if tg is None else f"{fmt(tg.f_lo, 4)} / {fmt(tg.f_hi, 4)}",
                     "-" if tg is None else ("calibrated" if tg.calibrated else "configured") + f": {tg.reason}"))
    return rows


def _test_rows(run: RunData) -> list[tuple[str, ...]]:
    rows = []
    for test in _tests(run):
        by = {str(r.get("member")): r for r in test.get("rows", []) if isinstance(r, dict)}
        mean = by.get("mean", {})
        members = [r.get("test_f_rmse") for m, r in by.items() if m != "mean" and r.get("test_f_rmse") is not None]
        rows.append((str(test.get("iteration")), fmt(test.get("labels")), fmt(mean.get("test_f_rmse"), 4),
                     fmt(mean.get("test_f_p99"), 4), fmt(mean.get("test_e_rmse"), 5), fmt(mean.get("test_v_rmse"), 5),
                     f"{fmt(min(members), 4)} - {fmt(max(members), 4)}" if members else "-"))
    return rows


def _final_blocks(run: RunData) -> list[Any]:
    final = run.final
    blocks: list[Any] = [Heading(2, "Final model", "final")]
    if final is None and run.status == "succeeded":
        return blocks + [Para("The run ended without a final model (workflow.final_training: false): the last "
                              "iteration's labels are in its dataset but no model has trained on them; the "
                              "last iteration's committee (iter-N/train/) is the newest model.")]
    if final is None:
        return blocks + [Para("No final model yet: after the last iteration the committee trains on every label "
                              "(final-train) and final/model.pt is chosen (final-evaluate).")]
    return blocks + [Para(f"final/{final.model}: member {final.member} ({final.reason}); the whole committee "
                          f"in final/committee/ ({len(final.committee)} models). Export it with `dpa3-al export`.")]


def accuracy_blocks(run: RunData, images: dict[str, bytes]) -> list[Any]:
    """The report's "Accuracy" and "Final model" sections."""
    blocks: list[Any] = [Heading(2, "Accuracy", "accuracy")]
    rows = learning_curve_rows(run)
    if rows:
        blocks += [Para("Test set (test_data) after each iteration's training; committee mean, and the range "
                        "over members. learning_curve.csv has every member."),
                   Table(("tested after iteration", "labels", "F RMSE (eV/Å)", "F p99 (eV/Å)", "E RMSE (eV/atom)",
                          "V RMSE (eV/atom)", "members' F RMSE (eV/Å)"), tuple(_test_rows(run)))]
    else:
        blocks.append(Para("No test set: add test_data to the run config to measure the true error each "
                           "iteration (report/learning_curve.csv)."))
    blocks += place({"accuracy-learning-curve.png": ("test error against labeled frames", _curve_figure(rows))},
                    images, "nothing to plot")
    cal = _calibration_rows(run)
    blocks.append(Para("Calibration: each iteration's new labels against the deviation they were selected with. "
                       "k = RMS ratio of true frame force RMSE to max_devi_f (its bootstrap quantile at the "
                       "target's confidence); slope and correlation of the true max per-atom force error against "
                       "max_devi_f. Predicted F RMSE: k x RMS of max_devi_f over every explored frame, the error "
                       "the deviation announces (what an accuracy target is judged on), beside the test set's "
                       "(committee mean). Levels: those the select step used."))
    if cal:
        blocks.append(Table(("labels of iteration", "labeled frames", "median ratio", "k", "slope (max error)",
                             "correlation", "predicted F RMSE (eV/Å)", "test F RMSE (eV/Å)", "f_lo / f_hi used (eV/Å)",
                             "levels"), tuple(cal)))
    blocks += place({"accuracy-calibration.png": ("selection deviation against true error of the labeled frames",
                                                  _calibration_figure(run.iterations))}, images,
                    "no calibration data")
    return blocks + _final_blocks(run)
