"""Max and average pooling kernels on bare arrays and ints.

For ``x: (N, C, H, W)``, a window ``KH x KW``, stride ``(sh, sw)`` and padding
``((top, bottom), (left, right))``::

    y = max_pool2d_fwd(x, (KH, KW), stride, padding)              # (N, C, OH, OW)
    dx = max_pool2d_bwd(dy, x, y, (KH, KW), stride, padding)       # (N, C, H, W)
    y = avg_pool2d_fwd(x, (KH, KW), stride, padding)
    dx = avg_pool2d_bwd(dy, x.shape, (KH, KW), stride, padding)

    OH = (H + top + bottom - KH) // sh + 1              (shapes.conv_out_size)
    OW = (W + left + right - KW) // sw + 1

Every kernel loops over the window offsets ``(i, j)`` only: each step is one
strided slice of the padded input (or of the padded gradient buffer), combined
with ``maximum`` or ``+``. Within one offset a slice has no repeated indices, so
``+=`` is exact; overlapping windows (stride < window) accumulate across offsets.

- Max pooling pads with ``-inf`` of the input's dtype, so padded cells never win.
  Backward routes each window's gradient to exactly one element, the *first*
  maximum in row-major window order (ties go to the earliest offset).
- Average pooling pads with zeros and always divides by ``KH * KW`` (PyTorch's
  default ``count_include_pad=True``).

Rows and columns that no window touches (the stride does not divide
``H + pad - KH``) get zero gradient. Nothing here writes into an argument.
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from ..backend import xp_of
from .shapes import Pad2d, conv_out_size

__all__ = ["avg_pool2d_bwd", "avg_pool2d_fwd", "max_pool2d_bwd", "max_pool2d_fwd", "pool_out_hw"]

Array = NDArray[Any]


def pool_out_hw(
    h: int, w: int, window: tuple[int, int], stride: tuple[int, int], padding: Pad2d
) -> tuple[int, int]:
    """``(OH, OW)`` through the one output-size formula; ``ValueError`` if no window fits."""
    (top, bottom), (left, right) = padding
    oh = conv_out_size(h, window[0], stride[0], top, bottom, "H")
    ow = conv_out_size(w, window[1], stride[1], left, right, "W")
    return oh, ow


def _padded(x: Array, padding: Pad2d, fill: float) -> Array:
    """x: (N, C, H, W) -> (N, C, H + top + bottom, W + left + right), borders set to ``fill``.

    Returns ``x`` itself (not a copy) when there is no padding; callers only read it.
    """
    (top, bottom), (left, right) = padding
    if not (top or bottom or left or right):
        return x
    xp = xp_of(x)
    n, c, h, w = x.shape
    out: Array = xp.full((n, c, h + top + bottom, w + left + right), fill, dtype=x.dtype)
    out[:, :, top : top + h, left : left + w] = x
    return out


def _cropped(buf: Array, x_shape: tuple[int, ...], padding: Pad2d) -> Array:
    """The (N, C, H, W) interior of a padded gradient buffer, as a contiguous array."""
    (top, _), (left, _) = padding
    h, w = int(x_shape[2]), int(x_shape[3])
    out: Array = xp_of(buf).ascontiguousarray(buf[:, :, top : top + h, left : left + w])
    return out


def _windows(
    oh: int, ow: int, window: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[slice, slice]]:
    """The (rows, cols) slices of the padded input seen at each window offset, row-major."""
    kh, kw = window
    sh, sw = stride
    return [
        (slice(i, i + sh * oh, sh), slice(j, j + sw * ow, sw)) for i in range(kh) for j in range(kw)
    ]


def max_pool2d_fwd(
    x: Array, window: tuple[int, int], stride: tuple[int, int], padding: Pad2d
) -> Array:
    """Max over each window. x: (N, C, H, W) -> y: (N, C, OH, OW), same dtype as ``x``."""
    xp = xp_of(x)
    oh, ow = pool_out_hw(x.shape[2], x.shape[3], window, stride, padding)
    xpad = _padded(x, padding, -float("inf"))
    offsets = _windows(oh, ow, window, stride)
    rows, cols = offsets[0]
    y: Array = xp.array(xpad[:, :, rows, cols], copy=True)
    for rows, cols in offsets[1:]:
        xp.maximum(y, xpad[:, :, rows, cols], out=y)
    return y


def max_pool2d_bwd(
    dy: Array,
    x: Array,
    y: Array,
    window: tuple[int, int],
    stride: tuple[int, int],
    padding: Pad2d,
) -> Array:
    """Gradient of max pooling: each window's ``dy`` goes to its first maximum.

    dy, y: (N, C, OH, OW); x: (N, C, H, W) -> dx: (N, C, H, W) in ``dy``'s dtype.
    ``y`` must be ``max_pool2d_fwd(x, ...)`` (ties are found by exact equality).
    """
    xp = xp_of(dy, x, y)
    oh, ow = int(y.shape[2]), int(y.shape[3])
    xpad = _padded(x, padding, -float("inf"))
    buf = xp.zeros(xpad.shape, dtype=dy.dtype)
    # ``free`` marks windows whose maximum has not been claimed yet; a later equal
    # maximum in the same window must not get the gradient a second time.
    free = xp.ones(y.shape, dtype=bool)
    offsets = _windows(oh, ow, window, stride)
    for k, (rows, cols) in enumerate(offsets):
        hit = xpad[:, :, rows, cols] == y
        hit &= free
        buf[:, :, rows, cols] += dy * hit
        if k + 1 < len(offsets):
            free ^= hit  # hit is a subset of free: this clears the claimed windows
    return _cropped(buf, tuple(x.shape), padding)


def avg_pool2d_fwd(
    x: Array, window: tuple[int, int], stride: tuple[int, int], padding: Pad2d
) -> Array:
    """Mean over each window (zeros padded, divisor ``KH * KW``).

    x: (N, C, H, W) -> y: (N, C, OH, OW), same dtype as ``x``.
    """
    xp = xp_of(x)
    oh, ow = pool_out_hw(x.shape[2], x.shape[3], window, stride, padding)
    xpad = _padded(x, padding, 0.0)
    offsets = _windows(oh, ow, window, stride)
    rows, cols = offsets[0]
    y: Array = xp.array(xpad[:, :, rows, cols], copy=True)
    for rows, cols in offsets[1:]:
        y += xpad[:, :, rows, cols]
    y /= window[0] * window[1]
    return y


def avg_pool2d_bwd(
    dy: Array,
    x_shape: tuple[int, ...],
    window: tuple[int, int],
    stride: tuple[int, int],
    padding: Pad2d,
) -> Array:
    """Gradient of average pooling: every cell of a window gets ``dy / (KH * KW)``.

    dy: (N, C, OH, OW) -> dx: (N, C, H, W) with ``H, W`` from ``x_shape``, in ``dy``'s dtype.
    """
    xp = xp_of(dy)
    n, c, h, w = (int(d) for d in x_shape)
    (top, bottom), (left, right) = padding
    oh, ow = int(dy.shape[2]), int(dy.shape[3])
    share = dy / (window[0] * window[1])
    buf = xp.zeros((n, c, h + top + bottom, w + left + right), dtype=dy.dtype)
    for rows, cols in _windows(oh, ow, window, stride):
        buf[:, :, rows, cols] += share
    return _cropped(buf, (n, c, h, w), padding)
