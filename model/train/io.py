"""Files a training run writes next to its model, all atomically (temporary file + ``os.replace``).

    checkpoint.pt        latest weights + train_state (optimizer, step, RNG and sampler states)
    best.pt              weights with the lowest validation loss so far
    model.pt             the trained model (best or last), with training provenance in its metadata
    lcurve.csv           step, lr, train and validation RMSE of E/atom (eV), F (eV/Å), V/atom (eV), losses
    lcurve.png           the learning curve
    train_summary.json   steps, time, final errors, converged (bool) and why
    train.log            the log of the run
"""

from __future__ import annotations

import csv
import io
import logging
import math
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from dpa3_al.common.fileio import atomic_write_text as write_text
from dpa3_al.common.fileio import atomic_write_path as atomic_write

LCURVE_COLUMNS = ("step", "lr", "rmse_e_trn", "rmse_f_trn", "rmse_v_trn", "rmse_e_val", "rmse_f_val",
                  "rmse_v_val", "loss_trn", "loss_val", "wall_s")


@dataclass
class Row:
    """One lcurve row (NaN where a quantity is absent)."""

    step: int
    lr: float
    trn: dict[str, float]
    val: dict[str, float]
    loss_trn: float
    loss_val: float
    wall_s: float

    def as_list(self) -> list:
        return [self.step, self.lr, self.trn["e"], self.trn["f"], self.trn["v"], self.val["e"], self.val["f"],
                self.val["v"], self.loss_trn, self.loss_val, self.wall_s]

    @staticmethod
    def from_list(values: list) -> "Row":
        v = [float(x) for x in values]
        return Row(int(v[0]), v[1], {"e": v[2], "f": v[3], "v": v[4]}, {"e": v[5], "f": v[6], "v": v[7]},
                   v[8], v[9], v[10])


def write_lcurve(path: Path, rows: list[Row]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LCURVE_COLUMNS)
    for r in rows:
        w.writerow([r.step, f"{r.lr:.6e}", *(f"{x:.6e}" for x in r.as_list()[2:10]), f"{r.wall_s:.2f}"])
    write_text(path, buf.getvalue())


def read_lcurve(path: Path) -> list[Row]:
    with open(path) as fh:
        reader = csv.reader(fh)
        next(reader, None)
        return [Row.from_list(values) for values in reader if values]


def plot_lcurve(path: Path, rows: list[Row], title: str = "") -> None:
    """Train/validation RMSE of E/atom, F and V/atom against step (log scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"e": "E/atom RMSE (eV)", "f": "F RMSE (eV/Å)", "v": "V/atom RMSE (eV)"}
    keys = [k for k in labels if any(math.isfinite(r.trn[k]) or math.isfinite(r.val[k]) for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4.2 * max(1, len(keys)), 3.4), squeeze=False)
    for ax, k in zip(axes[0], keys):
        for kind, style in (("trn", "-"), ("val", "o-")):
            pts = [(max(r.step, 1), getattr(r, kind)[k]) for r in rows if math.isfinite(getattr(r, kind)[k])]
            if pts:
                ax.plot(*zip(*pts), style, ms=3, label="train" if kind == "trn" else "validation")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(labels[k])
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


@dataclass
class StopFlag:
    """Set by SIGINT/SIGTERM during training: the loop saves a checkpoint at the end of the step and stops."""

    signal_name: str | None = None
    _old: dict = field(default_factory=dict)

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        if self.signal_name is not None:            # second signal: give up at once
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class FileLog:
    """Copy the ``dpa3_al.model`` log of one run into ``path`` (appending across restarts)."""

    def __init__(self, path: Path):
        self.path = path
        self.handler: logging.Handler | None = None

    def __enter__(self) -> "FileLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger = logging.getLogger("dpa3_al.model")
        logger.addHandler(self.handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            self._old_level = logger.level
            logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        logger = logging.getLogger("dpa3_al.model")
        if self.handler is not None:
            logger.removeHandler(self.handler)
            self.handler.close()
        if hasattr(self, "_old_level"):
            logger.setLevel(self._old_level)
