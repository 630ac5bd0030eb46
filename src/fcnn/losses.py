"""Losses as pairs: ``fwd(prediction, target) -> (loss, cache)``, ``bwd(cache, dloss) -> dpred``.

    loss, cache = softmax_cross_entropy_fwd(logits, labels)   # logits (N, K), labels (N,) int
    dlogits = softmax_cross_entropy_bwd(cache, 1.0)           # (N, K) = (softmax - onehot) / N

    loss, cache = softmax_cross_entropy_fwd(logits, labels, smoothing=0.1)
    dlogits = softmax_cross_entropy_bwd(cache, 1.0)           # (softmax - q) / N
    make_step(model, opt, loss=label_smoothing(0.1))          # the same, as a Loss pair

    loss, cache = mse_fwd(pred, target)                       # any shape, mean over all elements
    dpred = mse_bwd(cache, 1.0)                               # 2 * (pred - target) / size

The loss is a 0-d array in the prediction's dtype, and so is every gradient.
Softmax cross-entropy is fused and computed through ``log_softmax`` (log-sum-exp
with the row maximum subtracted), so it is finite for logits of +-1e4. ``Loss``
bundles a pair for the composer: ``loss_and_grad(model, softmax_cross_entropy)``.

Label smoothing with ``eps`` trains against the target distribution
``q = (1 - eps) * onehot(labels) + eps / K`` instead of the one-hot row (PyTorch's
``cross_entropy(..., label_smoothing=eps)``); the fused gradient stays ``softmax - q``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .layers._checks import check_float
from .layers.base import Array
from .ops.xp import fused, is_numpy, namespace

__all__ = [
    "Loss",
    "MseCache",
    "SoftmaxCrossEntropyCache",
    "label_smoothing",
    "log_softmax",
    "mse",
    "mse_bwd",
    "mse_fwd",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_bwd",
    "softmax_cross_entropy_fwd",
]

_SCE = "softmax_cross_entropy"
_MSE = "mse"


class Loss(NamedTuple):
    """A loss pair: ``fwd(prediction, target) -> (loss, cache)``, ``bwd(cache, dloss) -> dpred``."""

    fwd: Callable[[Array, Array], tuple[Array, Any]]
    bwd: Callable[..., Array]


class SoftmaxCrossEntropyCache(NamedTuple):
    """What ``softmax_cross_entropy_bwd`` needs: log-probabilities (N, K), labels (N,)
    and the label smoothing ``eps`` (0.0: one-hot targets)."""

    logp: Array
    labels: Array
    smoothing: float = 0.0


class MseCache(NamedTuple):
    """What ``mse_bwd`` needs: the difference ``pred - target`` (any shape)."""

    diff: Array


def log_softmax(logits: Array) -> Array:
    """Stable log-softmax over the last axis: ``z - max(z) - log(sum(exp(z - max(z))))``.

    logits: (..., K) float -> (..., K), same dtype.
    """
    xp = namespace(logits)
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    out: Array = shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
    return out


def softmax(logits: Array) -> Array:
    """Softmax over the last axis, ``exp(log_softmax(logits))``. logits: (..., K) -> (..., K)."""
    out: Array = namespace(logits).exp(log_softmax(logits))
    return out


def _check_logits_labels(logits: Any, labels: Any) -> None:
    """logits (N, K) float with N, K >= 1; labels (N,) integers in [0, K).

    The range of device labels is not read here: that would wait for the device. A label
    out of range makes the loss NaN instead (``_nan_if_out_of_range``), which the
    training loop's non-finite check stops on.
    """
    check_float(logits, _SCE, "logits")
    if logits.ndim != 2:
        raise ValueError(f"{_SCE}: logits must have rank 2 (N, K), got shape {tuple(logits.shape)}")
    n, k = (int(d) for d in logits.shape)
    if n < 1 or k < 1:
        raise ValueError(f"{_SCE}: logits must have N >= 1 rows and K >= 1 classes, got {(n, k)}")
    dtype = getattr(labels, "dtype", None)
    if dtype is None or not hasattr(labels, "shape"):
        raise TypeError(f"{_SCE}: labels must be an integer array, got {type(labels).__name__}")
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"{_SCE}: labels must have an integer dtype, got {dtype}")
    if labels.ndim != 1:
        raise ValueError(f"{_SCE}: labels must have rank 1 (N,), got shape {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise ValueError(f"{_SCE}: labels has {labels.shape[0]} entries but logits has {n} rows")
    if not is_numpy(namespace(logits, labels)):
        return
    if labels.min() >= 0 and labels.max() < k:  # two reductions; the mask only on error
        return
    bad = labels[(labels < 0) | (labels >= k)]  # not empty: a reduction above was out of range
    raise ValueError(
        f"{_SCE}: labels must be in [0, K) = [0, {k}), got {int(bad[0])} "
        f"({int(bad.size)} out of range)"
    )


def _dloss_value(dloss: Any, op: str) -> float:
    """The upstream gradient of a scalar loss as a float: a real number or a 0-d real array."""
    if isinstance(dloss, numbers.Real) and not isinstance(dloss, bool):
        return float(dloss)
    shape = getattr(dloss, "shape", None)
    kind = getattr(getattr(dloss, "dtype", None), "kind", None)
    if shape == () and kind in ("i", "u", "f"):
        return float(dloss)
    got = type(dloss).__name__ + ("" if shape is None else f" of shape {tuple(shape)}")
    raise TypeError(f"{op}: dloss must be a real scalar (the loss is one number), got {got}")


def _check_smoothing(smoothing: Any, op: str) -> float:
    """The label smoothing ``eps`` as a float: a real number in [0, 1]."""
    ok = isinstance(smoothing, numbers.Real) and not isinstance(smoothing, bool)
    if not ok or not 0.0 <= float(smoothing) <= 1.0:  # NaN fails the comparison too
        raise ValueError(f"{op}: smoothing must be a number in [0, 1], got {smoothing!r}")
    return float(smoothing)


def softmax_cross_entropy_fwd(
    logits: Array, labels: Array, smoothing: float = 0.0
) -> tuple[Array, SoftmaxCrossEntropyCache]:
    """Mean softmax cross-entropy against ``q = (1 - eps) * onehot + eps / K``, ``eps = smoothing``.

    ``-mean_n sum_k q[n, k] * log_softmax(logits)[n, k]``, which is
    ``(1 - eps) * -logp[n, labels[n]] + eps * -mean_k logp[n, k]`` averaged over n;
    ``smoothing=0`` is the plain ``-mean_n log_softmax(logits)[n, labels[n]]``.

    logits: (N, K) float; labels: (N,) integer in [0, K); smoothing: a number in [0, 1]
    -> loss: 0-d array in logits' dtype. Raises ``ValueError``/``TypeError`` starting
    with ``"softmax_cross_entropy: "``.
    """
    eps = _check_smoothing(smoothing, _SCE)
    _check_logits_labels(logits, labels)
    xp = namespace(logits, labels)
    logp = log_softmax(logits)
    picked = logp[xp.arange(logp.shape[0]), labels]
    if not is_numpy(xp):
        picked = _nan_if_out_of_range(picked, labels, logp.shape[1])
    nll = -xp.mean(picked)
    if eps:
        nll = (1.0 - eps) * nll - eps * xp.mean(logp)  # mean over n and k: mean_n of mean_k
    loss: Array = xp.asarray(nll, dtype=logits.dtype)
    return loss, SoftmaxCrossEntropyCache(logp, labels, eps)


@fused
def _nan_if_out_of_range(xp: Any, picked: Array, labels: Array, k: int) -> Array:
    """picked (N,) with NaN where a label is outside [0, k) (a device's gather wraps around)."""
    out: Array = xp.where((labels < 0) | (labels >= k), xp.nan, picked).astype(picked.dtype)
    return out


@fused
def _sce_grad(
    xp: Any, logp: Array, labels: Array, classes: Array, eps_k: float, hit: float, scale: float
) -> Array:
    """(softmax - q) * scale with q = eps_k + hit * onehot: logp (N, K), labels (N, 1),
    classes (1, K) -> (N, K)."""
    onehot = (labels == classes).astype(logp.dtype)
    out: Array = (xp.exp(logp) - eps_k - onehot * hit) * scale
    return out


def softmax_cross_entropy_bwd(cache: SoftmaxCrossEntropyCache, dloss: Any = 1.0) -> Array:
    """Gradient of the mean cross-entropy: dlogits (N, K) = dloss * (softmax - q) / N,
    ``q = (1 - eps) * onehot + eps / K`` (``q = onehot`` without smoothing).

    ``dloss`` is a scalar (Python number or 0-d array); the result has logits' dtype.
    """
    logp, labels, eps = cache
    n, k = logp.shape
    scale = _dloss_value(dloss, _SCE) / n
    classes = namespace(logp, labels).arange(k)[None, :]
    grad: Array = _sce_grad(logp, labels[:, None], classes, eps / k, 1.0 - eps, scale)
    return grad


def label_smoothing(eps: float) -> Loss:
    """Softmax cross-entropy with label smoothing ``eps`` in [0, 1], as a ``Loss`` pair.

    ``fwd(logits (N, K), labels (N,)) -> (loss, cache)`` is
    ``softmax_cross_entropy_fwd(logits, labels, smoothing=eps)``; ``bwd`` is
    ``softmax_cross_entropy_bwd``. ``label_smoothing(0)`` gives the plain loss's values.
    Raises ``ValueError`` for an ``eps`` outside [0, 1].
    """
    value = _check_smoothing(eps, "label_smoothing")

    def fwd(logits: Array, labels: Array) -> tuple[Array, SoftmaxCrossEntropyCache]:
        return softmax_cross_entropy_fwd(logits, labels, smoothing=value)

    return Loss(fwd, softmax_cross_entropy_bwd)


def _check_pred_target(pred: Any, target: Any) -> None:
    """pred and target: float arrays of one shape and one dtype, not empty."""
    check_float(pred, _MSE, "pred")
    check_float(target, _MSE, "target")
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(
            f"{_MSE}: pred and target must have the same shape, got pred {tuple(pred.shape)} "
            f"and target {tuple(target.shape)}"
        )
    if pred.dtype != target.dtype:
        raise TypeError(
            f"{_MSE}: dtypes must match, but pred is {pred.dtype}, target is {target.dtype}"
        )
    if pred.size == 0:
        raise ValueError(f"{_MSE}: pred is empty, got shape {tuple(pred.shape)}")


def mse_fwd(pred: Array, target: Array) -> tuple[Array, MseCache]:
    """Mean squared error over all elements: ``mean((pred - target) ** 2)``.

    pred, target: same shape (...), same floating dtype -> loss: 0-d array in that dtype.
    Raises ``ValueError``/``TypeError`` starting with ``"mse: "``.
    """
    _check_pred_target(pred, target)
    xp = namespace(pred, target)
    diff = pred - target
    loss: Array = xp.asarray(xp.mean(diff * diff), dtype=pred.dtype)
    return loss, MseCache(diff)


def mse_bwd(cache: MseCache, dloss: Any = 1.0) -> Array:
    """Gradient of the mean squared error: dpred (...) = dloss * 2 * (pred - target) / size."""
    diff = cache.diff
    grad: Array = diff * (2.0 * _dloss_value(dloss, _MSE) / diff.size)
    return grad


softmax_cross_entropy = Loss(softmax_cross_entropy_fwd, softmax_cross_entropy_bwd)
mse = Loss(mse_fwd, mse_bwd)
