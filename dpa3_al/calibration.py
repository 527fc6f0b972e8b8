"""Trust levels that mean an accuracy: the committee's deviation calibrated against true errors.

Each iteration labels exactly the frames the committee was unsure about. Before those labels
are trained on, the committee's mean prediction on them is compared with the labels
(:mod:`dpa3_al.evaluation`): one *calibration pair* per labeled frame, the selection-time
``max_devi_f`` d (eV/Å) and the true force error of the committee mean on that frame: its
force RMSE e (components, eV/Å) and its largest per-atom error norm e_max (eV/Å).

A user states the accuracy wanted (``target: {f_rmse: 0.05}``, eV/Å): the force RMSE of the
committee over the frames it explores. The calibration factor k is the RMS ratio of true error
to deviation over the latest ``window`` iterations' pairs, k = sqrt(sum e^2 / sum d^2), so that
k * RMS(d) reproduces the labeled frames' RMSE. Each pair counts with the inverse of the odds it
had to be labeled (``weight``: the ``select.draw_by`` deviation squared, max_devi_f^2 by default, under
strategies ``weighted`` (to the power ``select.draw_power``) and ``diversity``, else 1), so that k
describes the candidates, not just the high-deviation frames a weighted draw favours (where the
error per unit deviation is lower): k = sqrt(sum e^2/w / sum d^2/w). With ``confidence`` above
0.5, k is that quantile of its bootstrap distribution over the pairs (the estimate then errs on
the safe side with that probability; 0.9 by default). An iteration's explored frames (deviations d_1..d_n) then have an estimated force
RMSE  E = k * RMS(d), and the lower trust level is

    f_lo = (f_rmse / k) * d_(s) / RMS(d)          f_hi = max(select.f_hi, hi_factor * f_lo)

with d_(s) the deviation below which the share s of the frames lie (s = the stages'
``conv_accuracy``, 0.9 by default). By construction the accurate ratio (d < f_lo) reaches s
exactly when E <= f_rmse: a stage converges when the estimated RMSE of what it explores meets the
target, and not before; the frames above f_lo, the ones that carry that RMSE, are the candidates.
Until ``min_frames`` pairs exist (the first iteration) the levels are *uncalibrated*: f_lo = 0 and
f_hi = 1e9 eV/Å, so every explored frame that passes the filters is a candidate and the capped
selection (``max_select``, its strategy) labels a spread of them, whatever their deviation: the
labels that calibrate the next levels. A stage with a target does not converge on uncalibrated
levels. The upper level keeps its meaning (frames too far out to be worth a label:
``select.f_hi``) unless the derived lower level comes close to it. A lower level the user wrote
explicitly in ``select`` wins over the derived one (``explicit_levels``): the target then only
reports. Without explored deviations (a call outside the loop) f_lo = f_rmse / k: a frame below
it has an estimated force RMSE under the target.

A committee trained too little has deviations far below its true errors (k >> 1): its derived
f_lo is tiny, every frame below f_hi is a candidate, and the calibration table says so.
The ratio is measured on labeled frames (candidates); applying it to every explored frame
assumes the error stays proportional to the deviation there, which the report's calibration
plot shows (on bench/bench_al.py the frame RMSE / max_devi_f ratio spread 0.50-0.82, 10th-90th
percentile, over every explored frame, with Spearman correlation 0.91).

Files: ``calibration.json`` (every iteration's pairs, cumulative; written by the evaluate step)
and ``target.json`` (the levels one select step derived, beside ``selection.json``), each with
its one writer and reader here.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dpa3_al.common.fileio import atomic_write_text
from dpa3_al.common.typed_config import field

__all__ = ["TargetConfig", "CalibrationPair", "CalibrationFit", "TargetLevels", "CalibrationRecord",
           "fit", "derive_levels", "recalibrate", "selection_weight", "CALIBRATION_JSON", "TARGET_JSON"]

CALIBRATION_JSON = "calibration.json"
TARGET_JSON = "target.json"


@dataclass(frozen=True)
class TargetConfig:
    """The accuracy a run aims at; the trust levels follow from it (the ``target:`` section)."""

    f_rmse: float = field(0.05, doc="force RMSE wanted over the explored frames; the stage converges when its "
                          "estimate (k * RMS of max_devi_f, k calibrated on the labels) is at or below it",
                          unit="eV/Å", gt=0)
    confidence: float = field(0.9, doc="quantile of the bootstrap distribution of k used: 0.5 = a central "
                              "estimate, 0.9 = the target is met with 90% confidence (on bench/bench_al.py the "
                              "0.9 estimate was 0.90-1.10x the test-set force RMSE, the 0.5 one 0.80-0.99x)",
                              gt=0, lt=1)
    window: int = field(2, doc="calibrate on the labels of the latest this many iterations", ge=1)
    min_frames: int = field(5, doc="fewer calibration frames than this: uncalibrated levels (f_lo 0, f_hi 1e9: "
                            "every explored frame is a candidate)", ge=1)
    hi_factor: float = field(3.0, doc="f_hi = max(select.f_hi, hi_factor * f_lo)", gt=1)
    share: float = field(0.9, doc="set by the loader to the stages' conv_accuracy: the accurate ratio that "
                         "means the target is met", gt=0, le=1)
    explicit_levels: bool = field(False, doc="set by the loader when select.f_lo is written in the config: "
                                  "the configured levels win and the target only reports")


@dataclass(frozen=True)
class CalibrationPair:
    """One labeled frame: selection-time deviation vs the committee mean's true error (eV/Å)."""

    iteration: int
    frame: str
    max_devi_f: float
    true_f_rmse: float
    true_f_max: float
    weight: float = 1.0     # relative odds the frame had to be selected (draw_by deviation^draw_power under `weighted`)


