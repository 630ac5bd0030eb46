"""Learning-rate schedules, as plain functions.

A schedule maps the 0-based count of updates already taken, ``t``, to a
learning rate; every optimizer in ``fcnn.optim`` accepts one wherever it takes
``lr``::

    opt = fcnn.sgd(linear_warmup(cosine_decay(0.1, total_steps=5000), 200), momentum=0.9)

Schedules are pure: the same ``t`` always gives the same rate, so a resumed run
(whose optimizer state holds ``t``) continues on the same curve.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .optim import Schedule, _as_schedule, _check_real, constant

__all__ = [
    "constant",
    "cosine_decay",
    "linear_warmup",
    "step_decay",
]


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``t -> lr * gamma ** (t // step_size)``: multiply by ``gamma`` every ``step_size`` steps."""
    base = _check_real("lr", lr)
    every = _check_count("step_size", step_size)
    factor = _check_real("gamma", gamma)

    def schedule(t: int) -> float:
        return base * factor ** (t // every)

    return schedule


def cosine_decay(lr: float, total_steps: int, final_lr: float = 0.0) -> Schedule:
    """Half a cosine from ``lr`` at ``t = 0`` to ``final_lr`` at ``t = total_steps``, then flat.

    ``t -> final_lr + (lr - final_lr) * (1 + cos(pi * min(t, T) / T)) / 2``, ``T = total_steps``.
    """
    base = _check_real("lr", lr)
    total = _check_count("total_steps", total_steps)
    final = _check_real("final_lr", final_lr)

    def schedule(t: int) -> float:
        progress = min(t, total) / total
        return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return schedule


def linear_warmup(schedule: Schedule | float, warmup_steps: int) -> Schedule:
    """Scale ``schedule`` by ``(t + 1) / warmup_steps`` for ``t < warmup_steps``, then follow it.

    The first update uses ``schedule(0) / warmup_steps``; update ``warmup_steps``
    and later use ``schedule(t)`` unchanged. A float is a constant schedule.
    """
    inner = _as_schedule(schedule)
    warm = _check_count("warmup_steps", warmup_steps)

    def warmed(t: int) -> float:
        scale = min(1.0, (t + 1) / warm)
        return scale * float(inner(t))

    return warmed
