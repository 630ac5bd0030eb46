"""2-D convolution with stride tricks: a read-only sliding-window view + tensordot.

Shapes::

    x: (N, C, H, W)    w: (F, C, KH, KW)    b: (F,)    y: (N, F, OH, OW)
    windows: (N, C, OH, OW, KH, KW)   a read-only view of the padded x (no copy)

    OH = (H + pad_top + pad_bottom - KH) // stride_h + 1     (shapes.conv_out_size)
    OW = (W + pad_left + pad_right - KW) // stride_w + 1

    y  = tensordot(windows, w) over (C, KH, KW)
    dw = tensordot(dy, windows) over (N, OH, OW)
    dx = col2im(w.reshape(F, C*KH*KW).T @ dy2)    the transposed convolution, through
         the same columns as the im2col kernel (dy2: dy as (F, OH*OW*N), see im2col)

The window view is ``lib.stride_tricks.sliding_window_view`` of the input's library
(NumPy's or CuPy's).
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from .im2col import col2im, dy_matrix
from .shapes import Pad2d, out_hw
from .xp import namespace

__all__ = ["conv2d_strided_bwd", "conv2d_strided_fwd"]

Array = NDArray[Any]


def _window_view(x: Array, kh: int, kw: int, stride: tuple[int, int], padding: Pad2d) -> Array:
    """Read-only view (N, C, OH, OW, KH, KW) of every window of the padded x: (N, C, H, W).

    Slicing the stride-1 windows by the stride leaves exactly ``conv_out_size`` of
    them per axis: ``ceil((Hp - KH + 1) / sh) == (Hp - KH) // sh + 1``.
    """
    xp = namespace(x)
    out_hw(x.shape[2], x.shape[3], kh, kw, stride, padding)  # the error when no window fits
    (top, bottom), (left, right) = padding
    if top or bottom or left or right:
        x = xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    # writeable=False by default
    view: Array = xp.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return view[:, :, :: stride[0], :: stride[1]]


def conv2d_strided_fwd(
    x: Array, w: Array, b: Array, stride: tuple[int, int], padding: Pad2d
) -> tuple[Array, Array]:
    """``(y, windows)``: y: (N, F, OH, OW) and the window view backward reuses for ``dw``.

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,); windows: (N, C, OH, OW, KH, KW).
    """
    xp = namespace(x, w, b)
    _, _, kh, kw = w.shape
    win = _window_view(x, kh, kw, stride, padding)
    out = xp.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # (N, OH, OW, F)
    out += b  # our own temporary: adding in place saves a copy
    return xp.ascontiguousarray(out.transpose(0, 3, 1, 2)), win


def conv2d_strided_bwd(
    dy: Array,
    windows: Array,
    x_shape: tuple[int, ...],
    w: Array,
    stride: tuple[int, int],
    padding: Pad2d,
) -> tuple[Array, Array, Array]:
    """Gradients ``(dx, dw, db)`` of ``sum(y * dy)``.

    dy: (N, F, OH, OW), windows: (N, C, OH, OW, KH, KW) from the forward pass,
    w: (F, C, KH, KW) -> dx: ``x_shape`` = (N, C, H, W), dw: (F, C, KH, KW), db: (F,).
    """
    xp = namespace(dy, windows, w)
    f, _, kh, kw = w.shape
    db = dy.sum(axis=(0, 2, 3))
    dw = xp.tensordot(dy, windows, axes=([0, 2, 3], [0, 2, 3]))  # (F, C, KH, KW)
    # dx is the transposed convolution. Through the columns it is one matrix product
    # and an offset loop (col2im), rather than a correlation of a dilated, padded dy
    # with the flipped kernel through a window view, which reads many zeros.
    dcols = xp.matmul(w.reshape(f, -1).T, dy_matrix(dy))  # (C*KH*KW, OH*OW*N)
    dx = col2im(dcols, x_shape, kh, kw, stride, padding)
    return dx, dw, db
