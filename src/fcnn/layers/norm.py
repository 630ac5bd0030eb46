"""Batch normalisation: the pure pairs ``batch_norm2d_*`` / ``batch_norm1d_*`` and the
``BatchNorm2d`` / ``BatchNorm1d`` layers.

Per channel ``c``, over the batch (and, for conv maps, the spatial) axes::

    y = gamma * (x - mean) / sqrt(var + eps) + beta

    2d: x, y, dy: (N, C, H, W), statistics over (N, H, W), M = N * H * W values per channel
    1d: x, y, dy: (N, C),       statistics over (N,),      M = N values per channel
    params = {"gamma": (C,), "beta": (C,)}      state = {"mean": (C,), "var": (C,)}

Train mode normalises with the batch mean and the biased batch variance and
returns the new running statistics (PyTorch's convention, unbiased variance)::

    mean_run = (1 - momentum) * mean_run + momentum * batch_mean
    var_run  = (1 - momentum) * var_run  + momentum * batch_var * M / (M - 1)

Eval mode normalises with the running statistics and returns the state
unchanged. Nothing is written anywhere: the state goes in as a keyword and the
new one comes out as ``cache.state`` (the protocol of ``fcnn.layers.base``)::

    y, cache = batch_norm2d_fwd(params, x, BatchNormCfg(), state=state, train=True)
    state = cache.state
    dx, grads = batch_norm2d_bwd(cache, dy)           # grads = {"gamma": ..., "beta": ...}

The train-mode backward is the full gradient through the batch statistics
(with ``xhat = (x - mean) / sqrt(var + eps)`` and means over the M values)::

    dbeta  = sum(dy)
    dgamma = sum(dy * xhat)
    dx     = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))

and in eval mode ``dx = gamma / sqrt(var_run + eps) * dy``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ..ops.shims import channel_dot, channel_sum
from ..ops.xp import fused
from ._checks import TRAIN, Signature
from .base import Array, Layer, Params, Shape, State, pair_layer, to_spec

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNormCache",
    "BatchNormCfg",
    "batch_norm1d_bwd",
    "batch_norm1d_fwd",
    "batch_norm2d_bwd",
    "batch_norm2d_fwd",
]


@dataclass(frozen=True, init=False)
class BatchNormCfg:
    """``momentum`` in [0, 1] (weight of the batch statistic in the running one, as
    PyTorch) and ``eps`` > 0 (added to the variance). Stored as Python floats."""

    momentum: float
    eps: float

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5) -> None:
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
            raise TypeError(f"BatchNormCfg.momentum must be a number, got {momentum!r}")
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"BatchNormCfg.momentum must be in [0, 1], got {momentum!r}")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
            raise TypeError(f"BatchNormCfg.eps must be a number, got {eps!r}")
        if not (math.isfinite(float(eps)) and float(eps) > 0.0):
            raise ValueError(f"BatchNormCfg.eps must be a finite number > 0, got {eps!r}")
        object.__setattr__(self, "momentum", float(momentum))
        object.__setattr__(self, "eps", float(eps))


class BatchNormCache(NamedTuple):
    """What the backward needs, and the new running statistics.

    ``xc = x - mean`` (x's shape; the batch mean in train mode, the running one in
    eval mode), ``inv_std = 1 / sqrt(var + eps)`` and ``gamma``, both (C,), the
    ``train`` flag, and ``state``: the running statistics after this step (new
    arrays in train mode, the given state in eval mode).
    """

    train: bool
    xc: Array
    inv_std: Array
    gamma: Array
    state: State


def _signature(op: str, x: str, hint: str = "") -> Signature:
    return Signature(
        op,
        x=x,
        params={"gamma": "(C,)", "beta": "(C,)"},
        cfg=BatchNormCfg,
        state={"mean": "(C,)", "var": "(C,)"},
        extras={"train": TRAIN},
        words={"C": "channel"},
        at_least_one=("C",),
        rank_hint=hint,
    )


_SIG2 = _signature("batch_norm2d", "(N, C, H, W)")
_SIG1 = _signature("batch_norm1d", "(N, C)", "use BatchNorm2d for (C, H, W) maps")


def _per_channel(v: Array, ndim: int) -> Array:
    """A (C,) vector as a (1, C, 1, ...) view of ``ndim`` axes, to broadcast against (N, C, ...).

    A view, not a (C, H, W) repeat: on the batch-last maps a convolution returns,
    broadcasting a view reads each gamma once per channel run instead of a repeated
    array as large as the map.
    """
    return v.reshape((1, v.shape[0]) + (1,) * (ndim - 2))


# The per-channel arithmetic on (C,) vectors and the per-element passes are each one
# ``fused`` function: one kernel apiece on a GPU, where each small operation would cost a
# launch; the same NumPy expressions on the host.


@fused
def _centered(xp: Any, x: Array, total: Array, m: int) -> Array:
    """``x - total / m``: x (N, C, ...) minus its per-channel mean (total broadcasts)."""
    out: Array = x - total / m
    return out


@fused
def _train_stats(
    xp: Any,
    total: Array,
    squares: Array,
    run_mean: Array,
    run_var: Array,
    gamma: Array,
    m: int,
    mom: float,
    keep: float,
    unbias: float,
    eps: float,
) -> tuple[Array, Array, Array, Array]:
    """(C,) vectors, from the sums of x and of (x - mean)**2 over the M values per channel
    -> (new running mean, new running var, inv_std, gamma * inv_std). ``keep = 1 - mom``,
    computed by the caller (CuPy's fuse would compute it in float16: tests/foreign.py)."""
    mean = total / m
    var = squares / m
    new_mean = (keep * run_mean + mom * mean).astype(mean.dtype, copy=False)
    new_var = (keep * run_var + mom * (var * unbias)).astype(mean.dtype, copy=False)
    inv_std = (1.0 / xp.sqrt(var + eps)).astype(mean.dtype, copy=False)
    return new_mean, new_var, inv_std, gamma * inv_std


@fused
def _eval_scale(xp: Any, var: Array, gamma: Array, eps: float) -> tuple[Array, Array]:
    """(C,) vectors -> (inv_std, gamma * inv_std) from the running variance."""
    inv_std = (1.0 / xp.sqrt(var + eps)).astype(var.dtype, copy=False)
    return inv_std, gamma * inv_std


@fused
def _affine(xp: Any, a: Array, scale: Array, shift: Array) -> Array:
    """``a * scale + shift`` elementwise (scale and shift broadcast per channel)."""
    out: Array = a * scale + shift
    return out


@fused
def _grad_coefficients(
    xp: Any, dbeta: Array, dy_xc: Array, inv_std: Array, gamma: Array, m: float
) -> tuple[Array, Array, Array, Array]:
    """(C,) vectors -> (dgamma, scale, k_xc, k_0) of the train-mode gradient
    ``dx = dy * scale + xc * k_xc + k_0``."""
    scale = gamma * inv_std
    k_xc = -scale * inv_std * inv_std * (dy_xc / m)
    k_0 = -scale * (dbeta / m)
    return dy_xc * inv_std, scale, k_xc, k_0


@fused
def _input_grad(xp: Any, dy: Array, scale: Array, xc: Array, k_xc: Array, k_0: Array) -> Array:
    """``dy * scale + xc * k_xc + k_0`` elementwise (the vectors broadcast per channel)."""
    out: Array = dy * scale + xc * k_xc + k_0
    return out


def _bn_fwd(
    sig: Signature, params: Params, x: Array, cfg: BatchNormCfg, state: State, train: bool
) -> tuple[Array, BatchNormCache]:
    gamma, beta = sig.check(params, x, cfg, state=state, train=train)
    m = x.size // x.shape[1]  # values per channel
    if train:
        if m < 2:
            raise ValueError(
                f"{sig.op}: train mode needs more than 1 value per channel to estimate a "
                f"variance, got x of shape {tuple(x.shape)}"
            )
        # Two passes (mean, then mean of squared deviations): stable, and in x's dtype.
        total = channel_sum(x)
        xc = _centered(x, _per_channel(total, x.ndim), m)
        squares = channel_dot(xc, xc)
        run_mean, run_var, inv_std, scale = _train_stats(
            total,
            squares,
            state["mean"],
            state["var"],
            gamma,
            m,
            cfg.momentum,
            1.0 - cfg.momentum,
            m / (m - 1),
            cfg.eps,
        )
        new_state: State = {"mean": run_mean, "var": run_var}
    else:
        xc = x - _per_channel(state["mean"], x.ndim)
        inv_std, scale = _eval_scale(state["var"], gamma, cfg.eps)
        new_state = state
    # y = xc * (gamma * inv_std) + beta
    y = _affine(xc, _per_channel(scale, x.ndim), _per_channel(beta, x.ndim))
    return y, BatchNormCache(bool(train), xc, inv_std, gamma, new_state)


def _bn_bwd(sig: Signature, cache: BatchNormCache, dy: Array) -> tuple[Array, Params]:
    train, xc, inv_std, gamma, _ = cache
    sig.check_dy(dy, x=xc)
    m = xc.size // xc.shape[1]
    dbeta = channel_sum(dy)
    dy_xc = channel_dot(dy, xc)  # sum(dy * (x - mean)) per channel
    nd = dy.ndim
    if not train:
        dgamma = dy_xc * inv_std
        dx: Array = dy * _per_channel(gamma * inv_std, nd)
        return dx, {"gamma": dgamma, "beta": dbeta}
    # dx = scale * (dy - mean(dy) - xc * inv_std**2 * mean(dy * xc)), folded per
    # channel into dy * scale + xc * k_xc + k_0.
    dgamma, scale, k_xc, k_0 = _grad_coefficients(dbeta, dy_xc, inv_std, gamma, m)
    dx = _input_grad(dy, _per_channel(scale, nd), xc, _per_channel(k_xc, nd), _per_channel(k_0, nd))
    return dx, {"gamma": dgamma, "beta": dbeta}


def batch_norm2d_fwd(
    params: Params, x: Array, cfg: BatchNormCfg, *, state: State, train: bool
) -> tuple[Array, BatchNormCache]:
    """Batch norm over conv maps. x: (N, C, H, W) -> y: (N, C, H, W), same dtype.

    params: {"gamma": (C,), "beta": (C,)}; state: {"mean": (C,), "var": (C,)}; all
    arrays share x's floating dtype. Returns ``(y, cache)``; ``cache.state`` is the
    new running statistics: in train mode updated (new arrays), in eval mode
    ``state`` itself. Raises ``ValueError``/``TypeError`` starting with
    ``"batch_norm2d: "`` on bad input.
    """
    return _bn_fwd(_SIG2, params, x, cfg, state, train)


def batch_norm2d_bwd(cache: BatchNormCache, dy: Array) -> tuple[Array, Params]:
    """Batch norm backward. dy: (N, C, H, W) -> dx: (N, C, H, W), {"gamma": (C,), "beta": (C,)}.

    The full gradient through the batch statistics when the forward ran in train mode.
    """
    return _bn_bwd(_SIG2, cache, dy)


def batch_norm1d_fwd(
    params: Params, x: Array, cfg: BatchNormCfg, *, state: State, train: bool
) -> tuple[Array, BatchNormCache]:
    """Batch norm over features. x: (N, C) -> y: (N, C), same dtype.

    params: {"gamma": (C,), "beta": (C,)}; state: {"mean": (C,), "var": (C,)}.
    Otherwise exactly as ``batch_norm2d_fwd``; errors start with ``"batch_norm1d: "``.
    """
    return _bn_fwd(_SIG1, params, x, cfg, state, train)


def batch_norm1d_bwd(cache: BatchNormCache, dy: Array) -> tuple[Array, Params]:
    """Batch norm backward. dy: (N, C) -> dx: (N, C), {"gamma": (C,), "beta": (C,)}."""
    return _bn_bwd(_SIG1, cache, dy)


def _bn_layer(
    type_name: str, sig: Signature, fwd: Any, bwd: Any, cfg: BatchNormCfg, name: str | None
) -> Layer:
    def init(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        shape = sig.check_init(in_shape, dtype)
        c = shape[0]
        params: Params = {"gamma": np.ones((c,), dtype), "beta": np.zeros((c,), dtype)}
        state: State = {"mean": np.zeros((c,), dtype), "var": np.ones((c,), dtype)}
        return params, state, shape

    return pair_layer("bn", fwd, bwd, cfg, init, to_spec(type_name, cfg), name)


def BatchNorm2d(momentum: float = 0.1, eps: float = 1e-5, *, name: str | None = None) -> Layer:
    """Batch norm for conv maps: per-sample shape (C, H, W), returned unchanged by ``init``.

    params ``{"gamma": ones (C,), "beta": zeros (C,)}``, state ``{"mean": zeros (C,),
    "var": ones (C,)}``. ``Context.train`` selects batch (and updates the running)
    or running statistics.
    """
    cfg = BatchNormCfg(momentum=momentum, eps=eps)
    return _bn_layer("BatchNorm2d", _SIG2, batch_norm2d_fwd, batch_norm2d_bwd, cfg, name)


def BatchNorm1d(momentum: float = 0.1, eps: float = 1e-5, *, name: str | None = None) -> Layer:
    """Batch norm for features: per-sample shape (C,), as ``BatchNorm2d`` otherwise."""
    cfg = BatchNormCfg(momentum=momentum, eps=eps)
    return _bn_layer("BatchNorm1d", _SIG1, batch_norm1d_fwd, batch_norm1d_bwd, cfg, name)
