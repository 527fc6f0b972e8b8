"""The training engine: one model (``Trainer``), a committee (``train_committee``).

A run lives in one directory (see model/train_io.py for the files). It starts from scratch
(energy bias by least squares, env statistics when computed), from a pre-trained model
(``finetune``) or from a previous model (``init_model``); trains with the loss, learning-rate
and optimiser of the config; writes a checkpoint every ``save_freq`` steps and on Ctrl-C or
kill (SIGINT/SIGTERM, at the end of the current step); and ends with ``model.pt`` (the model
with the lowest validation loss, or the last one) and ``train_summary.json``, which says
whether the run converged and why.

``restart=True`` continues from ``checkpoint.pt`` exactly: the optimiser state, the step, the
data sampler and every RNG state are restored, so the result equals an uninterrupted run.
"""

from __future__ import annotations

import logging
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dpa3_al.model.train import io as train_io
from dpa3_al.model.train.batching import FrameGraphs, FrameSampler, TrainingData
from dpa3_al.model.checkpoint import load_model, read_checkpoint, save_model
from dpa3_al.model.train.data import DataSystem, data_elements, load_systems, split_validation
from dpa3_al.model.energy import DPA3Model, build_model
from dpa3_al.common.errors import InputError, MemoryEstimateError, UserError
from dpa3_al.common.fileio import atomic_write_json
from dpa3_al.model.train.finetune import InitInfo, finetune_init, init_model_init
from dpa3_al.model.train.loss import EnergyLoss, ErrorSums, Prefactors
from dpa3_al.model.train.lr import ExpDecay
from dpa3_al.model.kernels.runtime import tune_malloc
from dpa3_al.model.train.stats import apply_env_std, change_bias_by_statistic, set_bias_by_statistic, stat_picks
from dpa3_al.model.train.config import TrainConfig
from dpa3_al.model.train.loop import (MAX_CACHED_TRIPLES, Progress, Verdict, judge_convergence, load_optimizer_state,
                                     make_optimizer, optimizer_step, rmse_metric, validation_batches)

log = logging.getLogger(__name__)

CALIBRATION_STEPS = 10
CALIBRATION_SHARE = 0.25     # ... or once this share of the time budget is spent, if sooner (slow steps, loaded cores)
DISP_CHECKS = 40        # lcurve rows (validation checks) per run when disp_freq is 0
SAVE_CHECKS = 10        # checkpoints per run when save_freq is 0


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    model_path: Path
    summary: dict[str, Any]
    workdir: Path


@dataclass
class _State:
    step: int = 0
    total_steps: int = 0
    best_loss: float = math.inf
    best_step: int = -1
    checks_since_best: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    rows: list | None = None
    window: dict | None = None


