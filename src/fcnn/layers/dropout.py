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
deterministic. The generator belongs to x's library: a ``numpy.random.Generator`` for
NumPy arrays, ``cupy.random.Generator`` for CuPy arrays (``fcnn.device_generator``
derives one from the run's generator), so the mask is drawn where x lives. In eval
mode, or with ``rate == 0``, nothing is drawn, ``rng`` may be ``None`` and ``y`` is
``x`` itself.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..ops.xp import is_numpy, namespace
from ._checks import RNG, TRAIN, Signature
from .base import Array, Layer, Params, pair_layer, to_spec

__all__ = [
    "Dropout",
    "DropoutCache",
    "DropoutCfg",
    "SpatialDropout2d",
    "dropout_bwd",
    "dropout_fwd",
    "spatial_dropout2d_fwd",
]


@dataclass(frozen=True, init=False)
class DropoutCfg:
    """``rate``: the probability of dropping an element (or channel), in [0, 1)."""

    rate: float

    def __init__(self, rate: float) -> None:
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(f"DropoutCfg.rate must be a number in [0, 1), got {rate!r}")
        if not 0.0 <= float(rate) < 1.0:  # also rejects NaN
            raise ValueError(f"DropoutCfg.rate must be in [0, 1), got {rate!r}")
        object.__setattr__(self, "rate", float(rate))


class DropoutCache(NamedTuple):
    """What ``dropout_bwd`` needs: the op name, y (its shape and dtype) and the scaled
    ``mask`` (``keep / (1 - rate)`` in x's dtype, broadcastable to y) or ``None`` for
    the identity (eval mode or rate 0)."""

    op: str
    y: Array
    mask: Array | None


_EXTRAS = {"train": TRAIN, "rng": RNG}
_SIGS = {
    "dropout": Signature("dropout", x="(N, ...)", cfg=DropoutCfg, extras=_EXTRAS),
    "spatial_dropout2d": Signature(
        "spatial_dropout2d", x="(N, C, H, W)", cfg=DropoutCfg, extras=_EXTRAS
    ),
}


def _dropout(
    sig: Signature, params: Params, x: Array, cfg: DropoutCfg, train: bool, rng: Any, spatial: bool
) -> tuple[Array, DropoutCache]:
    """y = x * mask with the scaled mask drawn for (N, ...) or, ``spatial``, (N, C, 1, 1)."""
    sig.check(params, x, cfg, train=train, rng=rng)
    if not train or cfg.rate == 0.0:
        return x, DropoutCache(sig.op, x, None)
    if rng is None:
        raise ValueError(
            f"{sig.op}: train mode needs a numpy.random.Generator to draw the mask "
            "(Context(train=True, rng=np.random.default_rng(seed))), got rng=None"
        )
    xp = namespace(x)
    if is_numpy(xp) != isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{sig.op}: x is a {xp.__name__} array but rng is a {type(rng).__module__} "
            "generator; draw the mask with a generator of x's library "
            "(fcnn.device_generator(xp, rng))"
        )
    mask_shape = (x.shape[0], x.shape[1], 1, 1) if spatial else x.shape
    # float32 uniforms are plenty to decide keep/drop and half the cost of float64.
    keep = rng.random(mask_shape, dtype=np.float32) >= cfg.rate
    mask: Array = keep.astype(x.dtype) * (1.0 / (1.0 - cfg.rate))  # a Python float: no promotion
    y: Array = x * mask
    return y, DropoutCache(sig.op, y, mask)


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
    return _dropout(_SIGS["dropout"], params, x, cfg, train, rng, spatial=False)


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
    return _dropout(_SIGS["spatial_dropout2d"], params, x, cfg, train, rng, spatial=True)


def dropout_bwd(cache: DropoutCache, dy: Array) -> tuple[Array, Params]:
    """Backward of both dropouts. dy: y's shape -> dx = dy * mask (``dy`` in eval mode), {}."""
    _SIGS[cache.op].check_dy(dy, y=cache.y)
    dx: Array = dy if cache.mask is None else dy * cache.mask
    return dx, {}


def _dropout_layer(type_name: str, fwd: Any, rate: float, name: str | None) -> Layer:
    cfg = DropoutCfg(rate)
    sig = _SIGS["spatial_dropout2d" if type_name == "SpatialDropout2d" else "dropout"]
    spec = to_spec(type_name, cfg)
    return pair_layer("dropout", fwd, dropout_bwd, cfg, sig.kept_shape_init, spec, name)


def Dropout(rate: float, *, name: str | None = None) -> Layer:
    """Element-wise dropout with drop probability ``rate`` in [0, 1); any per-sample shape.

    Draws from ``Context.rng`` in train mode (a clear error if it is ``None``);
    the identity in eval mode. No params, no state.
    """
    return _dropout_layer("Dropout", dropout_fwd, rate, name)


def SpatialDropout2d(rate: float, *, name: str | None = None) -> Layer:
    """Channel dropout for conv maps (per-sample shape (C, H, W)): drops whole channels
    with probability ``rate`` in [0, 1), as PyTorch's ``Dropout2d``. No params, no state."""
    return _dropout_layer("SpatialDropout2d", spatial_dropout2d_fwd, rate, name)
