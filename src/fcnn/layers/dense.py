"""Fully connected layer: the pure pair ``dense_fwd`` / ``dense_bwd`` and the ``Dense`` layer.

    y, cache = dense_fwd({"w": w, "b": b}, x)     # y = x @ w + b
    dx, grads = dense_bwd(cache, dy)              # grads = {"w": dw, "b": db}

    x: (N, D_in)   w: (D_in, D_out)   b: (D_out,)   y, dy: (N, D_out)

Images (N, C, H, W) go through ``Flatten()`` first.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ._checks import Signature, positive_int
from .base import Array, Layer, Params, Shape, State, pair_layer, to_spec

__all__ = ["Dense", "DenseCache", "dense_bwd", "dense_fwd"]

_SIG = Signature(
    "dense",
    x="(N, D_in)",
    y="(N, D_out)",
    params={"w": "(D_in, D_out)", "b": "(D_out,)"},
    words={"D_in": "feature"},
    rank_hint="insert Flatten() before Dense",
)


class DenseCache(NamedTuple):
    """What ``dense_bwd`` needs: the input x: (N, D_in) and the weights w: (D_in, D_out)."""

    x: Array
    w: Array


def dense_fwd(params: Params, x: Array, cfg: None = None) -> tuple[Array, DenseCache]:
    """Dense forward. params: {"w": (D_in, D_out), "b": (D_out,)}; x: (N, D_in) -> y: (N, D_out).

    x, w and b must share one floating dtype; y has that dtype. Raises
    ``ValueError``/``TypeError`` starting with ``"dense: "`` on bad input.
    """
    w, b = _SIG.check(params, x, cfg)
    y: Array = x @ w + b
    return y, DenseCache(x, w)


def dense_bwd(cache: DenseCache, dy: Array) -> tuple[Array, Params]:
    """Dense backward. dy: (N, D_out) -> dx: (N, D_in), {"w": (D_in, D_out), "b": (D_out,)}."""
    x, w = cache
    _SIG.check_dy(dy, x=x, w=w)
    dx: Array = dy @ w.T
    dw: Array = x.T @ dy
    db: Array = dy.sum(axis=0)
    return dx, {"w": dw, "b": db}


def Dense(out_features: int, *, name: str | None = None) -> Layer:
    """A fully connected layer with ``out_features`` outputs.

    ``init`` takes the per-sample shape (D_in,) and returns (D_out,); weights are
    He-normal (std ``sqrt(2 / D_in)``), biases zero.
    """
    d_out = positive_int(out_features, _SIG.op, "out_features")

    def init(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        (d_in,) = _SIG.check_init(in_shape, dtype)
        w = (rng.standard_normal((d_in, d_out)) * math.sqrt(2.0 / d_in)).astype(dtype)
        params: Params = {"w": w, "b": np.zeros((d_out,), dtype=dtype)}
        return params, {}, (d_out,)

    spec = to_spec("Dense", out_features=d_out)
    return pair_layer("dense", dense_fwd, dense_bwd, None, init, spec, name)
