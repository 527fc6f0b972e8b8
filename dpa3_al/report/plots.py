"""The report's figures: one concept per figure, as PNG bytes.

Matplotlib without pyplot (a bare ``Figure`` on the Agg canvas: no global state, no display),
small figures with labelled axes and units. Each figure function returns the PNG bytes, or None
when there is nothing to draw (the report then says what is missing). PNG metadata carries no
software version or date, so the same data gives the same bytes.

Units: force deviations and force RMSE eV/Å; energy and virial deviations and RMSE eV/atom.
"""

from __future__ import annotations

import io
import math
from typing import Mapping, Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .data import IterationData
from .lcurve import QUANTITY_LABELS

SIZE = (5.6, 3.3)          # inches; 100 dpi -> 560 x 330 px
DPI = 100
CLASS_COLORS = {"accurate": "#4c9a2a", "candidate": "#e0a800", "failed": "#c0392b"}
ACTION_MARKERS = {"continue": "o", "next_stage": "^", "done": "*", "stop": "X"}

__all__ = ["deviation_histogram", "learning_curves", "class_ratios", "count_bars", "stacked_counts",
           "convergence", "overview_figures", "iteration_figures", "Figures"]


# ----------------------------------------------------------------------------- figures
def _figure(ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(SIZE[0] if ncols == 1 else 3.4 * ncols, SIZE[1]), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def deviation_histogram(values: np.ndarray, levels: Sequence[tuple[str, float | None]], xlabel: str,
                        title: str) -> bytes | None:
    """Histogram of one deviation over all recorded frames, trust levels as vertical lines.

    Args:
        values: one deviation per frame (NaN = no value; counted in the legend, not drawn).
        levels: (name, value) pairs, e.g. ("f_lo", 0.05); a level far beyond the data is named
            in the legend as off scale instead of stretching the axis.
        xlabel: axis label with the unit, e.g. ``max_devi_f (eV/Å)``.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    top = float(finite.max())
    shown = [(n, v) for n, v in levels if v is not None and math.isfinite(v) and v <= max(3.0 * top, 1e-12)]
    hidden = [(n, v) for n, v in levels if v is not None and (n, v) not in shown]
    upper = max([top, *(v for _, v in shown)]) * 1.05 or 1.0
    positive = finite[finite > 0]
    log_x = positive.size > 0 and upper / positive.min() > 100.0
    fig, (ax,) = _figure()
    if log_x:
        low = positive.min() / 1.5
        bins = np.geomspace(low, upper, 41)
        ax.hist(np.clip(finite, low, None), bins=bins, color="#5b8ccc", edgecolor="white", linewidth=0.4)
        ax.set_xscale("log")
    else:
        ax.hist(finite, bins=np.linspace(0.0, upper, 41), color="#5b8ccc", edgecolor="white", linewidth=0.4)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    styles = iter([("#4c9a2a", "--"), ("#c0392b", "--"), ("#7d3c98", ":"), ("#555555", ":")])
    for name, value in shown:
        color, style = next(styles, ("#555555", ":"))
        ax.axvline(value, color=color, linestyle=style, linewidth=1.4, label=f"{name} = {value:.4g}")
    for name, value in hidden:
        ax.plot([], [], " ", label=f"{name} = {value:.4g} (off scale)")
    n_nan = int(values.size - finite.size)
    ax.plot([], [], " ", label=f"{values.size} frames" + (f", {n_nan} NaN (failed)" if n_nan else ""))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("frames")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return _png(fig)


def learning_curves(curves: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]], title: str) -> bytes | None:
    """RMSE against training step of every committee member: one panel per quantity (e, f, v),
    one colour per member, train solid, validation dashed (log scales where the data allow).

    Args:
        curves: member name -> (steps, {"f/train": rmse, "f/validation": rmse, ...}).
    """
    quantities = [q for q in QUANTITY_LABELS
                  if any(np.isfinite(v).any() for _, s in curves.values() for k, v in s.items()
                         if k.startswith(q + "/"))]
    if not quantities:
        return None
    fig, axes = _figure(len(quantities))
    colors = [f"C{i % 10}" for i in range(len(curves))]
    for ax, q in zip(axes, quantities):
        for color, (member, (steps, series)) in zip(colors, curves.items()):
            for split, style in (("train", "-"), ("validation", "--")):
                y = series.get(f"{q}/{split}")
                ok = np.isfinite(y) if y is not None else None
                if ok is None or not ok.any():
                    continue
                ax.plot(steps[ok], y[ok], style, color=color, linewidth=1.1, label=f"{member} {split}")
        positive = all((v[np.isfinite(v)] > 0).all() for _, s in curves.values() for k, v in s.items()
                       if k.startswith(q + "/"))
        if positive:
            ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel(QUANTITY_LABELS[q])
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=6, frameon=False)
    fig.suptitle(title + " (solid: train, dashed: validation)", fontsize=9)
    return _png(fig)


def _xticks(ax, labels: Sequence[str], counts: bool = True) -> None:
    """One tick per iteration; counts on the y axis are whole numbers."""
    if counts:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)


def class_ratios(labels: Sequence[str], ratios: Mapping[str, Sequence[float]]) -> bytes | None:
    """Stacked bars of the accurate/candidate/failed shares of the recorded frames per iteration.

    Args:
        labels: one x label per iteration, e.g. ``"0\\ns0"`` (iteration, stage).
        ratios: class name -> one share per iteration (NaN where the iteration has no selection).
    """
    if not labels or all(math.isnan(v) for r in ratios.values() for v in r):
        return None
    fig, (ax,) = _figure()
    bottom = np.zeros(len(labels))
    for name in ("accurate", "candidate", "failed"):
        values = np.nan_to_num(np.asarray(ratios.get(name, [math.nan] * len(labels)), dtype=np.float64))
        ax.bar(range(len(labels)), values, bottom=bottom, color=CLASS_COLORS[name], label=name, width=0.7)
        bottom += values
    _xticks(ax, labels, counts=False)
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("iteration (stage)")
    ax.set_ylabel("share of recorded frames")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def count_bars(labels: Sequence[str], series: Mapping[str, Sequence[float]], ylabel: str) -> bytes | None:
    """Grouped bars, one group per iteration (e.g. selected / labeled / failed labels)."""
    if not labels or not any(np.nan_to_num(np.asarray(v, dtype=np.float64)).any() for v in series.values()):
        return None
    fig, (ax,) = _figure()
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        x = np.arange(len(labels)) + (i - (len(series) - 1) / 2) * width
        ax.bar(x, np.nan_to_num(np.asarray(values, dtype=np.float64)), width=width, label=name)
    _xticks(ax, labels)
    ax.set_xlabel("iteration (stage)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, frameon=False)
    return _png(fig)


def stacked_counts(labels: Sequence[str], parts: Mapping[str, Sequence[float]], ylabel: str) -> bytes | None:
    """Stacked bars per iteration (dataset frames per system, failures per reason)."""
    if not labels or not parts or not any(np.nan_to_num(np.asarray(v, dtype=np.float64)).any()
                                          for v in parts.values()):
        return None
    fig, (ax,) = _figure()
    bottom = np.zeros(len(labels))
    for i, (name, values) in enumerate(parts.items()):
        values = np.nan_to_num(np.asarray(values, dtype=np.float64))
        ax.bar(range(len(labels)), values, bottom=bottom, label=name, width=0.7, color=f"C{i % 10}")
        bottom += values
    _xticks(ax, labels)
    ax.set_xlabel("iteration (stage)")
    ax.set_ylabel(ylabel)
    if len(parts) <= 12:
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def convergence(iterations: Sequence[int], stages: Sequence[int | None], accurate: Sequence[float],
                actions: Sequence[str | None], thresholds: Mapping[int, float]) -> bytes | None:
    """Accurate ratio per iteration, one colour per stage, the decision as the marker
    (o continue, ^ next stage, * done, X stop, . none yet) and each stage's conv_accuracy dotted."""
    if not iterations or all(math.isnan(a) for a in accurate):
        return None
    fig, (ax,) = _figure()
    for stage in sorted({s for s in stages if s is not None}) or [None]:
        idx = [i for i, s in enumerate(stages) if s == stage]
        color = "C0" if stage is None else f"C{stage % 10}"
        ax.plot([iterations[i] for i in idx], [accurate[i] for i in idx], "-", color=color, linewidth=1,
                label="no stage" if stage is None else f"stage {stage}")
        for i in idx:
            ax.plot(iterations[i], accurate[i], ACTION_MARKERS.get(actions[i] or "", "."), color=color, ms=8)
        if stage in thresholds:
            x = [iterations[i] for i in idx]
            ax.hlines(thresholds[stage], min(x) - 0.3, max(x) + 0.3, colors=color, linestyles=":", linewidth=1,
                      label=f"conv_accuracy {thresholds[stage]:g}")
    for action, marker in ACTION_MARKERS.items():
        if action in actions:
            ax.plot([], [], marker, color="0.4", label=action.replace("_", " "))
    ax.set_ylim(-0.03, 1.03)
    ax.set_xticks(list(iterations))
    ax.set_xlabel("iteration")
    ax.set_ylabel("accurate ratio")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.3)
    return _png(fig)


