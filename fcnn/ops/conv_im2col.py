"""2-D convolution as one matrix product over im2col columns (the default kernel).

Shapes::

    x: (N, C, H, W)    w: (F, C, KH, KW)    b: (F,)    y: (N, F, OH, OW)
    cols = im2col(x): (C*KH*KW, N*OH*OW)

    OH = (H + pad_top + pad_bottom - KH) // stride_h + 1     (shapes.conv_out_size)
    OW = (W + pad_left + pad_right - KW) // stride_w + 1

    y  = w.reshape(F, C*KH*KW) @ cols + b          (then reshaped to NCHW)
    dw = dy2 @ cols.T,  dcols = w2.T @ dy2,  dx = col2im(dcols)

Forward returns the columns so backward reuses them instead of unfolding ``x`` again.
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from ..backend import xp_of
from .im2col import col2im, im2col
from .shapes import Pad2d, conv_out_size

__all__ = ["conv2d_im2col_bwd", "conv2d_im2col_fwd"]

Array = NDArray[Any]


def conv2d_im2col_fwd(
    x: Array, w: Array, b: Array, stride: tuple[int, int], padding: Pad2d
) -> tuple[Array, Array]:
    """``(y, cols)``: y: (N, F, OH, OW), cols: (C*KH*KW, N*OH*OW) for the backward pass.

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,).
    """
    xp = xp_of(x, w, b)
    n, _, h, wd = x.shape
    f, _, kh, kw = w.shape
    (top, bottom), (left, right) = padding
    oh = conv_out_size(h, kh, stride[0], top, bottom, "H")
    ow = conv_out_size(wd, kw, stride[1], left, right, "W")
    cols = im2col(x, kh, kw, stride, padding)
    out = xp.matmul(w.reshape(f, -1), cols)  # (F, N*OH*OW)
    out += b[:, None]  # our own temporary: adding in place saves a copy
    y = out.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)  # columns are ordered (n, oh, ow)
    return xp.ascontiguousarray(y), cols


def conv2d_im2col_bwd(
    dy: Array,
    cols: Array,
    x_shape: tuple[int, ...],
    w: Array,
    stride: tuple[int, int],
    padding: Pad2d,
) -> tuple[Array, Array, Array]:
    """Gradients ``(dx, dw, db)`` of ``sum(y * dy)`` from the forward columns.

    dy: (N, F, OH, OW), cols: (C*KH*KW, N*OH*OW), w: (F, C, KH, KW)
    -> dx: ``x_shape`` = (N, C, H, W), dw: (F, C, KH, KW), db: (F,).
    """
    xp = xp_of(dy, cols, w)
    f, _, kh, kw = w.shape
    # (F, N*OH*OW) in the column order of cols (a copy when dy is NCHW-contiguous).
    dy2 = dy.transpose(1, 0, 2, 3).reshape(f, -1)
    db = dy.sum(axis=(0, 2, 3))
    dw = xp.matmul(dy2, cols.T).reshape(w.shape)
    dcols = xp.matmul(w.reshape(f, -1).T, dy2)  # (C*KH*KW, N*OH*OW)
    dx = col2im(dcols, x_shape, kh, kw, stride, padding)
    return dx, dw, db
