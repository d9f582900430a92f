"""Learning-rate schedules, computed once here for every backend.

The training loop asks :func:`lr_at` for the learning rate of every step and hands the
number to the backend's ``Trainer.set_lr`` before the step, so the four frameworks cannot
drift apart through their own schedulers (whose conventions differ: per epoch or per step,
where warm-up starts, how one-cycle divides).

Schedules (``t`` is the step, counted from 0 over the whole run, ``T`` the number of steps):

* ``constant``: ``lr`` (the book's);
* ``step``: ``lr * gamma ** floor(epoch / step_epochs)``, evaluated at each step's epoch;
* ``cosine``: ``min_lr + (lr - min_lr) * (1 + cos(pi * t' / T')) / 2`` after the warm-up
  (``t'``, ``T'`` counted from its end), ``min_lr = lr * final_lr_factor``;
* ``onecycle``: PyTorch's ``OneCycleLR`` with cosine annealing: from ``lr / div_factor``
  up to ``lr`` over the first ``pct_start`` of the steps, then down to
  ``lr / div_factor / final_div_factor``; it has its own warm-up.

Linear warm-up (``warmup_epochs``, any schedule but one-cycle): the first steps go
linearly from ``lr * warmup_start`` to the schedule's value at the end of the warm-up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "step", "cosine", "onecycle")


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule over ``total_steps`` steps of ``steps_per_epoch`` each."""
    lr: float
    total_steps: int
    steps_per_epoch: int
    name: str = "constant"
    warmup_epochs: float = 0.0
    warmup_start: float = 0.0
    step_epochs: int = 30
    gamma: float = 0.1
    final_lr_factor: float = 0.0
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}; choose one of {', '.join(SCHEDULES)}")
        if self.total_steps < 1 or self.steps_per_epoch < 1:
            raise ValueError("a schedule needs at least one step")

    @property
    def warmup_steps(self) -> int:
        return 0 if self.name == "onecycle" else min(int(round(self.warmup_epochs * self.steps_per_epoch)),
                                                     self.total_steps)

    def _after_warmup(self, t: int) -> float:
        lr, w = self.lr, self.warmup_steps
        if self.name == "constant":
            return lr
        if self.name == "step":
            return lr * self.gamma ** (t // self.steps_per_epoch // max(self.step_epochs, 1))
        if self.name == "cosine":
            low, span = lr * self.final_lr_factor, max(self.total_steps - w, 1)
            return low + (lr - low) * (1 + math.cos(math.pi * min(t - w, span) / span)) / 2
        # one-cycle, as torch.optim.lr_scheduler.OneCycleLR(anneal_strategy='cos', three_phase=False)
        start, end = lr / self.div_factor, lr / self.div_factor / self.final_div_factor
        up = float(self.pct_start * self.total_steps) - 1
        down = float(self.total_steps) - 1
        if t <= up:
            return _cos(start, lr, t / up if up > 0 else 1.0)
        return _cos(lr, end, (t - up) / (down - up) if down > up else 1.0)

    def __call__(self, t: int) -> float:
        """The learning rate of step ``t`` (0-based, over the whole run)."""
        w = self.warmup_steps
        if t < w:
            target = self._after_warmup(w)
            start = self.lr * self.warmup_start
            return start + (target - start) * t / w
        return self._after_warmup(t)


def _cos(start, end, pct):
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def lr_at(step: int, total_steps: int, steps_per_epoch: int, lr: float, name: str = "constant",
          **options) -> float:
    """The learning rate of ``step``: ``Schedule(lr, total_steps, steps_per_epoch, name, **options)(step)``."""
    return Schedule(lr, total_steps, steps_per_epoch, name, **options)(step)