# ----------------------------------------------------------------------------- the report's figures
Figures = dict[str, tuple[str, Union[bytes, None]]]     # file name -> (alt text, PNG or None)


def _xlabel(it: IterationData) -> str:
    return f"{it.index}" + ("" if it.stage is None else f"\ns{it.stage}")


def iteration_figures(it: IterationData) -> Figures:
    """Learning curves and deviation histograms (force; virial when recorded) of one iteration."""
    lv = it.selection.levels if it.selection is not None else None
    level = lambda name: None if lv is None else getattr(lv, name)  # noqa: E731
    curves = {m.name: (m.curve.steps, m.curve.series) for m in it.members if m.curve and m.curve.steps.size}
    tag = " (adaptive)" if lv is not None and lv.adaptive else ""
    figs: Figures = {
        f"{it.name}-lcurve.png": (f"learning curves of iteration {it.index}",
                                  learning_curves(curves, f"iteration {it.index}: learning curves")),
        f"{it.name}-devi-f.png": (f"max_devi_f of every recorded frame, iteration {it.index}", deviation_histogram(
            it.devi_f, [("f_lo" + tag, level("f_lo")), ("f_hi", level("f_hi"))], "max_devi_f (eV/Å)",
            f"iteration {it.index}: force deviation"))}
    if np.isfinite(it.devi_v).any():
        figs[f"{it.name}-devi-v.png"] = (f"max_devi_v of every recorded frame, iteration {it.index}",
                                         deviation_histogram(it.devi_v, [("v_lo" + tag, level("v_lo")),
                                                                         ("v_hi", level("v_hi"))],
                                                             "max_devi_v (eV/atom)",
                                                             f"iteration {it.index}: virial deviation"))
    return figs