class Trainer:
    """Train one model in ``workdir`` (member ``member`` of a committee: seed + member)."""

    def __init__(self, cfg: TrainConfig, workdir: Path, *, member: int = 0, restart: bool = False):
        self.cfg, self.workdir, self.member, self.restart = cfg, Path(workdir), member, restart
        self.seed = cfg.training.seed + member
        self.paths = {k: self.workdir / f for k, f in (("ckpt", "checkpoint.pt"), ("best", "best.pt"),
                                                        ("model", "model.pt"), ("lcurve", "lcurve.csv"),
                                                        ("png", "lcurve.png"), ("summary", "train_summary.json"),
                                                        ("log", "train.log"))}

    # ------------------------------------------------------------------ setup

    def _load_data(self) -> tuple[list[DataSystem], list[DataSystem]]:
        cfg = self.cfg.data
        if not cfg.systems:
            raise InputError("no training data: give data.systems (or DATA arguments / --data)")
        systems = load_systems(cfg.systems, cfg.fmt)
        if cfg.validation:
            return systems, load_systems(cfg.validation, cfg.fmt)
        if cfg.validation_fraction > 0:
            train, valid = split_validation(systems, cfg.validation_fraction, self.cfg.training.seed)
            n_val = sum(s.n_frames for s in valid)
            if n_val >= cfg.min_validation_frames:
                return train, valid
            log.info("no validation hold-out: %.0f%% of the %d frames is %d frames, under "
                     "data.min_validation_frames %d; training on every frame and keeping the last model",
                     100 * cfg.validation_fraction, sum(s.n_frames for s in systems), n_val,
                     cfg.min_validation_frames)
        return systems, []

    def _type_map(self, systems: list[DataSystem]) -> list[str]:
        if self.cfg.model.type_map:
            return list(self.cfg.model.type_map)
        elements = data_elements(systems)
        if not elements:
            prior = self.cfg.finetune.model or self.cfg.init_model.model
            if prior is None:
                raise InputError("the data have no type_map.raw and model.type_map is empty: name the elements")
            return list(load_model(prior, head=_head_for_types(self.cfg)).type_map)
        return elements

    def _init_model(self, data: TrainingData) -> tuple[DPA3Model, InitInfo | None]:
        cfg = self.cfg
        picks = stat_picks(data, cfg.data.data_stat_nbatch, self.seed)
        if cfg.finetune.model is not None:
            return finetune_init(cfg.finetune.model, cfg.finetune.head, data.type_map, data, picks, self.seed)
        if cfg.init_model.model is not None:
            return init_model_init(cfg.init_model.model, data.type_map, data, picks, self.seed)
        model = build_model(cfg.model.resolve(data.type_map), seed=self.seed)
        apply_env_std(model, data, picks)
        set_bias_by_statistic(model, data, picks)
        if cfg.data.bias_fit == "residual":
            change_bias_by_statistic(model, data, picks)
        return model, None

    def _schedule(self) -> tuple[int, float]:
        """(steps, start_lr): init-model runs are shorter and start lower."""
        cfg = self.cfg
        steps = cfg.training.numb_steps
        start = cfg.learning_rate.resolved_start(finetune=cfg.finetune.model is not None)
        if cfg.init_model.model is not None:
            steps = max(1, int(round(steps * cfg.init_model.steps_factor)))
            start = max(cfg.learning_rate.stop_lr, start * cfg.init_model.lr_factor)
        return steps, start

    # ------------------------------------------------------------------ run

    def run(self) -> TrainResult:
        """Train (or continue, or return the finished result) and return the model path and summary."""
        tune_malloc()
        if self.cfg.training.threads > 0:
            torch.set_num_threads(self.cfg.training.threads)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.paths["summary"].is_file() and self.paths["model"].is_file():
            summary = json.loads(self.paths["summary"].read_text())
            if summary.get("finished"):
                log.info("%s: already trained (%s); nothing to do", self.workdir, self.paths["model"].name)
                return TrainResult(self.paths["model"], summary, self.workdir)
        if self.paths["ckpt"].is_file() and not self.restart:
            raise UserError(f"{self.workdir} already holds a training checkpoint; continue it with --restart "
                            f"or train in another directory")
        if self.restart and not self.paths["ckpt"].is_file():
            raise UserError(f"{self.paths['ckpt']}: no checkpoint to restart from")
        with train_io.FileLog(self.paths["log"]):
            return self._run()

    def _run(self) -> TrainResult:
        train_sys, val_sys = self._load_data()
        type_map = self._type_map(train_sys)
        data = TrainingData(train_sys, type_map, self.cfg.data.batch_size, self.cfg.data.sys_probs)
        val = TrainingData(val_sys, type_map, self.cfg.data.batch_size) if val_sys else None
        log.info("training data: %d frames in %d systems; validation: %d frames; type map %s", data.n_frames,
                 len(train_sys), val.n_frames if val else 0, type_map)
        steps, start_lr = self._schedule()
        state = _State(total_steps=steps, rows=[])
        torch.manual_seed(self.seed)
        if self.restart:
            model, info, train_state = self._load_checkpoint(type_map)
        else:
            model, info = self._init_model(data)
            train_state = None
        # 'low': every layer is recomputed in each backward pass, the force pass and its derivative
        # included (model/recompute.py): a fraction of the memory for ~1.8x the step time
        model.set_memory(self.cfg.model.memory)
        _check_step_memory(model, data)
        model.train()
        if self.cfg.finetune.freeze_descriptor:
            model.descriptor.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer(params, self.cfg.optimizer, start_lr)
        sampler = FrameSampler(data, self.seed)
        if train_state is not None:
            self._restore(train_state, opt, sampler, state)
        loop = _Loop(self, model, opt, params, data, val, sampler, state, start_lr, info)
        return loop.run()

    def _load_checkpoint(self, type_map: list[str]) -> tuple[DPA3Model, InitInfo | None, dict]:
        path = self.paths["ckpt"]
        model = load_model(path)
        obj = read_checkpoint(path)
        train_state = obj.get("train_state")
        if not train_state:
            raise UserError(f"{path}: holds no training state; cannot restart from it")
        if model.type_map != type_map:
            raise UserError(f"{path}: checkpoint type map {model.type_map} differs from the data's {type_map}; "
                            f"restart with the same data and model.type_map")
        _check_same_config(train_state.get("config", {}), self.cfg, path)
        init = train_state.get("init")
        info = InitInfo(**init) if init else None
        log.info("restarting from %s at step %d", path, train_state["step"])
        return model, info, train_state

    def _restore(self, ts: dict, opt: torch.optim.Optimizer, sampler: FrameSampler, state: _State) -> None:
        load_optimizer_state(opt, ts["optimizer"])
        sampler.load_state_dict(ts["sampler"])
        torch.set_rng_state(ts["torch_rng"])
        restore_state(ts, state)


