"""Learning-rate schedules, as plain functions.

A schedule maps the 0-based count of updates already taken, ``t``, to a
learning rate; every optimizer in ``fcnn.optim`` accepts one wherever it takes
``lr``::

    opt = fcnn.sgd(linear_warmup(cosine_decay(0.1, total_steps=5000), 200), momentum=0.9)
    opt = fcnn.adam(one_cycle(4e-3, total_steps=1400))   # up to 4e-3, then down to 0

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
    "one_cycle",
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


def _check_fraction(name: str, value: Any) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not 0.0 < float(value) < 1.0:  # NaN fails the comparison too
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def one_cycle(
    lr: float,
    total_steps: int,
    warmup_fraction: float = 0.25,
    start_lr: float | None = None,
    final_lr: float = 0.0,
) -> Schedule:
    """A triangular one-cycle schedule: a straight line up from ``start_lr`` to ``lr``,
    then a straight line down to ``final_lr`` at ``t = total_steps``, then flat.

    With ``W = min(max(1, round(warmup_fraction * T)), T)``, ``T = total_steps``::

        t <  W:       start_lr + (lr - start_lr) * t / W
        W <= t < T:   lr + (final_lr - lr) * (t - W) / (T - W)
        t >= T:       final_lr

    ``start_lr`` defaults to ``lr / 25`` (PyTorch's ``OneCycleLR`` default). The peak is
    reached at update ``W``. Raises ``ValueError`` naming the argument for a negative or
    non-finite rate, a ``total_steps`` below 1 or a ``warmup_fraction`` outside (0, 1).
    """
    peak = _check_real("lr", lr)
    total = _check_count("total_steps", total_steps)
    fraction = _check_fraction("warmup_fraction", warmup_fraction)
    start = peak / 25.0 if start_lr is None else _check_real("start_lr", start_lr)
    final = _check_real("final_lr", final_lr)
    warm = min(max(1, round(fraction * total)), total)

    def schedule(t: int) -> float:
        if t < warm:
            return _between(start, peak, t / warm)
        if t < total:  # so total > warm here: no division by zero
            return _between(peak, final, (t - warm) / (total - warm))
        return final

    return schedule


def _between(a: float, b: float, progress: float) -> float:
    """The point ``progress`` (0 to 1) of the way along a straight line from ``a`` to ``b``."""
    return a + (b - a) * progress
