"""Training and evaluation loops built from pure steps, with an explicit generator.

``make_step`` fuses forward, loss, backward and the optimizer update into one
pure function; ``train_epoch`` runs it over shuffled mini-batches; ``evaluate``
measures loss and accuracy in eval mode. Nothing here touches files.
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
from .optim import Optimizer, apply_updates

__all__ = ["NonFiniteLossError", "TrainState", "evaluate", "make_step", "train_epoch"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the step that caused it is not applied."""


class TrainState(NamedTuple):
    """Everything that changes during training: params, model state, optimizer state."""

    params: Params
    state: State
    opt_state: Any


Step = Callable[[TrainState, Array, Array, Context], tuple[TrainState, float]]


def make_step(model: Layer, opt: Optimizer, loss: LossPair = softmax_cross_entropy) -> Step:
    """Return ``step(ts, x, y, ctx) -> (new_ts, loss)``, one optimizer step on a batch.

    Raises ``NonFiniteLossError`` (leaving ``ts`` untouched) when the loss is NaN or inf.
    """
    grad_fn = loss_and_grad(model, loss)

    def step(ts: TrainState, x: Array, y: Array, ctx: Context) -> tuple[TrainState, float]:
        value, grads, new_state = grad_fn(ts.params, ts.state, x, y, ctx)
        return update(opt, ts, float(value), grads, new_state)

    return step


def update(
    opt: Optimizer, ts: TrainState, loss: float, grads: Params, new_state: State
) -> tuple[TrainState, float]:
    """The end of every step: ``(ts after the optimizer's update, loss)``.

    Raises ``NonFiniteLossError`` (and applies nothing) when ``loss`` is NaN or inf.
    """
    if not math.isfinite(loss):
        raise NonFiniteLossError(f"training loss is {loss}; stopping (try a smaller learning rate)")
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
    augment: Callable[[Array, np.random.Generator], Array] | None = None,
    drop_last: bool = False,
) -> tuple[TrainState, float]:
    """One pass over ``(x, y)`` in shuffled batches; returns the new state and the mean loss.

    ``rng`` shuffles, is handed to the layers (dropout) through the context, and
    to ``augment(x_batch, rng) -> x_batch`` when given: e.g.
    ``fcnn.data.augment.shift_augment(2, mean, std)`` for images normalised with
    ``(mean, std)``, whose border is the normalised background.
    ``on_batch(batch_index, loss)`` is called after every step (progress bars).
    ``drop_last`` skips a final short batch (e.g. one image, which batch norm refuses).
    """
    ctx = Context(train=True, rng=rng)
    total, count = 0.0, 0
    for i, idx in enumerate(iterate_batches(len(x), batch_size, rng, drop_last)):
        xb = x[idx] if augment is None else augment(x[idx], rng)
        ts, lv = step(ts, xb, y[idx], ctx)
        total += lv * len(idx)
        count += len(idx)
        if on_batch is not None:
            on_batch(i, lv)
    return ts, total / max(count, 1)


def evaluate(
    model: Layer,
    params: Params,
    state: State,
    x: Array,
    y: Array,
    loss: LossPair = softmax_cross_entropy,
    batch_size: int = 500,
) -> tuple[float, float]:
    """Eval-mode ``(mean loss, accuracy)`` of a classifier on ``x: (N, ...)``, ``y: (N,)``."""
    logits = predict(model, params, state, x, batch_size)
    value, _ = loss.fwd(logits, y)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == y))
    return float(value), accuracy
