"""The rectified linear unit: the pure pair ``relu_fwd`` / ``relu_bwd`` and the ``Relu`` layer.

Elementwise, any input rank, no parameters (``params`` must be ``{}``)::

    y, cache = relu_fwd({}, x)          # x: (...) -> y: (...), y = max(x, 0)
    dx, grads = relu_bwd(cache, dy)     # dx = dy * (x > 0), grads == {}

The derivative at exactly 0 is taken as 0 (like PyTorch).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ..backend import xp_of
from ._checks import check_float, check_no_cfg
from .base import Array, Layer, Params, Shape, State, pair_layer

__all__ = ["Relu", "ReluCache", "relu_bwd", "relu_fwd"]

_OP = "relu"


class ReluCache(NamedTuple):
    """What ``relu_bwd`` needs: the mask ``x > 0`` (bool, x's shape) and x's dtype."""

    mask: Array
    dtype: np.dtype[Any]


def relu_fwd(params: Params, x: Array, cfg: None = None) -> tuple[Array, ReluCache]:
    """ReLU forward. params: {}; x: (...) float -> y: (...) = max(x, 0), x's dtype.

    Raises ``ValueError``/``TypeError`` starting with ``"relu: "`` on bad input.
    """
    check_no_cfg(params, cfg, _OP)
    check_float(x, _OP, "x")
    xp = xp_of(x)
    mask = x > 0
    # maximum rather than x * mask: -inf * 0 would be NaN. Against a zeros array of
    # x's layout rather than a scalar 0: NumPy's same-layout loop is ~1.6x faster.
    y: Array = xp.maximum(x, xp.zeros_like(x))
    return y, ReluCache(mask, x.dtype)


def relu_bwd(cache: ReluCache, dy: Array) -> tuple[Array, Params]:
    """ReLU backward. dy: (...) like y -> dx: (...) = dy * (x > 0), grads ``{}``."""
    check_float(dy, _OP, "dy")
    if tuple(dy.shape) != tuple(cache.mask.shape):
        raise ValueError(
            f"{_OP}: dy must have the shape of y {tuple(cache.mask.shape)}, got {tuple(dy.shape)}"
        )
    if dy.dtype != cache.dtype:
        raise TypeError(f"{_OP}: dtypes must match, but x is {cache.dtype}, dy is {dy.dtype}")
    dx: Array = dy * cache.mask
    return dx, {}


def Relu(*, name: str | None = None) -> Layer:
    """A ReLU layer: any per-sample shape, returned unchanged by ``init``; no parameters."""

    def init(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        return {}, {}, tuple(int(d) for d in in_shape)

    return pair_layer("relu", relu_fwd, relu_bwd, None, init, {"type": "Relu"}, name)
