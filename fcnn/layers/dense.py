"""Fully connected layer: the pure pair ``dense_fwd`` / ``dense_bwd`` and the ``Dense`` layer.

    y, cache = dense_fwd({"w": w, "b": b}, x)     # y = x @ w + b
    dx, grads = dense_bwd(cache, dy)              # grads = {"w": dw, "b": db}

    x: (N, D_in)   w: (D_in, D_out)   b: (D_out,)   y, dy: (N, D_out)

Images (N, C, H, W) go through ``Flatten()`` first.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ._checks import check_dy, check_float, check_params, check_rank, check_same_dtype
from .base import Array, Layer, Params, Shape, State, pair_layer

__all__ = ["Dense", "DenseCache", "dense_bwd", "dense_fwd"]

_OP = "dense"


class DenseCache(NamedTuple):
    """What ``dense_bwd`` needs: the input x: (N, D_in) and the weights w: (D_in, D_out)."""

    x: Array
    w: Array


def _check_inputs(params: Any, x: Any, cfg: Any) -> tuple[Array, Array]:
    """Validate ``params``, ``x`` and ``cfg``; return ``w`` and ``b``."""
    check_params(params, ("w", "b"), _OP)
    if cfg is not None:
        raise TypeError(f"{_OP}: takes no cfg, got {type(cfg).__name__}")
    w, b = params["w"], params["b"]
    check_float(x, _OP, "x")
    check_float(w, _OP, "w")
    check_float(b, _OP, "b")
    check_same_dtype(_OP, x=x, w=w, b=b)
    if x.ndim != 2:
        hint = "; insert Flatten() before Dense" if x.ndim > 2 else ""
        raise ValueError(f"{_OP}: x must have rank 2 (N, D_in), got shape {tuple(x.shape)}{hint}")
    check_rank(w, 2, "(D_in, D_out)", _OP, "w")
    d_in, d_out = w.shape
    if tuple(b.shape) != (d_out,):
        raise ValueError(f"{_OP}: b must have shape (D_out,) = ({d_out},), got {tuple(b.shape)}")
    if x.shape[1] != d_in:
        raise ValueError(f"{_OP}: x has {x.shape[1]} features but w expects D_in = {d_in}")
    return w, b


def dense_fwd(params: Params, x: Array, cfg: None = None) -> tuple[Array, DenseCache]:
    """Dense forward. params: {"w": (D_in, D_out), "b": (D_out,)}; x: (N, D_in) -> y: (N, D_out).

    x, w and b must share one floating dtype; y has that dtype. Raises
    ``ValueError``/``TypeError`` starting with ``"dense: "`` on bad input.
    """
    w, b = _check_inputs(params, x, cfg)
    y: Array = x @ w + b
    return y, DenseCache(x, w)


def dense_bwd(cache: DenseCache, dy: Array) -> tuple[Array, Params]:
    """Dense backward. dy: (N, D_out) -> dx: (N, D_in), {"w": (D_in, D_out), "b": (D_out,)}."""
    x, w = cache
    check_dy(dy, (x.shape[0], w.shape[1]), w.dtype, _OP)
    dx: Array = dy @ w.T
    dw: Array = x.T @ dy
    db: Array = dy.sum(axis=0)
    return dx, {"w": dw, "b": db}


def Dense(out_features: int, *, name: str | None = None) -> Layer:
    """A fully connected layer with ``out_features`` outputs.

    ``init`` takes the per-sample shape (D_in,) and returns (D_out,); weights are
    He-normal (std ``sqrt(2 / D_in)``), biases zero.
    """
    if isinstance(out_features, bool) or not isinstance(out_features, int | np.integer):
        raise TypeError(f"Dense.out_features must be an int, got {out_features!r}")
    if out_features < 1:
        raise ValueError(f"Dense.out_features must be >= 1, got {out_features!r}")
    d_out = int(out_features)

    def init(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        shape = tuple(int(d) for d in in_shape)
        if len(shape) != 1 or shape[0] < 1:
            hint = "; insert Flatten() before Dense" if len(shape) > 1 else ""
            raise ValueError(
                f"Dense: input shape must be (D_in,) (no batch axis), got {shape}{hint}"
            )
        if not np.issubdtype(np.dtype(dtype), np.floating):
            raise TypeError(f"Dense: dtype must be a floating dtype, got {np.dtype(dtype)}")
        (d_in,) = shape
        w = (rng.standard_normal((d_in, d_out)) * math.sqrt(2.0 / d_in)).astype(dtype)
        params: Params = {"w": w, "b": np.zeros((d_out,), dtype=dtype)}
        return params, {}, (d_out,)

    spec = {"type": "Dense", "out_features": d_out}
    return pair_layer("dense", dense_fwd, dense_bwd, None, init, spec, name)
