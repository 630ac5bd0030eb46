"""2-D convolution as one matrix product over im2col columns (the default kernel).

Shapes::

    x: (N, C, H, W)    w: (F, C, KH, KW)    b: (F,)    y: (N, F, OH, OW)
    cols = im2col(x) with a row of ones: (C*KH*KW + 1, OH*OW*N)
    w2 = w.reshape(F, C*KH*KW)      wb = [w2 | b]: (F, C*KH*KW + 1)

    OH = (H + pad_top + pad_bottom - dilation_h*(KH - 1) - 1) // stride_h + 1
    OW = (W + pad_left + pad_right - dilation_w*(KW - 1) - 1) // stride_w + 1
    (shapes.conv_out_size; dilation (1, 1) by default)

    y  = wb @ cols          (F, OH*OW*N): batch-last memory, returned as an NCHW view
    dy2 = dy as (F, OH*OW*N)
    [dw | db] = dy2 @ cols.T,   dcols = w2.T @ dy2,   dx = col2im(dcols)

The ones row folds the bias into the products: no pass over y to add ``b`` and no
separate reduction over dy for ``db``.
Activations stay in the batch-last layout (``ops.layout``): ``y`` is a view of the
product, and ``dy2`` is a free reshape when ``dy`` is batch-last too (what the
library's layers hand back), so neither pass copies a transpose.
Forward returns the columns so backward reuses them instead of unfolding ``x`` again.

Groups (``groups = G``): ``w`` is ``(F, C/G, KH, KW)`` and filter block ``g`` (``F/G``
filters) sees only channel block ``g``. The columns' rows are ordered ``(c, i, j)``, so
group ``g``'s rows are one contiguous block, and each product above becomes a stack of
``G`` products (``_grouped``); the bias is then added on its own. ``groups == 1`` takes
the single products above unchanged.

``conv2d_im2col_input_grad`` (``dx`` alone, ``col2im(w2.T @ dy2)``) is also the forward
pass of the transposed convolution (``ops.conv_transpose``).
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from .im2col import col2im, dy_matrix, im2col
from .layout import nchw_view
from .shapes import Pad2d, out_hw
from .xp import namespace

__all__ = [
    "conv2d_im2col_bwd",
    "conv2d_im2col_fwd",
    "conv2d_im2col_input_grad",
    "conv2d_im2col_param_grads",
]

Array = NDArray[Any]


def _grouped(a: Array, b: Array, groups: int) -> Array:
    """The ``groups`` products ``a_g @ b_g`` stacked: a: (G, P, Q), b: (G, Q, M) -> (G*P, M).

    Callers pass row blocks as ``_blocks(...)`` and transposes as ``.transpose(0, 2, 1)``
    views; BLAS runs each group's product. With ``Q == 1`` (dx of a depthwise convolution
    with one filter per channel) each product is an outer product, which NumPy's matmul
    does not hand to BLAS: a broadcast multiply is several times faster there.
    """
    xp = namespace(a, b)
    out: Array = a * b if a.shape[2] == 1 else xp.matmul(a, b)  # (G, P, M), C-contiguous
    return out.reshape(groups * a.shape[1], -1)


def _blocks(a: Array, groups: int) -> Array:
    """a: (G*P, M) -> its G row blocks (G, P, M), a view of C-contiguous memory."""
    return a.reshape(groups, a.shape[0] // groups, a.shape[1])


def conv2d_im2col_fwd(
    x: Array,
    w: Array,
    b: Array,
    stride: tuple[int, int],
    padding: Pad2d,
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> tuple[Array, Array]:
    """``(y, cols)``: y: (N, F, OH, OW), cols: (C*KH*KW + 1, OH*OW*N) for the backward pass.

    x: (N, C, H, W), w: (F, C/groups, KH, KW), b: (F,). ``y``'s memory is batch-last.
    """
    xp = namespace(x, w, b)
    n, _, h, width = x.shape
    f, _, kh, kw = w.shape
    oh, ow = out_hw(h, width, kh, kw, stride, padding, dilation)
    cols = im2col(x, kh, kw, stride, padding, ones_row=True, dilation=dilation)
    if groups > 1:
        # one product per group over its block of rows; the ones row is not used here
        out_g = _grouped(_blocks(w.reshape(f, -1), groups), _blocks(cols[:-1], groups), groups)
        out_g += b[:, None]  # our own product: adding in place saves a copy
        return nchw_view(out_g.reshape(f, oh, ow, n)), cols
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
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> tuple[Array, Array, Array]:
    """Gradients ``(dx, dw, db)`` of ``sum(y * dy)`` from the forward columns.

    dy: (N, F, OH, OW), cols: (C*KH*KW + 1, OH*OW*N), w: (F, C/groups, KH, KW)
    -> dx: ``x_shape`` = (N, C, H, W) (batch-last memory), dw: w's shape, db: (F,).
    """
    dw, db = conv2d_im2col_param_grads(dy, cols, w, groups)
    dx = conv2d_im2col_input_grad(dy, x_shape, w, stride, padding, dilation, groups)
    return dx, dw, db


def conv2d_im2col_input_grad(
    dy: Array,
    x_shape: tuple[int, ...],
    w: Array,
    stride: tuple[int, int],
    padding: Pad2d,
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> Array:
    """``dx`` alone: dy: (N, F, OH, OW), w: (F, C/groups, KH, KW) -> dx: ``x_shape`` =
    (N, C, H, W), batch-last memory, dy's dtype. Needs no columns of ``x``.

    ``col2im(w2.T @ dy2)``: each window's contribution, added back onto the pixels it
    read. With ``dy`` in the role of an input this is the transposed convolution.
    """
    xp = namespace(dy, w)
    f, _, kh, kw = w.shape
    if groups > 1:
        w3 = _blocks(w.reshape(f, -1), groups).transpose(0, 2, 1)  # (G, C/G*KH*KW, F/G)
        dcols = _grouped(w3, _blocks(dy_matrix(dy), groups), groups)
    else:
        dcols = xp.matmul(w.reshape(f, -1).T, dy_matrix(dy))  # (C*KH*KW, OH*OW*N)
    dx = col2im(dcols, x_shape, kh, kw, stride, padding, dilation)
    return dx


def conv2d_im2col_param_grads(
    dy: Array, cols: Array, w: Array, groups: int = 1
) -> tuple[Array, Array]:
    """``(dw, db)`` alone, for a first layer whose input needs no gradient.

    dy: (N, F, OH, OW), cols: (C*KH*KW + 1, OH*OW*N), w: (F, C/groups, KH, KW)
    -> dw: w's shape, db: (F,). Skipping ``dx`` saves a GEMM and a col2im.
    db is the column of the ones row.
    """
    xp = namespace(dy, cols, w)
    dy2 = dy_matrix(dy)  # (F, OH*OW*N)
    if groups > 1:
        cols_t = _blocks(cols[:-1], groups).transpose(0, 2, 1)  # (G, OH*OW*N, C/G*KH*KW)
        dw_g = _grouped(_blocks(dy2, groups), cols_t, groups).reshape(w.shape)
        return dw_g, dy2.sum(axis=1)
    # A long, thin product (K = OH*OW*N): OpenBLAS runs it faster with the larger
    # of the two result dimensions as rows.
    wide = cols.shape[0] > dy2.shape[0]
    dwb = xp.matmul(cols, dy2.T).T if wide else xp.matmul(dy2, cols.T)  # (F, C*KH*KW + 1)
    dw = xp.ascontiguousarray(dwb[:, :-1]).reshape(w.shape)
    db = xp.ascontiguousarray(dwb[:, -1])
    return dw, db
