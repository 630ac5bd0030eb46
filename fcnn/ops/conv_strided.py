"""2-D convolution with stride tricks: a read-only sliding-window view + tensordot.

Shapes::

    x: (N, C, H, W)    w: (F, C, KH, KW)    b: (F,)    y: (N, F, OH, OW)
    windows: (N, C, OH, OW, KH, KW)   a read-only view of the padded x (no copy)

    OH = (H + pad_top + pad_bottom - KH) // stride_h + 1     (shapes.conv_out_size)
    OW = (W + pad_left + pad_right - KW) // stride_w + 1

    y  = tensordot(windows, w) over (C, KH, KW)
    dw = tensordot(dy, windows) over (N, OH, OW)
    dx = dy dilated by the stride, padded by K - 1 (less the input padding), and
         correlated with the flipped kernel (the transposed convolution).

``sliding_window_view`` is NumPy-only, so this kernel runs on the CPU.
"""

from __future__ import annotations

from typing import Any

from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from ..backend import xp_of
from .shapes import Pad2d

__all__ = ["conv2d_strided_bwd", "conv2d_strided_fwd"]

Array = NDArray[Any]


def _windows(x: Array, kh: int, kw: int, stride: tuple[int, int], padding: Pad2d) -> Array:
    """Read-only view (N, C, OH, OW, KH, KW) of every window of the padded x: (N, C, H, W).

    Slicing the stride-1 windows by the stride leaves exactly ``conv_out_size`` of
    them per axis: ``ceil((Hp - KH + 1) / sh) == (Hp - KH) // sh + 1``.
    """
    xp = xp_of(x)
    (top, bottom), (left, right) = padding
    if top or bottom or left or right:
        x = xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    view = sliding_window_view(x, (kh, kw), axis=(2, 3))  # writeable=False by default
    return view[:, :, :: stride[0], :: stride[1]]


def conv2d_strided_fwd(
    x: Array, w: Array, b: Array, stride: tuple[int, int], padding: Pad2d
) -> tuple[Array, Array]:
    """``(y, windows)``: y: (N, F, OH, OW) and the window view backward reuses for ``dw``.

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,); windows: (N, C, OH, OW, KH, KW).
    """
    xp = xp_of(x, w, b)
    _, _, kh, kw = w.shape
    win = _windows(x, kh, kw, stride, padding)
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
    xp = xp_of(dy, w)
    n, f, oh, ow = dy.shape
    _, _, h, wd = (int(d) for d in x_shape)
    _, _, kh, kw = w.shape
    sh, sw = stride
    (top, _), (left, _) = padding
    db = dy.sum(axis=(0, 2, 3))
    dw = xp.tensordot(dy, windows, axes=([0, 2, 3], [0, 2, 3]))  # (F, C, KH, KW)

    # Transposed convolution: dx[h] = sum_i q[h + i] * w[KH - 1 - i], where q is dy
    # dilated by the stride and shifted so output row r sits at q row KH - 1 - top + r*sh.
    # q covers only the rows that reach the unpadded input (H + KH - 1 of them):
    # windows lying wholly in the padding are dropped, and rows past the last window
    # (stride not dividing H + pad - KH) stay zero.
    q = xp.zeros((n, f, h + kh - 1, wd + kw - 1), dtype=dy.dtype)
    rows = _placed(oh, sh, kh - 1 - top, h + kh - 1)
    cols = _placed(ow, sw, kw - 1 - left, wd + kw - 1)
    if rows is not None and cols is not None:
        (r0, r1, q0), (c0, c1, p0) = rows, cols
        q[:, :, q0 : q0 + (r1 - r0 - 1) * sh + 1 : sh, p0 : p0 + (c1 - c0 - 1) * sw + 1 : sw] = (
            dy[:, :, r0:r1, c0:c1]
        )
    qwin = sliding_window_view(q, (kh, kw), axis=(2, 3))  # (N, F, H, W, KH, KW)
    w_flip = w[:, :, ::-1, ::-1]
    dx = xp.tensordot(qwin, w_flip, axes=([1, 4, 5], [0, 2, 3]))  # (N, H, W, C)
    return xp.ascontiguousarray(dx.transpose(0, 3, 1, 2)), dw, db


def _placed(n_out: int, s: int, offset: int, size: int) -> tuple[int, int, int] | None:
    """Output rows ``[r0, r1)`` whose dilated position ``offset + r*s`` lies in ``[0, size)``,
    and the position of ``r0``; ``None`` when no row does."""
    last = size - 1 - offset  # offset + r*s <= size - 1
    if last < 0:
        return None
    r0 = 0 if offset >= 0 else (s - 1 - offset) // s  # smallest r with offset + r*s >= 0
    r1 = min(n_out, last // s + 1)
    if r0 >= r1:
        return None
    return r0, r1, offset + r0 * s
