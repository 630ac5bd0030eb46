"""Flatten: the pure pair ``flatten_fwd`` / ``flatten_bwd`` and the ``Flatten`` layer.

Keeps the batch axis and joins the rest, in C order; no parameters::

    y, cache = flatten_fwd({}, x)       # x: (N, D1, D2, ...) -> y: (N, D1*D2*...)
    dx, grads = flatten_bwd(cache, dy)  # dy: (N, D1*D2*...) -> dx: (N, D1, D2, ...), grads == {}

``y`` may be a view of ``x`` (a copy when ``x`` is not contiguous).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ._checks import check_dy, check_float, check_no_cfg
from .base import Array, Layer, Params, Shape, State, pair_layer

__all__ = ["Flatten", "FlattenCache", "flatten_bwd", "flatten_fwd"]

_OP = "flatten"


class FlattenCache(NamedTuple):
    """What ``flatten_bwd`` needs: the input shape (N, D1, ...), y's shape and the dtype."""

    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    dtype: np.dtype[Any]


def flatten_fwd(params: Params, x: Array, cfg: None = None) -> tuple[Array, FlattenCache]:
    """Flatten forward. params: {}; x: (N, D1, ...) with rank >= 2 -> y: (N, D1*...).

    Raises ``ValueError``/``TypeError`` starting with ``"flatten: "`` on bad input.
    """
    check_no_cfg(params, cfg, _OP)
    check_float(x, _OP, "x")
    if x.ndim < 2:
        raise ValueError(f"{_OP}: x must have rank >= 2 (N, D1, ...), got shape {tuple(x.shape)}")
    x_shape = tuple(int(d) for d in x.shape)
    y: Array = x.reshape(x_shape[0], math.prod(x_shape[1:]))
    return y, FlattenCache(x_shape, tuple(y.shape), x.dtype)


def flatten_bwd(cache: FlattenCache, dy: Array) -> tuple[Array, Params]:
    """Flatten backward. dy: (N, D1*...) -> dx: (N, D1, ...), grads ``{}``."""
    check_dy(dy, cache.y_shape, cache.dtype, _OP)
    dx: Array = dy.reshape(cache.x_shape)
    return dx, {}


def Flatten(*, name: str | None = None) -> Layer:
    """A flatten layer: per-sample shape (D1, D2, ...) -> (D1*D2*...,); no parameters."""

    def init(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        shape = tuple(int(d) for d in in_shape)
        if len(shape) < 1 or any(d < 1 for d in shape):
            raise ValueError(
                f"Flatten: input shape must be (D1, ...) with rank >= 1 (no batch axis), "
                f"got {shape}"
            )
        return {}, {}, (math.prod(shape),)

    return pair_layer("flatten", flatten_fwd, flatten_bwd, None, init, {"type": "Flatten"}, name)
