"""Learning-rate and loss-prefactor schedules (shared/design/dpa3-model.md 5.4 and 5.5).

Exponential decay, stepped every ``decay_steps``::

    lr(t) = max(stop_lr, start_lr * r^floor(t / s)),   r = (stop_lr / start_lr)^(s / T)

with T the number of training steps and s = ``decay_steps``. As in deepmd-kit, a decay
interval that is not shorter than T is replaced by min(100, T // 100 + 1). ``decay_steps = 0``
(our default) scales the interval to the run: s = max(1, T // 200), which is 5000 for the
water example's 10^6 steps. Loss prefactors follow the learning rate::

    p(t) = p_limit + (p_start - p_limit) * lr(t) / start_lr
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ExpDecay:
    """lr(t) for t = 0 .. total_steps (stepped exponential decay from start_lr to stop_lr)."""

    start_lr: float
    stop_lr: float
    total_steps: int
    decay_steps: int = 0

    @property
    def interval(self) -> int:
        total = max(1, self.total_steps)
        if self.decay_steps <= 0:
            return max(1, total // 200)
        if self.decay_steps >= total:
            return max(1, 100 if total // 10 > 100 else total // 100 + 1)
        return self.decay_steps

    @property
    def rate(self) -> float:
        """Decay factor per interval."""
        if self.start_lr <= 0 or self.stop_lr <= 0:
            return 1.0
        return math.exp(math.log(self.stop_lr / self.start_lr) / (max(1, self.total_steps) / self.interval))

    def __call__(self, step: int) -> float:
        lr = self.start_lr * self.rate ** (step // self.interval)
        return max(lr, self.stop_lr) if self.stop_lr < self.start_lr else lr


def prefactor(start: float, limit: float, lr: float, start_lr: float) -> float:
    """Loss prefactor at learning rate ``lr``: moves from ``start`` (lr = start_lr) to ``limit`` (lr -> 0)."""
    return limit + (start - limit) * lr / start_lr
