"""im2col / col2im: unfold convolution windows into columns, and fold them back.

For ``x: (N, C, H, W)``, a kernel ``KH x KW``, stride ``(sh, sw)`` and padding
``((top, bottom), (left, right))``::

    cols = im2col(x, KH, KW, stride, padding)           # (C*KH*KW, N*OH*OW)
    x_grad = col2im(cols, x.shape, KH, KW, stride, padding)   # (N, C, H, W)

    OH = (H + top + bottom - KH) // sh + 1              (shapes.conv_out_size)
    OW = (W + left + right - KW) // sw + 1

Row ``(c, i, j)`` of the columns holds the input pixel at kernel offset ``(i, j)``
of channel ``c`` for every window ``(n, oh, ow)``. Both functions loop over the
kernel offsets only: each step copies (or adds) one strided slice of the padded
input, so the inner runs are long and contiguous in the columns. ``col2im`` is
the exact adjoint of ``im2col`` (``<im2col(x), c> == <x, col2im(c)>``): overlapping
windows accumulate with ``+=`` and the padding is cropped at the end; rows no
window touches get zero.
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from ..backend import xp_of
from .shapes import Pad2d, conv_out_size

__all__ = ["col2im", "im2col"]

Array = NDArray[Any]


def _out_hw(
    h: int, w: int, kh: int, kw: int, stride: tuple[int, int], padding: Pad2d
) -> tuple[int, int]:
    """``(OH, OW)`` through the one output-size formula."""
    (top, bottom), (left, right) = padding
    oh = conv_out_size(h, kh, stride[0], top, bottom, "H")
    ow = conv_out_size(w, kw, stride[1], left, right, "W")
    return oh, ow


def im2col(x: Array, kh: int, kw: int, stride: tuple[int, int], padding: Pad2d) -> Array:
    """Columns of every convolution window.

    x: (N, C, H, W) -> cols: (C*KH*KW, N*OH*OW), same dtype as ``x``; ``x`` is not written.
    """
    xp = xp_of(x)
    n, c, h, w = x.shape
    (top, bottom), (left, right) = padding
    sh, sw = stride
    oh, ow = _out_hw(h, w, kh, kw, stride, padding)
    # Channel-first (C, N, Hp, Wp) so each copied slice lines up with a (N, OH, OW) block.
    xt = x.transpose(1, 0, 2, 3)
    if top or bottom or left or right:
        xpad = xp.zeros((c, n, h + top + bottom, w + left + right), dtype=x.dtype)
        xpad[:, :, top : top + h, left : left + w] = xt
    else:
        xpad = xt
    cols: Array = xp.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xpad[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
    return cols.reshape(c * kh * kw, n * oh * ow)


def col2im(
    cols: Array,
    x_shape: tuple[int, ...],
    kh: int,
    kw: int,
    stride: tuple[int, int],
    padding: Pad2d,
) -> Array:
    """Adjoint of ``im2col``: sum every column entry back onto its input pixel.

    cols: (C*KH*KW, N*OH*OW) -> (N, C, H, W) with ``H, W`` from ``x_shape``, same dtype
    as ``cols``. Padding rows are dropped; pixels no window touches are zero.
    """
    xp = xp_of(cols)
    n, c, h, w = (int(d) for d in x_shape)
    (top, bottom), (left, right) = padding
    sh, sw = stride
    oh, ow = _out_hw(h, w, kh, kw, stride, padding)
    expected = (c * kh * kw, n * oh * ow)
    if tuple(cols.shape) != expected:
        raise ValueError(f"col2im: cols must have shape {expected}, got {tuple(cols.shape)}")
    c6 = cols.reshape(c, kh, kw, n, oh, ow)
    acc = xp.zeros((c, n, h + top + bottom, w + left + right), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # Overlapping windows hit the same pixel from different offsets: accumulate.
            acc[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] += c6[:, i, j]
    out = acc[:, :, top : top + h, left : left + w].transpose(1, 0, 2, 3)
    dx: Array = xp.ascontiguousarray(out)
    return dx
