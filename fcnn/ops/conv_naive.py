"""2-D convolution (cross-correlation, like PyTorch) by loops over output positions.

The readable reference and the test oracle for the fast kernels; not for training.
Shapes::

    x: (N, C, H, W)    w: (F, C, KH, KW)    b: (F,)    y: (N, F, OH, OW)

    OH = (H + pad_top + pad_bottom - KH) // stride_h + 1     (shapes.conv_out_size)
    OW = (W + pad_left + pad_right - KW) // stride_w + 1

    y[n, f, oh, ow] = b[f] + sum_{c,i,j} xpad[n, c, oh*sh + i, ow*sw + j] * w[f, c, i, j]
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from .shapes import Pad2d, out_hw
from .xp import namespace

__all__ = ["conv2d_naive_bwd", "conv2d_naive_fwd"]

Array = NDArray[Any]


def _pad(x: Array, padding: Pad2d) -> Array:
    """x: (N, C, H, W) -> (N, C, H + top + bottom, W + left + right), zeros around (a copy)."""
    (top, bottom), (left, right) = padding
    xpad: Array = namespace(x).pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    return xpad


def conv2d_naive_fwd(
    x: Array, w: Array, b: Array, stride: tuple[int, int], padding: Pad2d
) -> Array:
    """y: (N, F, OH, OW) from x: (N, C, H, W), w: (F, C, KH, KW), b: (F,)."""
    xp = namespace(x, w, b)
    n, _, h, width = x.shape
    f, _, kh, kw = w.shape
    sh, sw = stride
    oh, ow = out_hw(h, width, kh, kw, stride, padding)
    xpad = _pad(x, padding)
    y: Array = xp.empty((n, f, oh, ow), dtype=x.dtype)
    for r in range(oh):
        for s in range(ow):
            window = xpad[:, :, r * sh : r * sh + kh, s * sw : s * sw + kw]  # (N, C, KH, KW)
            y[:, :, r, s] = xp.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return y


def conv2d_naive_bwd(
    dy: Array, x: Array, w: Array, stride: tuple[int, int], padding: Pad2d
) -> tuple[Array, Array, Array]:
    """Gradients ``(dx, dw, db)`` of ``sum(y * dy)``.

    dy: (N, F, OH, OW), x: (N, C, H, W), w: (F, C, KH, KW)
    -> dx: (N, C, H, W), dw: (F, C, KH, KW), db: (F,).
    """
    xp = namespace(dy, x, w)
    _, _, h, width = x.shape
    _, _, kh, kw = w.shape
    sh, sw = stride
    (top, _), (left, _) = padding
    oh, ow = dy.shape[2], dy.shape[3]
    xpad = _pad(x, padding)
    dxpad = xp.zeros(xpad.shape, dtype=dy.dtype)
    dw = xp.zeros(w.shape, dtype=dy.dtype)
    for r in range(oh):
        for s in range(ow):
            g = dy[:, :, r, s]  # (N, F)
            rows, cols = slice(r * sh, r * sh + kh), slice(s * sw, s * sw + kw)
            dw += xp.tensordot(g, xpad[:, :, rows, cols], axes=([0], [0]))
            window = dxpad[:, :, rows, cols]  # added to in place, through the view
            window += xp.tensordot(g, w, axes=([1], [0]))
    dx = dxpad[:, :, top : top + h, left : left + width]
    db = dy.sum(axis=(0, 2, 3))
    return xp.ascontiguousarray(dx), dw, db