def _failure_series(its: Sequence[IterationData]) -> dict[str, list[float]]:
    """Label failures by reason and MD tasks stopped early by reason, per iteration."""
    out: dict[str, list[float]] = {}
    for reason in sorted({r for it in its if it.label for r in it.label.failed}):
        out[f"label: {reason}"] = [float(it.label.failed.get(reason, 0)) if it.label else 0.0 for it in its]
    for reason in sorted({r for it in its for r in it.stopped_early()}):
        out[f"MD stopped: {reason}"] = [float(it.stopped_early().get(reason, 0)) for it in its]
    return out


def overview_figures(its: Sequence[IterationData], conv_accuracy: Mapping[int, float]) -> Figures:
    """The across-iteration figures: class shares, convergence, counts, dataset growth, failures."""
    labels = [_xlabel(it) for it in its]
    systems = sorted({s for it in its if it.dataset for s in it.dataset.systems})
    nan = math.nan
    return {
        "overview-ratios.png": ("accurate / candidate / failed share of the recorded frames per iteration",
                                class_ratios(labels, {c: [it.ratio(c) for it in its] for c in CLASS_COLORS})),
        "overview-convergence.png": ("accurate ratio and decision per iteration, per stage", convergence(
            [it.index for it in its], [it.stage for it in its], [it.ratio("accurate") for it in its],
            [it.decision.action if it.decision else None for it in its], conv_accuracy)),
        "overview-counts.png": ("selected, labeled and failed labels per iteration", count_bars(labels, {
            "selected": [it.selection.n_selected if it.selection else nan for it in its],
            "labeled": [it.label.ok if it.label else nan for it in its],
            "label failed": [it.label.n_failed if it.label else nan for it in its]}, "frames")),
        "overview-dataset.png": ("dataset frames per system after each iteration", stacked_counts(
            labels, {s: [it.dataset.systems.get(s, 0) if it.dataset else nan for it in its] for s in systems},
            "frames in the dataset")),
        "overview-failures.png": ("failures by reason per iteration (label failures, MD tasks stopped early)",
                                  stacked_counts(labels, _failure_series(its), "frames or MD tasks")),
    }
