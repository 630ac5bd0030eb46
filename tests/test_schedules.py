"""Schedules match their formulas and drive an optimizer."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import fcnn
from fcnn.schedules import cosine_decay, linear_warmup, one_cycle, step_decay


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


def test_one_cycle_formula_peak_and_flat_end() -> None:
    s = one_cycle(1.0, total_steps=10, warmup_fraction=0.3, start_lr=0.1, final_lr=0.0)
    want = [0.1, 0.4, 0.7, 1.0, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7, 0.0, 0.0]
    assert [s(t) for t in range(12)] == pytest.approx(want)
    assert max(s(t) for t in range(12)) == s(3) == 1.0
    assert s(10**6) == 0.0


def test_one_cycle_defaults_start_at_a_25th_of_the_peak() -> None:
    s = one_cycle(0.5, total_steps=8)  # warmup_fraction 0.25: peak at update 2
    assert s(0) == pytest.approx(0.02)
    assert s(1) == pytest.approx(0.26)
    assert s(2) == 0.5 and s(8) == 0.0
    assert s(5) == pytest.approx(0.25)


@pytest.mark.parametrize("total", [1, 2, 3])
def test_one_cycle_short_runs_stay_finite(total: int) -> None:
    s = one_cycle(0.3, total_steps=total, warmup_fraction=0.9, final_lr=0.01)
    values = [s(t) for t in range(total + 2)]
    assert all(math.isfinite(v) and 0.0 <= v <= 0.3 for v in values)
    assert values[-1] == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"lr": -1.0}, "^lr must be a finite number >= 0"),
        ({"lr": float("inf")}, "^lr must be"),
        ({"total_steps": 0}, "^total_steps must be an int >= 1"),
        ({"total_steps": 2.5}, "^total_steps must be an int"),
        ({"warmup_fraction": 0.0}, r"^warmup_fraction must be a number in \(0, 1\), got 0.0"),
        ({"warmup_fraction": 1.0}, "^warmup_fraction must be"),
        ({"warmup_fraction": float("nan")}, "^warmup_fraction must be"),
        ({"warmup_fraction": True}, "^warmup_fraction must be"),
        ({"start_lr": -0.1}, "^start_lr must be a finite number >= 0"),
        ({"final_lr": float("nan")}, "^final_lr must be"),
    ],
)
def test_one_cycle_bad_arguments(kwargs: dict[str, Any], msg: str) -> None:
    args: dict[str, Any] = {"lr": 0.1, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=msg):
        one_cycle(**args)



def test_one_cycle_drives_an_optimizer() -> None:
    """sgd without momentum under one_cycle takes steps of exactly lr(t) * g."""
    schedule = one_cycle(1.0, total_steps=4, warmup_fraction=0.5, start_lr=0.0)
    opt = fcnn.sgd(schedule, momentum=0.0)
    params = {"w": np.array([0.0], np.float32)}
    state = opt.init(params)
    moved = []
    for _ in range(5):
        updates, state = opt.update({"w": np.array([1.0], np.float32)}, state, params)
        moved.append(float(updates["w"][0]))
        params = fcnn.apply_updates(params, updates)
    assert moved == pytest.approx([0.0, -0.5, -1.0, -0.5, 0.0])
