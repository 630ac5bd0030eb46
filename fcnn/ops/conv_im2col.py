"""2-D convolution as one matrix product over im2col columns (the default kernel).

Shapes::

    x: (N, C, H, W)    w: (F, C, KH, KW)    b: (F,)    y: (N, F, OH, OW)
    cols = im2col(x) with a row of ones: (C*KH*KW + 1, OH*OW*N)
    w2 = w.reshape(F, C*KH*KW)      wb = [w2 | b]: (F, C*KH*KW + 1)

    OH = (H + pad_top + pad_bottom - KH) // stride_h + 1     (shapes.conv_out_size)
    OW = (W + pad_left + pad_right - KW) // stride_w + 1

    y  = wb @ cols          (F, OH*OW*N): batch-last memory, returned as an NCHW view
    dy2 = dy as (F, OH*OW*N)
    [dw | db] = dy2 @ cols.T,   dcols = w2.T @ dy2,   dx = col2im(dcols)

The ones row folds the bias into the products: no pass over y to add ``b`` and no
separate reduction over dy for ``db``.
Activations stay in the batch-last layout (``ops.layout``): ``y`` is a view of the
product, and ``dy2`` is a free reshape when ``dy`` is batch-last too (what the
library's layers hand back), so neither pass copies a transpose.
Forward returns the columns so backward reuses them instead of unfolding ``x`` again.
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from .im2col import col2im, dy_matrix, im2col
from .layout import nchw_view
from .shapes import Pad2d, out_hw
from .xp import namespace

__all__ = ["conv2d_im2col_bwd", "conv2d_im2col_fwd", "conv2d_im2col_param_grads"]

Array = NDArray[Any]


def conv2d_im2col_fwd(
    x: Array, w: Array, b: Array, stride: tuple[int, int], padding: Pad2d
) -> tuple[Array, Array]:
    """``(y, cols)``: y: (N, F, OH, OW), cols: (C*KH*KW + 1, OH*OW*N) for the backward pass.

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,). ``y``'s memory is batch-last.
    """
    xp = namespace(x, w, b)
    n, _, h, width = x.shape
    f, _, kh, kw = w.shape
    oh, ow = out_hw(h, width, kh, kw, stride, padding)
    cols = im2col(x, kh, kw, stride, padding, ones_row=True)
    wb = xp.concatenate([w.reshape(f, -1), b[:, None]], axis=1)  # (F, C*KH*KW + 1)
    out = xp.matmul(wb, cols)  # (F, OH*OW*N): one GEMM, bias included
    return nchw_view(out.reshape(f, oh, ow, n)), cols


def conv2d_im2col_bwd(
    dy: Array,
    cols: Array,
    x_shape: tuple[int, ...],
    w: Array,
    stride: tuple[int, int],
    padding: Pad2d,
) -> tuple[Array, Array, Array]:
    """Gradients ``(dx, dw, db)`` of ``sum(y * dy)`` from the forward columns.

    dy: (N, F, OH, OW), cols: (C*KH*KW + 1, OH*OW*N), w: (F, C, KH, KW)
    -> dx: ``x_shape`` = (N, C, H, W) (batch-last memory), dw: (F, C, KH, KW), db: (F,).
    """
    xp = namespace(dy, w)
    f, _, kh, kw = w.shape
    dw, db = conv2d_im2col_param_grads(dy, cols, w)
    dcols = xp.matmul(w.reshape(f, -1).T, dy_matrix(dy))  # (C*KH*KW, OH*OW*N)
    dx = col2im(dcols, x_shape, kh, kw, stride, padding)
    return dx, dw, db


def conv2d_im2col_param_grads(dy: Array, cols: Array, w: Array) -> tuple[Array, Array]:
    """``(dw, db)`` alone, for a first layer whose input needs no gradient.

    dy: (N, F, OH, OW), cols: (C*KH*KW + 1, OH*OW*N), w: (F, C, KH, KW)
    -> dw: (F, C, KH, KW), db: (F,). Skipping ``dx`` saves a GEMM and a col2im.
    db is the column of the ones row.
    """
    xp = namespace(dy, cols, w)
    dy2 = dy_matrix(dy)  # (F, OH*OW*N)
    # A long, thin product (K = OH*OW*N): OpenBLAS runs it faster with the larger
    # of the two result dimensions as rows.
    wide = cols.shape[0] > dy2.shape[0]
    dwb = xp.matmul(cols, dy2.T).T if wide else xp.matmul(dy2, cols.T)  # (F, C*KH*KW + 1)
    dw = xp.ascontiguousarray(dwb[:, :-1]).reshape(w.shape)
    db = xp.ascontiguousarray(dwb[:, -1])
    return dw, db
