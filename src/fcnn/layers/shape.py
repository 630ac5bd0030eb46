"""Flatten: the pure pair ``flatten_fwd`` / ``flatten_bwd`` and the ``Flatten`` layer.

Keeps the batch axis and joins the rest, in C order; no parameters::

    y, cache = flatten_fwd({}, x)       # x: (N, D1, D2, ...) -> y: (N, D1*D2*...)
    dx, grads = flatten_bwd(cache, dy)  # dy: (N, D1*D2*...) -> dx: (N, D1, D2, ...), grads == {}

``y`` may be a view of ``x`` (a copy when ``x`` is not contiguous).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ._checks import Signature
from .base import Array, Layer, Params, Shape, State, pair_layer, to_spec

__all__ = ["Flatten", "FlattenCache", "flatten_bwd", "flatten_fwd"]

_SIG = Signature("flatten", x="(N, D1, ...)", y="(N, D)")


class FlattenCache(NamedTuple):
    """What ``flatten_bwd`` needs: the input shape (N, D1, ...) and y (N, D1*...), a view."""

    x_shape: tuple[int, ...]
    y: Array


def flatten_fwd(params: Params, x: Array, cfg: None = None) -> tuple[Array, FlattenCache]:
    """Flatten forward. params: {}; x: (N, D1, ...) with rank >= 2 -> y: (N, D1*...).

    Raises ``ValueError``/``TypeError`` starting with ``"flatten: "`` on bad input.
    """
    _SIG.check(params, x, cfg)
    y: Array = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    return y, FlattenCache(tuple(x.shape), y)


def flatten_bwd(cache: FlattenCache, dy: Array) -> tuple[Array, Params]:
    """Flatten backward. dy: (N, D1*...) -> dx: (N, D1, ...), grads ``{}``."""
    _SIG.check_dy(dy, y=cache.y)
    dx: Array = dy.reshape(cache.x_shape)
    return dx, {}


def Flatten(*, name: str | None = None) -> Layer:
    """A flatten layer: per-sample shape (D1, D2, ...) -> (D1*D2*...,); no parameters."""

    def init(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        return {}, {}, (math.prod(_SIG.check_init(in_shape, dtype)),)

    return pair_layer("flatten", flatten_fwd, flatten_bwd, None, init, to_spec("Flatten"), name)