def selection_weight(strategy: str, devi: float, all_candidates_taken: bool, power: float = 2.0) -> float:
    """The relative odds a candidate had to be labeled: ``devi``^``power`` (its ``select.draw_by``
    deviation, max_devi_f by default; ``select.draw_power``, 2 by default) when strategy ``weighted``
    drew among more candidates than it took, or ``devi``^2 under ``diversity`` (deviation-weighted farthest-point
    sampling; no odds of its own, but it favours high deviations as the draw does: on
    bench/bench_al.py the estimate at confidence 0.9 was 0.94x the test force RMSE with this weight,
    median of 9 iterations, 0.89x with weight 1); else 1 (a uniform draw, every candidate taken, or
    ``highest``)."""
    if strategy in ("weighted", "diversity") and not all_candidates_taken and math.isfinite(devi) and devi > 0:
        return devi ** (power if strategy == "weighted" else 2.0)
    return 1.0


@dataclass(frozen=True)
class CalibrationFit:
    """What a set of pairs says (NaN where undefined)."""

    n: int
    ratio_q: float         # quantile `confidence` of true_f_rmse / max_devi_f
    ratio_median: float    # median of true_f_rmse / max_devi_f
    slope_max: float       # least squares true_f_max = slope * max_devi_f (through the origin)
    corr_max: float        # Pearson correlation of max_devi_f and true_f_max
    confidence: float
    k_rms: float = math.nan    # sqrt(sum e^2 / sum d^2): k * RMS(d) reproduces the frames' RMSE
    k: float = math.nan        # k_rms's bootstrap quantile at `confidence` (k_rms at 0.5)


def fit(pairs: Sequence[CalibrationPair], confidence: float = 0.9) -> CalibrationFit:
    """Fit the pairs with a finite, positive deviation and finite errors."""
    rows = [(p.max_devi_f, p.true_f_rmse, p.true_f_max, p.weight) for p in pairs
            if math.isfinite(p.max_devi_f) and p.max_devi_f > 0 and math.isfinite(p.true_f_rmse)
            and math.isfinite(p.true_f_max) and p.weight > 0]
    if not rows:
        return CalibrationFit(0, math.nan, math.nan, math.nan, math.nan, confidence)
    d, e, emax, w = (np.array(c, dtype=np.float64) for c in zip(*rows))
    ratio = e / d
    corr = float(np.corrcoef(d, emax)[0, 1]) if len(d) > 1 and d.std() > 0 and emax.std() > 0 else math.nan
    k_rms = _k(d, e, 1.0 / w)
    return CalibrationFit(n=len(d), ratio_q=float(np.quantile(ratio, confidence)),
                          ratio_median=float(np.median(ratio)), slope_max=float(d @ emax / (d @ d)),
                          corr_max=corr, confidence=confidence, k_rms=k_rms,
                          k=_bootstrap_k(d, e, 1.0 / w, confidence, k_rms))


def _k(d: np.ndarray, e: np.ndarray, inv_w: np.ndarray) -> float | np.ndarray:
    """k^2 = sum(e^2 / w) / sum(d^2 / w) over the last axis: each pair weighted by the inverse of
    its selection odds w (Horvitz-Thompson), so pairs drawn with odds ~ d^2 estimate the same ratio
    over the candidates as pairs drawn uniformly (for which this is sum e^2 / sum d^2)."""
    k = np.sqrt((e ** 2 * inv_w).sum(axis=-1) / (d ** 2 * inv_w).sum(axis=-1))
    return float(k) if np.ndim(k) == 0 else k


