"""Training several committee members as one stack (model/stack.py) in one process.

Small systems train slowly per step because a step is thousands of small tensor operations
(bench/bench_stack.py). A stack runs the members' operations together: one forward and backward
pass of the stacked model per step, each member's loss on its own copy of the frames, one Adam
over the stacked weights (Adam is elementwise, so member k's update is the update it would get
alone; gradient clipping is applied per member).

What differs from separate training: the members see the same frames in the same order (the
data order of the first member of the stack); initial weights, statistics and init models stay
each member's own. Everything else is each member's: its directory (``member_dir``) holds an
ordinary training run (checkpoint.pt with its own optimiser state, lcurve.csv, model.pt,
train_summary.json), its validation errors, best model and early stop. A member whose early stop
triggers keeps the model of that moment (or its best one); the stack trains on until the last
member stops. A killed stack restarts from the members' checkpoints (exactly, as one run does).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import ExitStack
from pathlib import Path

import torch

from dpa3_al.common.errors import UserError
from dpa3_al.model.energy import DPA3Model
from dpa3_al.model.graph import build_graph
from dpa3_al.model.stack import StackedCommittee
from dpa3_al.model.train import io as train_io
from dpa3_al.model.train.batching import FrameGraphs, FrameSampler, TrainingData
from dpa3_al.model.train.config import TrainConfig
from dpa3_al.model.train.loop import (MAX_CACHED_TRIPLES, Progress, load_optimizer_state, make_optimizer,
                                      validation_batches)
from dpa3_al.model.train.trainer import (DISP_CHECKS, SAVE_CHECKS, TrainingDiverged, TrainResult, Trainer, _Loop,
                                         _State, largest_batch, restore_state, validation_errors)
from dpa3_al.model.kernels.runtime import tune_malloc

log = logging.getLogger(__name__)


def train_stack(cfgs: list[TrainConfig], workdirs: list[Path], members: list[int]) -> list[TrainResult]:
    """Train members ``members`` (configs ``cfgs``, which may differ in their start model only) as one
    stack, member k in ``workdirs[k]``; finished members are not trained again, interrupted ones
    continue from their checkpoints. Returns one TrainResult per member."""
    trainers = [Trainer(c, Path(w), member=m, restart=(Path(w) / "checkpoint.pt").is_file())
                for c, w, m in zip(cfgs, workdirs, members)]
    results: dict[int, TrainResult] = {}
    for k, t in enumerate(trainers):
        done = _finished(t)
        if done is not None:
            results[k] = done
    todo = [k for k in range(len(trainers)) if k not in results]
    if len(todo) > 1 and trainers[todo[0]].cfg.training.stack == 0 and not _small(trainers[todo[0]], len(todo)):
        for k in todo:                     # auto: large frames gain little from a stack; one by one
            results[k] = trainers[k].run()
        todo = []
    if todo:
        if len({trainers[k].restart for k in todo}) > 1:
            raise UserError(f"members {[members[k] for k in todo]}: some have a checkpoint and some not; a stack "
                            f"trains them together: remove the partial member directories or train them separately")
        for k, res in zip(todo, _StackRun([trainers[k] for k in todo]).run()):
            results[k] = res
    return [results[k] for k in range(len(trainers))]


#: auto stacks (training.stack 0) only for batches up to this many angle triples per member: above it
#: the operations are large already (little to share) and a stack's memory grows with its members
AUTO_STACK_MAX_TRIPLES = 20_000


def _small(t: Trainer, members: int) -> bool:
    """Whether the largest training batch is small enough for an automatic stack of ``members``."""
    train_sys, _ = t._load_data()
    data = TrainingData(train_sys, t._type_map(train_sys), t.cfg.data.batch_size, t.cfg.data.sys_probs)
    _, batch = largest_batch(data)
    triples = build_graph(batch, t.cfg.model.resolve(data.type_map).descriptor).n_triples
    if triples > AUTO_STACK_MAX_TRIPLES:
        log.info("members trained one by one: the largest batch has %d angle triples (> %d for an automatic stack "
                 "of %d; set training.stack to force one)", triples, AUTO_STACK_MAX_TRIPLES, members)
        return False
    return True


def _finished(t: Trainer) -> TrainResult | None:
    if t.paths["summary"].is_file() and t.paths["model"].is_file():
        summary = json.loads(t.paths["summary"].read_text())
        if summary.get("finished"):
            return TrainResult(t.paths["model"], summary, t.workdir)
    return None


class _StackRun:
    """Set up the members (as their Trainers would) and run the shared step loop."""

    def __init__(self, trainers: list[Trainer]):
        self.trainers = trainers

    def run(self) -> list[TrainResult]:
        tune_malloc()
        lead = self.trainers[0]
        if lead.cfg.training.threads > 0:
            torch.set_num_threads(lead.cfg.training.threads)
        with ExitStack() as files:
            for t in self.trainers:
                t.workdir.mkdir(parents=True, exist_ok=True)
                files.enter_context(train_io.FileLog(t.paths["log"]))
            return self._run()

    def _run(self) -> list[TrainResult]:
        lead = self.trainers[0]
        train_sys, val_sys = lead._load_data()
        type_map = lead._type_map(train_sys)
        data = TrainingData(train_sys, type_map, lead.cfg.data.batch_size, lead.cfg.data.sys_probs)
        val = TrainingData(val_sys, type_map, lead.cfg.data.batch_size) if val_sys else None
        steps, start_lr = lead._schedule()
        for t in self.trainers[1:]:
            if t._schedule() != (steps, start_lr):
                raise UserError(f"member {t.member}: its schedule {t._schedule()} differs from member {lead.member}'s "
                                f"{(steps, start_lr)}; a stack trains its members in lock step")
        log.info("training members %s as one stack: %d frames, validation %d, %d steps (data order of member %d)",
                 [t.member for t in self.trainers], data.n_frames, val.n_frames if val else 0, steps, lead.member)
        starts = []
        for t in self.trainers:
            torch.manual_seed(t.seed)        # as the member's own run would
            if t.restart:
                model, info, ts = t._load_checkpoint(type_map)
            else:
                (model, info), ts = t._init_model(data), None
            starts.append((model, info, ts))
        if lead.cfg.model.memory != "default":
            log.info("a stack trains in memory mode 'default' (model.memory %r is for one large model)",
                     lead.cfg.model.memory)
        torch.manual_seed(lead.seed)
        stack = StackedCommittee([m for m, _, _ in starts])
        stack.train()
        if lead.cfg.finetune.freeze_descriptor:
            stack.inner.descriptor.requires_grad_(False)
        params = [p for p in stack.parameters() if p.requires_grad]
        opt = make_optimizer(params, lead.cfg.optimizer, start_lr)
        sampler = FrameSampler(data, lead.seed)
        loop = _StackLoop(stack, opt, params, data, sampler)
        val_batches = validation_batches(val, lead.cfg.data.max_validation_frames, stack.config.descriptor) if val else []
        for k, (t, (_, info, ts)) in enumerate(zip(self.trainers, starts)):
            state = _State(total_steps=steps, rows=[])
            if ts is not None:
                restore_state(ts, state)
            loop.members.append(_MemberLoop(loop, k, t, data, val, start_lr, info, state, val_batches))
        stored = [ts for _, _, ts in starts]
        if stored[0] is not None:
            loop.restore(stored)
        return loop.run()


class _StackLoop:
    """The shared steps: one stacked forward/backward per step for every member."""

    def __init__(self, stack: StackedCommittee, opt, params, data: TrainingData, sampler: FrameSampler):
        self.stack, self.opt, self.params, self.data, self.sampler = stack, opt, params, data, sampler
        self.graphs = FrameGraphs(data, stack.build_graph, MAX_CACHED_TRIPLES)   # each training frame's, once
        self.members: list[_MemberLoop] = []
        self._val_cache: tuple[int, list] | None = None

    @property
    def lead(self) -> "_MemberLoop":
        return self.members[0]

    def restore(self, stored: list[dict]) -> None:
        """Continue from the members' checkpoints: their optimiser states stacked, the lead's sampler and RNG
        (each member's own state was restored with it)."""
        states = [ts["optimizer"] for ts in stored]
        merged = {"param_groups": states[0]["param_groups"], "state": {}}
        for idx in states[0]["state"]:
            merged["state"][idx] = {key: (torch.stack([s["state"][idx][key] for s in states])
                                          if states[0]["state"][idx][key].dim() > 0 else states[0]["state"][idx][key])
                                    for key in states[0]["state"][idx]}
        load_optimizer_state(self.opt, merged)
        self.sampler.load_state_dict(stored[0]["sampler"])
        torch.set_rng_state(stored[0]["torch_rng"])

    def member_optimizer_state(self, k: int) -> dict:
        """Member k's slice of the stacked Adam state, as its own optimiser's state_dict."""
        full = self.opt.state_dict()
        return {"param_groups": full["param_groups"],
                "state": {idx: {key: (v[k].clone() if v.dim() > 0 else v.clone()) for key, v in s.items()}
                          for idx, s in full["state"].items()}}

    def active(self) -> list["_MemberLoop"]:
        return [m for m in self.members if not m.frozen]

    def run(self) -> list[TrainResult]:
        lead, cfg = self.lead, self.lead.t.cfg
        step, elapsed0, cpu0 = lead.state.step, lead.state.elapsed, lead.state.cpu
        for m in self.members:
            if step == 0 and not m.state.rows:
                m._record(0, math.nan)
        total = max(m.state.total_steps for m in self.members)
        progress = Progress(total, step, cfg.training.progress,
                            desc=f"train stack {[m.t.member for m in self.members]}")
        t0, c0 = time.perf_counter() - elapsed0, time.process_time() - cpu0
        with train_io.StopFlag() as flag, progress:
            while self.active():
                w0, p0 = time.perf_counter(), time.process_time()
                losses = self._step(step)
                timing = (time.perf_counter() - w0, time.process_time() - p0)
                step += 1
                elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
                active = self.active()
                for m in active:
                    m.step_times.append(timing)
                    m.state.step, m.state.elapsed, m.state.cpu = step, elapsed, cpu
                self._budget(active)
                for m in active:
                    if step % m._freq(cfg.training.disp_freq, DISP_CHECKS) == 0 or step == m.state.total_steps:
                        m._record(step, losses[m.k])
                    if m.stop_reason is not None or step >= m.state.total_steps:
                        m.freeze()
                progress.update(step, lead.window.rmse(), lead.state.rows[-1] if lead.state.rows else None,
                                max(m.state.total_steps for m in self.members))
                if flag.signal_name is not None:
                    self._save_checkpoints()
                    log.warning("%s at step %d: checkpoints saved in the members' directories; continue with "
                                "--restart", flag.signal_name, step)
                    raise KeyboardInterrupt
                if step % lead._freq(cfg.training.save_freq, SAVE_CHECKS) == 0:
                    self._save_checkpoints()
        return [m.result for m in self.members]

    def _budget(self, active: list["_MemberLoop"]) -> None:
        """The time budget is the stack's: judged once (by the first active member), applied to all."""
        first = active[0]
        first._budget()
        for m in active[1:]:
            m.state.total_steps = first.state.total_steps
            if first.stop_reason is not None:
                m.stop_reason = first.stop_reason

    def _save_checkpoints(self) -> None:
        for m in self.active():
            m._save_checkpoint()

    def _step(self, step: int) -> list[float]:
        picks = self.sampler.next_picks()
        batch, labels = self.data.batch(picks)
        lr = self.active()[0].schedule(step)          # every member has the same schedule
        for group in self.opt.param_groups:
            group["lr"] = lr
        outs = self.stack(batch, self.graphs.graph(picks), create_graph=True, forces=True, virial=self.lead.virial)
        losses = [m.loss(out, labels, lr) for m, out in zip(self.members, outs)]
        total = torch.stack(losses).sum()
        if not torch.isfinite(total.detach()):
            bad = [m.t.member for m, v in zip(self.members, losses) if not torch.isfinite(v.detach())]
            raise TrainingDiverged(f"the loss of member(s) {bad} became non-finite at step {step} (learning rate "
                                   f"{lr:.3g}); lower learning_rate.start_lr or check the data. The last checkpoints "
                                   f"are kept.")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        max_norm = self.lead.t.cfg.optimizer.gradient_max_norm
        if max_norm > 0:
            clip_per_member(self.params, max_norm, self.stack.n_members)
        self.opt.step()
        values = []
        for m, out, value in zip(self.members, outs, losses):
            m.window.add(out, labels)
            values.append(float(value.detach()))
            m.window_loss.append(values[-1])
        return values

    def validation(self, step: int) -> list[tuple[dict[str, float], float]]:
        """Every member's (validation RMSEs, loss) at ``step`` (one stacked pass per batch, cached)."""
        if self._val_cache is not None and self._val_cache[0] == step:
            return self._val_cache[1]
        batches = self.lead.val_batches
        outs = [self.stack(batch, graph, forces=True, virial=self.lead.virial) for batch, _, graph in batches]
        result = [validation_errors(((out[k], labels) for out, (_, labels, _) in zip(outs, batches)), m.loss)
                  for k, m in enumerate(self.members)]
        self._val_cache = (step, result)
        return result


def clip_per_member(params: list[torch.Tensor], max_norm: float, n_members: int) -> None:
    """clip_grad_norm_ for each member of a stack: member k's gradients (slices [k]) scaled to an
    L2 norm of at most ``max_norm`` (torch's rule, eps 1e-6), independently of the others."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    sq = torch.stack([g.reshape(n_members, -1).pow(2).sum(1) for g in grads]).sum(0)       # (M,)
    factor = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(factor.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))


class _MemberLoop(_Loop):
    """One member's bookkeeping in a stack: its rows, windows, best model, checkpoint and summary."""

    def __init__(self, stack_loop: _StackLoop, k: int, trainer: Trainer, data: TrainingData,
                 val: TrainingData | None, start_lr: float, info, state: _State, val_batches: list):
        self.stack_loop, self.k, self.frozen, self._snapshot = stack_loop, k, False, None
        self.log_prefix = f"member {trainer.member}: "      # every member's train.log holds the whole stack's lines
        self.result: TrainResult | None = None
        super().__init__(trainer, stack_loop.stack.inner, stack_loop.opt, stack_loop.params, data, val, stack_loop.sampler,
                         state, start_lr, info, val_batches)       # one set of batches and graphs for the stack

    @property
    def stack_members(self) -> list[int]:
        return [m.t.member for m in self.stack_loop.members]

    @property
    def model(self) -> DPA3Model:
        """This member as an ordinary model: its weights now, or when it stopped."""
        if self._snapshot is not None:
            return self._snapshot
        return self.stack_loop.stack.member(self.k)

    @model.setter
    def model(self, value) -> None:     # _Loop.__init__ assigns it; the stack owns the weights
        pass

    def freeze(self) -> None:
        """This member is done (early stop, time budget or its last step): keep its model of now and
        write its final files; the stack may train on for the others."""
        if self.frozen:
            return
        self._snapshot = self.stack_loop.stack.member(self.k)
        self.frozen = True
        if not self.state.rows or self.state.rows[-1].step != self.state.step:
            self._record(self.state.step, math.nan)
        self._save_checkpoint()
        self.result = self._finish()

    def _validate(self) -> tuple[dict[str, float], float]:
        if not self.val_batches:
            return super()._validate()
        return self.stack_loop.validation(self.state.step)[self.k]

    def _train_state(self) -> dict:
        state = super()._train_state()
        state["optimizer"] = self.stack_loop.member_optimizer_state(self.k)
        state["stack"] = self.stack_members
        return state