def restore_state(ts: dict, state: _State) -> None:
    """The loop's own state (step, best model, curve rows, error window) from a checkpoint's train_state."""
    state.step, state.total_steps = int(ts["step"]), int(ts["total_steps"])
    state.best_loss, state.best_step = float(ts["best_loss"]), int(ts["best_step"])
    state.checks_since_best = int(ts["checks_since_best"])
    state.elapsed, state.cpu = float(ts["elapsed"]), float(ts["cpu"])
    state.rows = [train_io.Row.from_list(r) for r in ts["rows"]]
    state.window = ts.get("window")


_RESTART_FREE = {("training", "progress"), ("training", "threads"), ("training", "parallel"),
                 ("training", "numb_models"), ("training", "stack")}


# Batches below these graph sizes need < ~1.5 GB per step (DPA-3.1-3M shape): no estimate.
_CHECK_EDGES, _CHECK_TRIPLES = 20_000, 50_000


def largest_batch(data: TrainingData):
    """(system, its first batch) of the system with the most atoms per batch: a step's worst case."""
    k = int(np.argmax([s.n_atoms * b for s, b in zip(data.systems, data.batch_sizes)]))
    system = data.systems[k]
    batch, _ = data.batch([(k, f) for f in range(min(data.batch_sizes[k], system.n_frames))])
    return system, batch


def _check_step_memory(model: DPA3Model, data: TrainingData) -> None:
    """Estimate the peak memory of a step on the largest batch (logged); refuse to start, naming
    the low-memory mode, when it would not fit (an error now instead of the kernel's OOM killer)."""
    from dpa3_al.model.kernels.memory import available_bytes, check_fits, current_bytes, unit_costs

    system, batch = largest_batch(data)
    graph = model.build_graph(batch)
    if graph.n_edges < _CHECK_EDGES and graph.n_triples < _CHECK_TRIPLES:
        return
    now = current_bytes()
    try:
        peak = check_fits(model, graph, unit_costs(model, training=True), budget=now + available_bytes(), base=now)
    except MemoryEstimateError as err:
        raise MemoryEstimateError(f"training data {system.name}: {err}") from None
    log.info("memory: a step on the largest batch (%s, %d atoms, %d edges, %d angle triples) needs about "
             "%.1f GB in memory mode %r", system.name, graph.n_atoms, graph.n_edges, graph.n_triples, peak / 1e9,
             model.memory)


def _check_same_config(stored: dict, cfg: TrainConfig, path: Path) -> None:
    now = cfg.to_dict()
    diff = [f"{sec}.{key}" for sec, values in now.items() if isinstance(values, dict)
            for key, v in values.items() if (sec, key) not in _RESTART_FREE and stored.get(sec, {}).get(key) != v]
    if stored and diff:
        raise UserError(f"{path}: the run was started with other settings ({', '.join(diff[:6])}); an exact "
                        f"restart needs the same input (or start a new run in another directory)")