def _bootstrap_k(d: np.ndarray, e: np.ndarray, inv_w: np.ndarray, confidence: float, k_rms: float,
                 draws: int = 400) -> float:
    """Quantile ``confidence`` of k over pairs resampled with replacement (seeded: the same
    pairs give the same k); ``k_rms`` itself at 0.5 or with a single pair."""
    if confidence == 0.5 or len(d) < 2:
        return k_rms
    idx = np.random.default_rng(len(d)).integers(0, len(d), size=(draws, len(d)))
    return float(np.quantile(_k(d[idx], e[idx], inv_w[idx]), confidence))


@dataclass(frozen=True)
class TargetLevels:
    """The levels one select step used and why (``target.json``)."""

    f_rmse: float
    confidence: float
    calibrated: bool
    f_lo: float
    f_hi: float
    reason: str
    fit: CalibrationFit | None = None
    explicit: bool = False      # the configured levels were used because the user wrote them
    estimated_f_rmse: float = math.nan   # k * RMS(max_devi_f) over this iteration's explored frames (eV/Å)
    share: float = 0.9                   # the accurate ratio that means the target is met
    explored: tuple[float, ...] = ()     # the explored max_devi_f, sorted (NaN last); quantiles beyond EXPLORED_KEEP

    def write(self, folder: Path) -> Path:
        path = Path(folder) / TARGET_JSON
        atomic_write_text(path, json.dumps(_nan_to_none(asdict(self)), indent=1))
        return path

    def accurate_ratio(self, f_lo: float) -> float:
        """The share of the explored frames with max_devi_f < ``f_lo`` (NaN: no frames kept)."""
        d = _nan_above(self.explored)
        return float(np.mean(d < f_lo)) if d.size else math.nan

    @classmethod
    def read(cls, path: Path) -> "TargetLevels | None":
        """The levels in ``path`` (a select folder or its target.json); None when there is none."""
        path = Path(path)
        path = path / TARGET_JSON if path.is_dir() else path
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        try:
            fitted = data.get("fit")
            explored = tuple(math.nan if v is None else float(v) for v in data.get("explored") or ())
            return cls(**{**_none_to_nan({k: v for k, v in data.items() if k not in ("fit", "explored")}),
                          "fit": None if fitted is None else CalibrationFit(**_none_to_nan(fitted)),
                          "explored": explored})
        except (AttributeError, TypeError) as err:
            raise ValueError(f"not a target.json ({err})") from None


def _nan_above(devi: Sequence[float] | np.ndarray) -> np.ndarray:
    """Deviations as float64 with NaN (a failed frame) as +inf: above every level, as the
    select step classifies it."""
    return np.nan_to_num(np.asarray(devi, dtype=np.float64), nan=np.inf)


UNCALIBRATED = (0.0, 1.0e9)      # f_lo, f_hi (eV/Å) before any calibration: every frame a candidate
EXPLORED_KEEP = 2001             # target.json keeps every explored deviation up to this many, else as many quantiles


def _explored_sample(explored: np.ndarray | None) -> tuple[float, ...]:
    """The explored deviations, sorted with NaN last, as kept in target.json (evenly spaced order
    statistics when there are more than :data:`EXPLORED_KEEP`), rounded to 6 significant digits."""
    if explored is None or len(explored) == 0:
        return ()
    d = np.sort(_nan_above(explored))
    if d.size > EXPLORED_KEEP:
        d = d[np.round(np.linspace(0, d.size - 1, EXPLORED_KEEP)).astype(int)]
    return tuple(float(f"{v:.6g}") if math.isfinite(v) else math.nan for v in d)


