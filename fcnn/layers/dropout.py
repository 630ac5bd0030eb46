"""Dropout: the pure pairs ``dropout_fwd`` / ``spatial_dropout2d_fwd`` with ``dropout_bwd``,
and the ``Dropout`` / ``SpatialDropout2d`` layers.

Inverted dropout: at train time each element (``Dropout``) or each whole channel
of a conv map (``SpatialDropout2d``) is zeroed with probability ``rate`` and the
survivors are scaled by ``1 / (1 - rate)``, so eval mode is the identity::

    y, cache = dropout_fwd({}, x, DropoutCfg(0.5), train=True, rng=rng)
    dx, grads = dropout_bwd(cache, dy)            # dx = dy * mask, grads == {}

    Dropout:           x, y, dy: (N, ...)         mask: (N, ...)       (x's shape)
    SpatialDropout2d:  x, y, dy: (N, C, H, W)     mask: (N, C, 1, 1)   (one draw per channel)

The mask (already scaled, in x's dtype) is drawn from the explicit generator
``rng`` — the draw advances that generator, as every draw does; NumPy's global
random state is never used — and kept in the cache, so the backward is
deterministic. In eval mode, or with ``rate == 0``, nothing is drawn, ``rng`` may
be ``None`` and ``y`` is ``x`` itself.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ._checks import check_dy, check_float, check_params, check_rank, check_shape_in
from .base import Array, Context, Layer, Params, Shape, State

__all__ = [
    "Dropout",
    "DropoutCache",
    "DropoutCfg",
    "SpatialDropout2d",
    "dropout_bwd",
    "dropout_fwd",
    "spatial_dropout2d_fwd",
]

_OP, _OP_SPATIAL = "dropout", "spatial_dropout2d"


def _check_rate(rate: Any, where: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"{where} must be a number in [0, 1), got {rate!r}")
    if not 0.0 <= float(rate) < 1.0:  # also rejects NaN
        raise ValueError(f"{where} must be in [0, 1), got {rate!r}")
    return float(rate)


@dataclass(frozen=True, init=False)
class DropoutCfg:
    """``rate``: the probability of dropping an element (or channel), in [0, 1)."""

    rate: float

    def __init__(self, rate: float) -> None:
        object.__setattr__(self, "rate", _check_rate(rate, "DropoutCfg.rate"))


class DropoutCache(NamedTuple):
    """What ``dropout_bwd`` needs: the op name, y's shape and dtype, and the scaled
    ``mask`` (``keep / (1 - rate)`` in x's dtype, broadcastable to y) or ``None`` for
    the identity (eval mode or rate 0)."""

    op: str
    y_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    mask: Array | None


def _draw(
    op: str, x: Array, cfg: Any, train: Any, rng: Any, mask_shape: tuple[int, ...]
) -> DropoutCache:
    """Validate ``cfg``, ``train`` and ``rng``; draw the scaled mask of ``mask_shape``."""
    if not isinstance(cfg, DropoutCfg):
        raise TypeError(f"{op}: cfg must be a DropoutCfg, got {type(cfg).__name__}")
    if not isinstance(train, bool | np.bool_):
        raise TypeError(f"{op}: train must be a bool, got {type(train).__name__}")
    shape = tuple(int(d) for d in x.shape)
    if not train or cfg.rate == 0.0:
        return DropoutCache(op, shape, x.dtype, None)
    if rng is None:
        raise ValueError(
            f"{op}: train mode needs a numpy.random.Generator to draw the mask "
            "(Context(train=True, rng=np.random.default_rng(seed))), got rng=None"
        )
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{op}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    # float32 uniforms are plenty to decide keep/drop and half the cost of float64.
    keep = rng.random(mask_shape, dtype=np.float32) >= cfg.rate
    mask: Array = keep.astype(x.dtype) * (1.0 / (1.0 - cfg.rate))  # a Python float: no promotion
    return DropoutCache(op, shape, x.dtype, mask)


def dropout_fwd(
    params: Params,
    x: Array,
    cfg: DropoutCfg,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
) -> tuple[Array, DropoutCache]:
    """Element-wise inverted dropout. params: {}; x: (N, ...) float -> y: (N, ...), x's dtype.

    Train mode: ``y = x * keep / (1 - rate)`` with ``keep ~ Bernoulli(1 - rate)``
    drawn from ``rng`` (required, a ``numpy.random.Generator``). Eval mode: ``y``
    is ``x``. Raises ``ValueError``/``TypeError`` starting with ``"dropout: "``.
    """
    check_params(params, (), _OP)
    check_float(x, _OP, "x")
    if x.ndim < 1:
        raise ValueError(f"{_OP}: x must have rank >= 1 (N, ...), got shape {tuple(x.shape)}")
    cache = _draw(_OP, x, cfg, train, rng, tuple(x.shape))
    y: Array = x if cache.mask is None else x * cache.mask
    return y, cache


def spatial_dropout2d_fwd(
    params: Params,
    x: Array,
    cfg: DropoutCfg,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
) -> tuple[Array, DropoutCache]:
    """Channel-wise inverted dropout. params: {}; x: (N, C, H, W) -> y: (N, C, H, W).

    Train mode zeroes whole maps ``x[n, c]`` with probability ``rate`` (one draw per
    (n, c), mask (N, C, 1, 1)) and scales the rest by ``1 / (1 - rate)``; eval mode
    returns ``x``. Errors start with ``"spatial_dropout2d: "``.
    """
    check_params(params, (), _OP_SPATIAL)
    check_float(x, _OP_SPATIAL, "x")
    check_rank(x, 4, "(N, C, H, W)", _OP_SPATIAL, "x")
    n, c = int(x.shape[0]), int(x.shape[1])
    cache = _draw(_OP_SPATIAL, x, cfg, train, rng, (n, c, 1, 1))
    y: Array = x if cache.mask is None else x * cache.mask
    return y, cache


def dropout_bwd(cache: DropoutCache, dy: Array) -> tuple[Array, Params]:
    """Backward of both dropouts. dy: y's shape -> dx = dy * mask (``dy`` in eval mode), {}."""
    op = cache.op
    check_dy(dy, cache.y_shape, cache.dtype, op)
    dx: Array = dy if cache.mask is None else dy * cache.mask
    return dx, {}


def _dropout_layer(type_name: str, rate: float, name: str | None) -> Layer:
    cfg = DropoutCfg(_check_rate(rate, f"{type_name}.rate"))
    spatial = type_name == "SpatialDropout2d"
    fwd = spatial_dropout2d_fwd if spatial else dropout_fwd

    def init(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        shape = tuple(int(d) for d in in_shape)
        if spatial:
            check_shape_in(shape, 3, "(C, H, W)", type_name)
        elif any(d < 1 for d in shape):
            raise ValueError(f"{type_name}: input shape must have sizes >= 1, got {shape}")
        return {}, {}, shape

    def apply(params: Params, state: State, x: Array, ctx: Context) -> tuple[Array, Any, State]:
        y, cache = fwd(params, x, cfg, train=bool(ctx.train), rng=ctx.rng)
        return y, cache, state

    spec = {"type": type_name, "rate": cfg.rate}
    return Layer(kind="dropout", init=init, apply=apply, backward=dropout_bwd, spec=spec, name=name)


def Dropout(rate: float, *, name: str | None = None) -> Layer:
    """Element-wise dropout with drop probability ``rate`` in [0, 1); any per-sample shape.

    Draws from ``Context.rng`` in train mode (a clear error if it is ``None``);
    the identity in eval mode. No params, no state.
    """
    return _dropout_layer("Dropout", rate, name)


def SpatialDropout2d(rate: float, *, name: str | None = None) -> Layer:
    """Channel dropout for conv maps (per-sample shape (C, H, W)): drops whole channels
    with probability ``rate`` in [0, 1), as PyTorch's ``Dropout2d``. No params, no state."""
    return _dropout_layer("SpatialDropout2d", rate, name)