def _head_for_types(cfg: TrainConfig) -> str | None:
    head = cfg.finetune.head
    return None if head in (None, "RANDOM") else head


class _Loop:
    """The step loop of one run (state in ``_State``; files through train_io)."""

    log_prefix = ""     # a stack's members say whose line it is (model/train/stacked.py)

    def __init__(self, trainer: Trainer, model: DPA3Model, opt, params, data: TrainingData,
                 val: TrainingData | None, sampler: FrameSampler, state: _State, start_lr: float,
                 info: InitInfo | None, val_batches: list | None = None):
        self.t, self.model, self.opt, self.params = trainer, model, opt, params
        self.data, self.val, self.sampler, self.state, self.info = data, val, sampler, state, info
        cfg = trainer.cfg
        self.pref = Prefactors(cfg.loss.start_pref_e, cfg.loss.limit_pref_e, cfg.loss.start_pref_f,
                               cfg.loss.limit_pref_f, cfg.loss.start_pref_v, cfg.loss.limit_pref_v)
        self.start_lr = start_lr
        self.loss = EnergyLoss(self.pref, start_lr)
        self.virial = self.pref.uses_virial and any(bool(s.has_virial.any()) for s in data.systems)
        if val_batches is None:      # (a stack's members share one set, model/train/stacked.py)
            val_batches = validation_batches(val, cfg.data.max_validation_frames, model.config.descriptor) if val else []
        self.val_batches = val_batches
        self.graphs = FrameGraphs(data, model.build_graph, MAX_CACHED_TRIPLES)   # each training frame's, once
        self.window = ErrorSums()
        self.window_loss: list[float] = []
        if state.window:
            self.window = ErrorSums(dict(state.window["sq"]), dict(state.window["ab"]), dict(state.window["n"]))
            self.window_loss = list(state.window["loss"])
        self.stop_reason: str | None = None
        self.step_times: list[tuple[float, float]] = []      # (wall, cpu) seconds of the steps of this process
        self.val_times: list[float] = []                     # seconds per validation check
        self._calibrated = state.step >= CALIBRATION_STEPS      # a restart keeps the cut made before it

    @property
    def schedule(self) -> ExpDecay:
        lr = self.t.cfg.learning_rate
        return ExpDecay(self.start_lr, min(lr.stop_lr, self.start_lr), self.state.total_steps, lr.decay_steps)

    def _freq(self, value: int, divisor: int) -> int:
        return value if value > 0 else max(1, self.state.total_steps // divisor)

    def run(self) -> TrainResult:
        st, cfg = self.state, self.t.cfg
        if st.step == 0 and not st.rows:
            self._record(0, math.nan)
        progress = Progress(st.total_steps, st.step, cfg.training.progress,
                            desc=f"train {self.t.workdir.name}")
        t0, c0 = time.perf_counter() - st.elapsed, time.process_time() - st.cpu
        with train_io.StopFlag() as flag, progress:
            while st.step < st.total_steps and self.stop_reason is None:
                w0, p0 = time.perf_counter(), time.process_time()
                loss = self._step()
                self.step_times.append((time.perf_counter() - w0, time.process_time() - p0))
                st.step += 1
                st.elapsed, st.cpu = time.perf_counter() - t0, time.process_time() - c0
                progress.update(st.step, self.window.rmse(), st.rows[-1] if st.rows else None, st.total_steps)
                self._budget()
                if st.step % self._freq(cfg.training.disp_freq, DISP_CHECKS) == 0 or st.step == st.total_steps:
                    self._record(st.step, loss)
                if flag.signal_name is not None:
                    self._save_checkpoint()
                    log.warning("%s at step %d: checkpoint saved to %s; continue with --restart",
                                flag.signal_name, st.step, self.t.paths["ckpt"])
                    raise KeyboardInterrupt
                if st.step % self._freq(cfg.training.save_freq, SAVE_CHECKS) == 0:
                    self._save_checkpoint()
        if not st.rows or st.rows[-1].step != st.step:
            self._record(st.step, math.nan)
        self._save_checkpoint()
        return self._finish()

    def _step(self) -> float:
        picks = self.sampler.next_picks()
        batch, labels = self.data.batch(picks)
        lr = self.schedule(self.state.step)
        try:
            out, loss = optimizer_step(self.model, self.opt, self.params, self.loss, batch, labels, lr,
                                       self.t.cfg.optimizer.gradient_max_norm, self.virial, self.graphs.graph(picks))
        except FloatingPointError as exc:
            raise TrainingDiverged(f"{exc} at step {self.state.step} (learning rate {lr:.3g}); lower "
                                   f"learning_rate.start_lr or check the data. The last checkpoint is kept.") from None
        self.window.add(out, labels)
        value = float(loss.detach())
        self.window_loss.append(value)
        return value

    def _budget(self) -> None:
        """Cut the run to the time budget (once, after a few steps) and stop when it is spent."""
        st, budget = self.state, self.t.cfg.training.max_time
        if budget <= 0:
            return
        if not self._calibrated and (st.step >= CALIBRATION_STEPS
                                     or (len(self.step_times) >= 2 and st.elapsed >= CALIBRATION_SHARE * budget)):
            # judged once: after CALIBRATION_STEPS steps, or sooner when they would eat the budget
            self._calibrated = True
            fits = self._steps_that_fit(budget)
            if fits < st.total_steps:
                log.info("time budget %.0f s: %d steps instead of %d fit (schedule scaled to them)", budget, fits,
                         st.total_steps)
                st.total_steps = max(st.step, fits)
        if st.elapsed >= budget:
            self.stop_reason = f"time budget of {budget:.0f} s spent"

    def _steps_that_fit(self, budget: float) -> int:
        """Steps that fit in the rest of ``budget`` (s), counting the validation checks they bring."""
        st, disp = self.state, self.t.cfg.training.disp_freq
        times = self.step_times[1:] or self.step_times           # the first step carries the warm-up
        per_step = float(np.median([w for w, _ in times[-CALIBRATION_STEPS:]]))
        per_check = max(self.val_times) if self.val_times else 0.0
        remaining = 0.95 * (budget - st.elapsed)
        if disp > 0:
            n = remaining / (per_step + per_check / disp)
        else:
            n = (remaining - DISP_CHECKS * per_check) / per_step
        return st.step + max(0, int(n))

    def _record(self, step: int, last_loss: float) -> None:
        """Validation errors + the window's train errors -> lcurve row; best-model keeping; early stop."""
        st, cfg = self.state, self.t.cfg
        t0 = time.perf_counter()
        val_err, val_loss = self._validate()
        self.val_times.append(time.perf_counter() - t0)
        trn = self.window.rmse()
        loss_trn = float(np.mean(self.window_loss)) if self.window_loss else math.nan
        row = train_io.Row(step, self.schedule(step), trn, val_err, loss_trn, val_loss, st.elapsed)
        st.rows.append(row)
        self.window, self.window_loss = ErrorSums(), []
        metric = val_loss if self.val_batches else rmse_metric(trn, self.pref)
        if step > 0 and math.isfinite(metric) and metric < st.best_loss:
            st.best_loss, st.best_step, st.checks_since_best = metric, step, 0
            if cfg.stopping.keep_best and self.val_batches:
                save_model(self.model, self.t.paths["best"], metadata={"training": {"step": step, "partial": True}})
        elif step > 0:
            st.checks_since_best += 1
        pat = cfg.stopping.patience
        if pat and st.checks_since_best >= pat and step >= cfg.stopping.min_steps_fraction * st.total_steps:
            self.stop_reason = f"early stop: no improvement of the validation loss in {pat} checks"
        train_io.write_lcurve(self.t.paths["lcurve"], st.rows)
        log.info("%sstep %d lr %.3g | train rmse e %.3g f %.3g v %.3g | val rmse e %.3g f %.3g v %.3g", self.log_prefix,
                 step, row.lr,
                 trn["e"], trn["f"], trn["v"], val_err["e"], val_err["f"], val_err["v"])

    def _validate(self) -> tuple[dict[str, float], float]:
        if not self.val_batches:
            return {"e": math.nan, "f": math.nan, "v": math.nan}, math.nan
        model = self.model
        return validation_errors(((model(batch, graph, forces=True, virial=self.virial), labels)
                                  for batch, labels, graph in self.val_batches), self.loss)

    def _force_label_rms(self) -> float:
        """RMS of the force labels of the validation subset (of the training data without validation)."""
        if self.val_batches:
            forces = [labels.forces for _, labels, _ in self.val_batches]
        else:
            forces = [torch.from_numpy(s.forces.reshape(-1, 3)) for s in self.data.systems]
        f = torch.cat(forces)
        return float(f.pow(2).mean().sqrt()) if f.numel() else math.nan

    def _train_state(self) -> dict:
        st = self.state
        return {"step": st.step, "total_steps": st.total_steps, "optimizer": self.opt.state_dict(),
                "sampler": self.sampler.state_dict(), "torch_rng": torch.get_rng_state(),
                "best_loss": st.best_loss, "best_step": st.best_step, "checks_since_best": st.checks_since_best,
                "elapsed": st.elapsed, "cpu": st.cpu, "rows": [r.as_list() for r in st.rows],
                "config": self.t.cfg.to_dict(), "init": self.info.as_dict() if self.info else None,
                "window": {"sq": self.window.sq, "ab": self.window.ab, "n": self.window.n, "loss": self.window_loss}}

    def _save_checkpoint(self) -> None:
        save_model(self.model, self.t.paths["ckpt"], metadata={"training": {"step": self.state.step, "partial": True}},
                   train_state=_plain(self._train_state()))

    def _finish(self) -> TrainResult:
        from dpa3_al.model.train.summary import build_summary

        st, paths, cfg = self.state, self.t.paths, self.t.cfg
        # best-of-run only on validation data: the training window's error is batch noise
        use_best = cfg.stopping.keep_best and bool(self.val_batches) and paths["best"].is_file() and st.best_step > 0
        out_row = next((r for r in st.rows if r.step == (st.best_step if use_best else st.step)), st.rows[-1])
        final_f = out_row.val["f"] if self.val_batches else st.rows[-1].trn["f"]
        verdict: Verdict = judge_convergence(st.rows, cfg.stopping, self.stop_reason, bool(self.val_batches),
                                             self.pref, self._force_label_rms(), final_f)
        final = load_model(paths["best"]) if use_best else self.model
        summary = build_summary(self, verdict, use_best)
        save_model(final, paths["model"], metadata={"training": summary})
        atomic_write_json(paths["summary"], summary)
        try:
            train_io.plot_lcurve(paths["png"], st.rows, title=f"{self.t.workdir}")
        except Exception as err:  # noqa: BLE001 - a plot must never lose a trained model
            log.warning("learning-curve plot failed: %s", err)
        log.info("finished: %d steps in %.1f s; %s (%s); model %s", st.step, st.elapsed,
                 "converged" if verdict.converged else "NOT converged", verdict.reason, paths["model"])
        return TrainResult(paths["model"], summary, self.t.workdir)


def validation_errors(pairs, loss: EnergyLoss) -> tuple[dict[str, float], float]:
    """(RMSEs, loss per frame at the limit prefactors) over (model output, labels) pairs of validation batches."""
    sums, losses, n = ErrorSums(), [], 0
    for out, labels in pairs:
        sums.add(out, labels)
        losses.append(float(loss(out, labels, 0.0)) * labels.energy.shape[0])
        n += labels.energy.shape[0]
    return sums.rmse(), sum(losses) / n


def _plain(obj: Any) -> Any:
    """Python floats/ints for numpy scalars (checkpoints load with weights_only=True)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def train(cfg: TrainConfig, workdir: Path, *, member: int = 0, restart: bool = False) -> TrainResult:
    """Train one model in ``workdir`` (see :class:`Trainer`)."""
    return Trainer(cfg, workdir, member=member, restart=restart).run()