def derive_levels(target: TargetConfig, pairs: Sequence[CalibrationPair], f_lo: float, f_hi: float,
                  explored: np.ndarray | None = None) -> TargetLevels:
    """The levels for the next selection from the pairs of the latest ``target.window`` iterations
    and this iteration's ``explored`` max_devi_f (every recorded frame, NaN for a frame without
    one); the configured ``f_lo``/``f_hi`` when the user wrote them, :data:`UNCALIBRATED` when
    too few pairs exist."""
    recent = sorted({p.iteration for p in pairs})[-target.window:]
    fitted = fit([p for p in pairs if p.iteration in recent], target.confidence)
    estimate, k = math.nan, fitted.k
    if fitted.n and k > 0 and math.isfinite(k) and explored is not None:
        finite = np.asarray(explored, dtype=np.float64)[np.isfinite(explored)]
        estimate = float(k * np.sqrt(np.mean(finite ** 2))) if finite.size else math.nan
    common = dict(f_rmse=target.f_rmse, confidence=target.confidence, fit=fitted, estimated_f_rmse=estimate,
                  share=target.share, explored=_explored_sample(explored))
    if target.explicit_levels:
        return TargetLevels(calibrated=False, f_lo=f_lo, f_hi=f_hi, explicit=True,
                            reason="select.f_lo is set in the config and wins over the target", **common)
    if fitted.n < target.min_frames or not (k > 0 and math.isfinite(k)):
        return TargetLevels(calibrated=False, f_lo=UNCALIBRATED[0], f_hi=UNCALIBRATED[1],
                            reason=f"{fitted.n} calibration frames (< {target.min_frames}): uncalibrated, every "
                            "explored frame is a candidate (labels to calibrate on)", **common)
    how = f"k {k:.3g}: force RMSE = k max_devi_f in RMS over {fitted.n} labeled frames of iterations {recent}"
    lo = target.f_rmse / k
    level = _share_level(explored, target.share)
    if math.isfinite(estimate) and estimate > 0 and math.isfinite(level):
        lo *= level / (estimate / k)
        how = (f"explored force RMSE estimated {estimate:.3g} eV/Å against the target {target.f_rmse:g} ({how}); "
               f"f_lo puts {100 * target.share:g}% of the frames below it exactly when the estimate meets the target")
    else:
        how = f"f_lo = target {target.f_rmse:g} / {how}"
    return TargetLevels(calibrated=True, f_lo=lo, f_hi=max(f_hi, target.hi_factor * lo), reason=how, **common)


def recalibrate(target: TargetConfig, selected: TargetLevels, pairs: Sequence[CalibrationPair],
                iteration: int) -> TargetLevels | None:
    """The levels the iteration's own labels give for the frames it explored: the verdict of the
    decide step. The select step derived ``selected`` from earlier iterations' labels (earlier,
    less accurate committees: k lags one committee behind); here k comes from the pairs of
    ``iteration`` alone, the committee that explored, and f_lo is placed on the same explored
    deviations (``selected.explored``). None when there is nothing to recalibrate: levels the user
    wrote, no explored deviations kept, or fewer than ``min_frames`` pairs of this iteration."""
    if selected.explicit or not selected.explored:
        return None
    own = [p for p in pairs if p.iteration == iteration]
    if len(own) < target.min_frames:
        return None
    explored = np.asarray(selected.explored, dtype=np.float64)
    levels = derive_levels(replace(target, window=1), own, selected.f_lo, selected.f_hi, explored)
    return levels if levels.calibrated else None


def _share_level(explored: np.ndarray | None, share: float) -> float:
    """The deviation below which ``share`` of the frames lie (NaN counts as above every level):
    the ceil(share n)-th smallest; NaN without frames."""
    if explored is None or len(explored) == 0:
        return math.nan
    d = np.sort(_nan_above(explored))
    return float(d[max(math.ceil(share * len(d) - 1e-9), 1) - 1])


@dataclass(frozen=True)
class CalibrationRecord:
    """``calibration.json``: every iteration's pairs so far (the evaluate step appends its own)."""

    pairs: tuple[CalibrationPair, ...] = ()

    def with_iteration(self, iteration: int, new: Sequence[CalibrationPair]) -> "CalibrationRecord":
        """This record with ``iteration``'s pairs replaced by ``new`` (a rerun never duplicates)."""
        return CalibrationRecord((*(p for p in self.pairs if p.iteration != iteration), *new))

    def iteration(self, iteration: int) -> list[CalibrationPair]:
        return [p for p in self.pairs if p.iteration == iteration]

    def write(self, folder: Path, confidence: float = 0.9) -> Path:
        fits = {str(i): asdict(fit(self.iteration(i), confidence)) for i in sorted({p.iteration for p in self.pairs})}
        data = {"units": "eV/Å", "fits": fits, "pairs": [asdict(p) for p in self.pairs]}
        path = Path(folder) / CALIBRATION_JSON
        atomic_write_text(path, json.dumps(_nan_to_none(data), indent=1))
        return path

    @classmethod
    def read(cls, path: Path | None) -> "CalibrationRecord":
        """The record in ``path`` (a folder holding calibration.json, or the file); empty when absent."""
        if path is None:
            return cls()
        path = Path(path)
        path = path / CALIBRATION_JSON if path.is_dir() else path
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        try:
            return cls(tuple(CalibrationPair(**_none_to_nan(p)) for p in data.get("pairs", [])))
        except (AttributeError, TypeError) as err:
            raise ValueError(f"not a calibration.json ({err})") from None


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def _none_to_nan(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (math.nan if v is None else v) for k, v in data.items()}
