"""Schedules match their formulas and drive an optimizer."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fcnn
from fcnn.schedules import cosine_decay, linear_warmup, step_decay


def test_step_decay_formula() -> None:
    s = step_decay(0.1, step_size=3, gamma=0.5)
    assert [s(t) for t in range(7)] == pytest.approx(
        [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]
    )


def test_cosine_decay_formula_and_flat_end() -> None:
    s = cosine_decay(0.2, total_steps=10, final_lr=0.02)
    for t in range(10):
        want = 0.02 + 0.18 * 0.5 * (1 + math.cos(math.pi * t / 10))
        assert s(t) == pytest.approx(want)
    assert s(10) == pytest.approx(0.02)
    assert s(25) == pytest.approx(0.02)
    assert s(5) == pytest.approx(0.11)


def test_linear_warmup_then_inner() -> None:
    inner = step_decay(1.0, step_size=4, gamma=0.5)
    s = linear_warmup(inner, warmup_steps=4)
    assert [s(t) for t in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 0.5, 0.5])
    assert linear_warmup(0.3, 3)(0) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("make", "msg"),
    [
        (lambda: step_decay(0.1, 0), "step_size"),
        (lambda: step_decay(-0.1, 2), "lr"),
        (lambda: cosine_decay(0.1, 0), "total_steps"),
        (lambda: cosine_decay(0.1, 5, final_lr=float("nan")), "final_lr"),
        (lambda: linear_warmup(0.1, 0), "warmup_steps"),
    ],
)
def test_bad_arguments(make: object, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        make()  # type: ignore[operator]


def test_schedule_drives_an_optimizer() -> None:
    """sgd with a step-decay schedule takes steps of exactly lr(t) * g."""
    opt = fcnn.sgd(step_decay(1.0, step_size=1, gamma=0.5))
    params = {"w": np.array([0.0], np.float32)}
    grads = {"w": np.array([1.0], np.float32)}
    state = opt.init(params)
    moved = []
    for _ in range(3):
        updates, state = opt.update(grads, state, params)
        moved.append(float(updates["w"][0]))
        params = fcnn.apply_updates(params, updates)
    assert moved == pytest.approx([-1.0, -0.5, -0.25])
