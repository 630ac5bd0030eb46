"""im2col / col2im: unfold convolution windows into columns, and fold them back.

For ``x: (N, C, H, W)``, a kernel ``KH x KW``, stride ``(sh, sw)``, padding
``((top, bottom), (left, right))`` and dilation ``(dh, dw)`` (default ``(1, 1)``)::

    cols = im2col(x, KH, KW, stride, padding)                 # (C*KH*KW, OH*OW*N)
    x_grad = col2im(cols, x.shape, KH, KW, stride, padding)   # (N, C, H, W)

    OH = (H + top + bottom - dh*(KH - 1) - 1) // sh + 1       (shapes.conv_out_size)
    OW = (W + left + right - dw*(KW - 1) - 1) // sw + 1

Kernel offset ``(i, j)`` reads padded pixel ``(oh*sh + i*dh, ow*sw + j*dw)``: dilation
only moves where each offset's slice starts.

Row ``(c, i, j)`` of the columns holds the input pixel at kernel offset ``(i, j)``
of channel ``c`` for every window ``(oh, ow, n)``, batch innermost. Both functions
work in the batch-last memory layout (``ops.layout``): the padded input is held as
``(C, Hp, Wp, N)``, so each kernel offset is one strided slice whose inner runs are
``OW * N`` (stride 1) or ``N`` elements long, and the loop runs over the kernel
offsets only. ``col2im`` is the exact adjoint of ``im2col``
(``<im2col(x), c> == <x, col2im(c)>``): overlapping windows accumulate with ``+=``,
entries that fall on padding are skipped (``shapes.inside_input``) and rows no window
touches get zero. It returns an NCHW-shaped view of batch-last memory.
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from .layout import batch_last, nchw_view, padded_batch_last
from .shapes import Pad2d, inside_input, out_hw
from .shims import copy_windows
from .xp import namespace

__all__ = ["col2im", "dy_matrix", "im2col"]

Array = NDArray[Any]


def im2col(
    x: Array,
    kh: int,
    kw: int,
    stride: tuple[int, int],
    padding: Pad2d,
    ones_row: bool = False,
    dilation: tuple[int, int] = (1, 1),
) -> Array:
    """Columns of every convolution window.

    x: (N, C, H, W) -> cols: (C*KH*KW, OH*OW*N), same dtype as ``x``; ``x`` is not written.
    With ``ones_row`` a last row of ones is appended, (C*KH*KW + 1, OH*OW*N), so that
    a weight matrix with the bias as its last column adds the bias in the product.
    """
    n, c, h, w = x.shape
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    xpad = padded_batch_last(x, padding)  # (C, Hp, Wp, N)
    k = c * kh * kw
    flat: Array = namespace(x).empty((k + int(ones_row), oh * ow * n), dtype=x.dtype)
    copy_windows(flat[:k].reshape(c, kh, kw, oh, ow, n), xpad, stride, dilation)
    if ones_row:
        flat[k] = 1
    return flat


def col2im(
    cols: Array,
    x_shape: tuple[int, ...],
    kh: int,
    kw: int,
    stride: tuple[int, int],
    padding: Pad2d,
    dilation: tuple[int, int] = (1, 1),
) -> Array:
    """Adjoint of ``im2col``: sum every column entry back onto its input pixel.

    cols: (C*KH*KW, OH*OW*N) -> (N, C, H, W) with ``H, W`` from ``x_shape``, same dtype
    as ``cols``, memory batch-last. Entries that fall on padding are dropped; pixels
    no window touches are zero.
    """
    xp = namespace(cols)
    n, c, h, w = (int(d) for d in x_shape)
    (top, _), (left, _) = padding
    sh, sw = stride
    dh, dw = dilation
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    expected = (c * kh * kw, oh * ow * n)
    if tuple(cols.shape) != expected:
        raise ValueError(f"col2im: cols must have shape {expected}, got {tuple(cols.shape)}")
    c6 = cols.reshape(c, kh, kw, oh, ow, n)
    # Each offset adds only the windows that read the input, straight into the
    # unpadded result: no padded buffer to crop afterwards (one pass less).
    rows = [inside_input(i * dh, sh, top, h, oh) for i in range(kh)]
    cols_at = [inside_input(j * dw, sw, left, w, ow) for j in range(kw)]
    offsets = [(i, j) for i in range(kh) for j in range(kw)]
    # An offset whose windows read every pixel once (stride 1, "same" padding): start
    # from a copy of it rather than from zeros (one pass less again).
    first = next(
        ((i, j) for i, j in offsets if _covers(rows[i][1], h) and _covers(cols_at[j][1], w)), None
    )
    if first is not None:
        (wr, _), (wc, _) = rows[first[0]], cols_at[first[1]]
        acc = xp.array(c6[:, first[0], first[1], wr, wc], copy=True, order="C")  # (C, H, W, N)
        offsets.remove(first)
    else:
        acc = xp.zeros((c, h, w, n), dtype=cols.dtype)
    for i, j in offsets:
        (wr, xr), (wc, xc) = rows[i], cols_at[j]
        # Overlapping windows hit the same pixel from different offsets: accumulate, in
        # place through the view (``acc[...] += v`` would also copy the view back).
        pixels = acc[:, xr, xc, :]
        pixels += c6[:, i, j, wr, wc]
    return nchw_view(acc)


def _covers(pixels: slice, size: int) -> bool:
    """Whether ``pixels`` (from ``inside_input``) names each of ``range(size)`` once."""
    return len(range(size)[pixels]) == size


def dy_matrix(dy: Array) -> Array:
    """An output gradient dy: (N, F, OH, OW) as (F, OH*OW*N), the column order of ``im2col``.

    A free view when dy's memory is batch-last, one transpose copy otherwise.
    """
    return batch_last(dy).reshape(dy.shape[1], -1)
