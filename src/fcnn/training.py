"""Training and evaluation loops built from pure steps, with an explicit generator.

``make_step`` fuses forward, loss, backward and the optimizer update into one
pure function; ``train_epoch`` runs it over shuffled mini-batches; ``evaluate``
measures loss and accuracy in eval mode. Nothing here touches files.

Every function computes with the library of its arrays (docs/gpu.md). On a device
nothing in a step waits for the device: the step hands back its loss as a 0-d device
array, and ``train_epoch`` brings the losses to the host every ``check_every`` steps
and at the end of the epoch, where the non-finite check runs and ``on_batch`` is
called, in order, with each loss as a float.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .data.batches import iterate_batches
from .layers.base import Array, Context, Layer, Params, State
from .losses import softmax_cross_entropy
from .model import LossPair, loss_and_grad, predict
from .ops.xp import device_generator, is_numpy, namespace, to_host
from .optim import Optimizer, apply_updates

__all__ = [
    "CHECK_EVERY",
    "NonFiniteLossError",
    "TrainState",
    "evaluate",
    "make_step",
    "train_epoch",
]

CHECK_EVERY = 50
"""Steps between two looks at the losses on a device (``train_epoch``): each look waits
for the device once; the host looks after every step."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the step that caused it is not applied."""


class TrainState(NamedTuple):
    """Everything that changes during training: params, model state, optimizer state."""

    params: Params
    state: State
    opt_state: Any


Step = Callable[[TrainState, Array, Array, Context], tuple[TrainState, Any]]


def make_step(model: Layer, opt: Optimizer, loss: LossPair = softmax_cross_entropy) -> Step:
    """Return ``step(ts, x, y, ctx) -> (new_ts, loss)``, one optimizer step on a batch.

    NumPy arrays: ``loss`` is a float, and a NaN or infinite loss raises
    ``NonFiniteLossError`` (leaving ``ts`` untouched). Device arrays: ``loss`` is a 0-d
    array on the device and nothing waits for it; ``train_epoch`` checks it (or call
    ``float(loss)`` yourself, which waits for the device).
    """
    grad_fn = loss_and_grad(model, loss)

    def step(ts: TrainState, x: Array, y: Array, ctx: Context) -> tuple[TrainState, Any]:
        value, grads, new_state = grad_fn(ts.params, ts.state, x, y, ctx)
        return update(opt, ts, value, grads, new_state)

    return step


def _non_finite(loss: float) -> NonFiniteLossError:
    return NonFiniteLossError(f"training loss is {loss}; stopping (try a smaller learning rate)")


def update(
    opt: Optimizer, ts: TrainState, loss: Any, grads: Params, new_state: State
) -> tuple[TrainState, Any]:
    """The end of every step: ``(ts after the optimizer's update, loss)``.

    A loss on the host (a number or a NumPy array) comes back as a float, and a NaN or
    inf raises ``NonFiniteLossError`` (and applies nothing). A loss on a device comes
    back as it is, unchecked (see ``make_step``).
    """
    if is_numpy(namespace(loss)):
        loss = float(loss)
        if not math.isfinite(loss):
            raise _non_finite(loss)
    updates, opt_state = opt.update(grads, ts.opt_state, ts.params)
    return TrainState(apply_updates(ts.params, updates), new_state, opt_state), loss


def train_epoch(
    step: Step,
    ts: TrainState,
    x: Array,
    y: Array,
    batch_size: int,
    rng: np.random.Generator,
    on_batch: Callable[[int, float], None] | None = None,
    augment: Callable[[Array, Any], Array] | None = None,
    drop_last: bool = False,
    *,
    check_every: int = CHECK_EVERY,
) -> tuple[TrainState, float]:
    """One pass over ``(x, y)`` in shuffled batches; returns the new state and the mean loss.

    ``rng`` (the run's host generator) shuffles; it is handed to the layers (dropout)
    through the context, and to ``augment(x_batch, rng) -> x_batch`` when given (e.g.
    ``fcnn.data.augment.shift_augment(2, mean, std)`` for images normalised with
    ``(mean, std)``, whose border is the normalised background). ``on_batch(batch_index,
    loss)`` gets every step's loss as a float, in order (progress bars). ``drop_last``
    skips a final short batch (e.g. one image, which batch norm refuses). A NaN or
    infinite loss raises ``NonFiniteLossError``.

    On a device (``x`` and ``y`` uploaded once, e.g. with ``fcnn.to_device``), the order is
    drawn from ``rng`` as on the host and uploaded once; batches are cut, augmented and
    trained on the device; the layers and ``augment`` draw from a device generator seeded
    from ``rng`` (``fcnn.device_generator``). The losses reach the host every
    ``check_every`` steps and at the end: then ``on_batch`` runs for each, and the first
    non-finite one raises (the updates after it are discarded with the epoch's state).
    """
    xp = namespace(x, y)
    host = is_numpy(xp)
    if not host and check_every < 1:
        raise ValueError(f"train_epoch: check_every must be >= 1, got {check_every}")
    ctx = Context(train=True, rng=device_generator(xp, rng))
    losses = _Losses(on_batch, 1 if host else check_every)
    for idx in iterate_batches(len(x), batch_size, rng, drop_last, xp=xp):
        xb = x[idx] if augment is None else augment(x[idx], ctx.rng)
        ts, lv = step(ts, xb, y[idx], ctx)
        losses.add(lv, len(idx))
    losses.settle()
    return ts, losses.total / max(losses.count, 1)


class _Losses:
    """An epoch's losses: kept where they are made until ``every`` of them wait, then read
    on the host at once (one wait for a device), checked and passed to ``on_batch``."""

    def __init__(self, on_batch: Callable[[int, float], None] | None, every: int) -> None:
        self.on_batch, self.every = on_batch, every
        self.pending: list[tuple[Any, int]] = []
        self.total, self.count, self.done = 0.0, 0, 0

    def add(self, loss: Any, n: int) -> None:
        self.pending.append((loss, n))
        if len(self.pending) >= self.every:
            self.settle()

    def settle(self) -> None:
        if not self.pending:
            return
        values = [lv for lv, _ in self.pending]
        if not all(isinstance(v, float) for v in values):
            values = to_host(namespace(*values).stack(values)).tolist()
        sizes = [n for _, n in self.pending]
        self.pending = []
        for value, n in zip(values, sizes, strict=True):
            if not math.isfinite(value):
                raise _non_finite(value)
            self.total += value * n
            self.count += n
            if self.on_batch is not None:
                self.on_batch(self.done, value)
            self.done += 1


def evaluate(
    model: Layer,
    params: Params,
    state: State,
    x: Array,
    y: Array,
    loss: LossPair = softmax_cross_entropy,
    batch_size: int = 500,
) -> tuple[float, float]:
    """Eval-mode ``(mean loss, accuracy)`` of a classifier on ``x: (N, ...)``, ``y: (N,)``.

    Computed where ``x`` and ``y`` are; the two numbers are read on the host at the end.
    """
    logits = predict(model, params, state, x, batch_size)
    value, _ = loss.fwd(logits, y)
    xp = namespace(logits, y)
    accuracy = float(xp.mean(xp.argmax(logits, axis=1) == y))
    return float(value), accuracy
