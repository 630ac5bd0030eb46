"""The rectified linear unit: the pure pair ``relu_fwd`` / ``relu_bwd`` and the ``Relu`` layer.

Elementwise, any input rank >= 1, no parameters (``params`` must be ``{}``)::

    y, cache = relu_fwd({}, x)          # x: (N, ...) -> y: (N, ...), y = max(x, 0)
    dx, grads = relu_bwd(cache, dy)     # dx = dy * (y > 0), grads == {}

The derivative at exactly 0 is taken as 0 (like PyTorch).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ..ops.layout import memory_flat
from ..ops.xp import fused, is_numpy, namespace
from ._checks import Signature
from .base import Array, Layer, Params, Shape, State, pair_layer, to_spec

__all__ = ["Relu", "ReluCache", "relu_bwd", "relu_fwd"]

_SIG = Signature("relu", x="(N, ...)")
_BLOCK = 4096  # elements of the zeros block ``_positive_part`` compares against


class ReluCache(NamedTuple):
    """What ``relu_bwd`` needs: the output y (x's shape and dtype); ``y > 0`` is ``x > 0``."""

    y: Array


def relu_fwd(params: Params, x: Array, cfg: None = None) -> tuple[Array, ReluCache]:
    """ReLU forward. params: {}; x: (N, ...) float -> y: (N, ...) = max(x, 0), x's dtype.

    The cache keeps ``y`` itself (do not write into it before ``relu_bwd``). Raises
    ``ValueError``/``TypeError`` starting with ``"relu: "`` on bad input.
    """
    _SIG.check(params, x, cfg)
    y = _positive_part(x)
    return y, ReluCache(y)


def _positive_part(x: Array) -> Array:
    """max(x, 0) elementwise: x: (...) -> (...), x's dtype and memory layout.

    ``maximum`` rather than ``x * mask``: -inf * 0 would be NaN. NumPy's ``maximum``
    has no fast loop for a scalar 0, so x's memory is compared, as rows of ``_BLOCK``
    elements, with one small zeros block, which the fast array-array loop takes; and
    no zeros array as large as x to fill and read.
    """
    xp = namespace(x)
    y: Array = xp.empty_like(x)
    src, dst = (memory_flat(x), memory_flat(y)) if is_numpy(xp) else (None, None)
    # empty_like keeps a dense x's layout, so src and dst list the same elements in turn.
    if src is None or dst is None:
        xp.maximum(x, 0, out=y)  # a strided x, or a device (one kernel): the plain way
        return y
    zeros = np.zeros(min(src.size, _BLOCK), dtype=x.dtype)
    rows = src.size // _BLOCK
    head = rows * _BLOCK
    if rows:
        np.maximum(src[:head].reshape(rows, _BLOCK), zeros, out=dst[:head].reshape(rows, _BLOCK))
    np.maximum(src[head:], zeros[: src.size - head], out=dst[head:])
    return y


def relu_bwd(cache: ReluCache, dy: Array) -> tuple[Array, Params]:
    """ReLU backward. dy: (N, ...) like y -> dx: (N, ...) = dy * (y > 0), grads ``{}``."""
    _SIG.check_dy(dy, y=cache.y)
    return _relu_grad(dy, cache.y), {}


@fused
def _relu_grad(xp: Any, dy: Array, y: Array) -> Array:
    """dy * (y > 0) elementwise (one kernel on a device)."""
    dx: Array = dy * (y > 0)
    return dx


def Relu(*, name: str | None = None) -> Layer:
    """A ReLU layer: any per-sample shape, returned unchanged by ``init``; no parameters."""

    def init(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        return {}, {}, _SIG.check_init(in_shape, dtype)

    return pair_layer("relu", relu_fwd, relu_bwd, None, init, to_spec("Relu"), name)
