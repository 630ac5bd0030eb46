"""The batch-last memory layout the fast kernels work in.

Every array the library hands out has the public NCHW *shape* ``(N, C, H, W)``. The
im2col convolution and the pooling kernels keep their activations' *memory* in
``(C, H, W, N)`` order (batch innermost) and return NCHW-shaped views of it, much as
PyTorch's ``channels_last`` tensors are NCHW-shaped with NHWC memory::

    a = batch_last(x)        # x: (N, C, H, W), any strides -> a: (C, H, W, N), C-contiguous
    y = nchw_view(a)         # a: (C, H, W, N) -> y: (N, C, H, W), a view (no copy)
    p = padded_batch_last(x, ((1, 1), (1, 1)))   # (C, H + 2, W + 2, N), zeros around
    batch_last(y) is a view  # so a chain of layers converts once, at the network input

Why it is faster (docs/architecture.md#batch-last-memory-order): with the batch
innermost, every slice the kernels copy, add or compare (a kernel offset's window
origins, a pooling offset) has contiguous inner runs of ``OW * N`` or ``N``
elements instead of ``OW`` or a stride of 2, and the convolution's matrix product
comes out ``(F, OH, OW, N)``, already in that layout, so no transpose is ever
copied. Elementwise NumPy ops (ReLU, ``dy * mask``) keep their input's memory
order, so they stay batch-last too. ``xp.ascontiguousarray(y)`` gives C-ordered
NCHW memory when something needs it. Every function here works on the arrays of any
library (``ops.xp``): CuPy has the same strides and views.
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from .shapes import Pad2d
from .xp import namespace

__all__ = ["batch_last", "memory_flat", "nchw_view", "padded_batch_last"]

Array = NDArray[Any]


def batch_last(x: Array) -> Array:
    """x: (N, C, H, W) -> (C, H, W, N), C-contiguous; a view when x's memory is batch-last.

    Otherwise a copy (one transpose); ``x`` is never written.
    """
    a: Array = namespace(x).ascontiguousarray(x.transpose(1, 2, 3, 0))
    return a


def nchw_view(a: Array) -> Array:
    """a: (C, H, W, N) -> the (N, C, H, W) view of the same memory."""
    return a.transpose(3, 0, 1, 2)


def padded_batch_last(x: Array, padding: Pad2d, fill: float = 0.0) -> Array:
    """x: (N, C, H, W) -> (C, H + top + bottom, W + left + right, N), borders set to ``fill``.

    A view of ``x`` when there is no padding and x's memory is already batch-last;
    otherwise one copy (the transpose, if any, happens in it). ``x`` is not written.
    """
    (top, bottom), (left, right) = padding
    if not (top or bottom or left or right):
        return batch_last(x)
    n, c, h, w = x.shape
    xp = namespace(x)
    xpad: Array = xp.full((c, h + top + bottom, w + left + right, n), fill, dtype=x.dtype)
    xpad[:, top : top + h, left : left + w, :] = x.transpose(1, 2, 3, 0)
    return xpad


def memory_flat(a: Array) -> Array | None:
    """a: any shape -> its elements as a 1-D view in memory order, or ``None``.

    ``None`` when the elements do not fill one contiguous block (a strided slice,
    negative strides). Elementwise kernels use it to run one long loop over any
    dense layout, NCHW or batch-last alike.
    """
    order = sorted(range(a.ndim), key=lambda axis: a.strides[axis], reverse=True)
    v = a.transpose(order)
    if not v.flags.c_contiguous:
        return None
    flat: Array = v.reshape(-1)
    return flat
