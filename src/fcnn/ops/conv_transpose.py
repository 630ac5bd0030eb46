"""2-D transposed convolution: a convolution's input gradient, run as a forward pass.

Shapes::

    x: (N, C, H, W)    w: (C, F, KH, KW)    b: (F,)    y: (N, F, OH, OW)

    OH = (H - 1) * sh - top - bottom + KH + output_padding_h   (shapes.conv_transpose_out_size)
    OW = (W - 1) * sw - left - right + KW + output_padding_w

Take the convolution ``conv`` with weights ``w`` read as ``(C filters, F channels, KH,
KW)``, this stride and padding: it maps ``z: (N, F, OH, OW)`` to ``(N, C, H, W)`` and is
linear in ``z``, ``conv(z) = A z``. The transposed convolution is ``y = A.T x + b``, so
each of its passes is a pass of ``conv`` (docs/conv_transpose.md)::

    y  = conv2d_input_grad(dy=x, w) + b      the convolution's backward for dx
    dx = conv(dy)                            the convolution's forward (no bias)
    dw = conv2d_weight_grad(x=dy, dy=x)      the convolution's dw, the roles swapped
    db = sum of dy over (N, OH, OW)

``output_padding`` (``< stride``) picks which of the ``stride`` input sizes that all
convolve to ``H`` is meant: it adds rows and columns at the bottom and right of
``conv``'s padded input, which no window of ``conv`` reads, so ``y`` there is ``b`` alone
(unless the padding crops them).

Two kernels: ``*_im2col_*`` are the three im2col pieces of ``ops.conv_im2col`` (``y`` and
``dx`` in batch-last memory); ``*_naive_*`` compute the forward by the textbook recipe (zeros
between the rows of ``x``, the kernel flipped, a full correlation with
``conv2d_naive_fwd``) and serve as the reference.
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from .conv_im2col import conv2d_im2col_fwd, conv2d_im2col_input_grad, conv2d_im2col_param_grads
from .conv_naive import conv2d_naive_bwd, conv2d_naive_fwd
from .shapes import Pad2d, conv_transpose_out_size
from .xp import namespace

__all__ = [
    "conv_transpose2d_im2col_bwd",
    "conv_transpose2d_im2col_fwd",
    "conv_transpose2d_naive_bwd",
    "conv_transpose2d_naive_fwd",
    "conv_transpose_out_hw",
]

Array = NDArray[Any]


def conv_transpose_out_hw(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: tuple[int, int],
    padding: Pad2d,
    output_padding: tuple[int, int],
) -> tuple[int, int]:
    """``(OH, OW)``: ``conv_transpose_out_size`` per axis (``ValueError`` below 1)."""
    (top, bottom), (left, right) = padding
    return (
        conv_transpose_out_size(
            int(x_shape[2]), int(w_shape[2]), stride[0], top, bottom, output_padding[0], "H"
        ),
        conv_transpose_out_size(
            int(x_shape[3]), int(w_shape[3]), stride[1], left, right, output_padding[1], "W"
        ),
    )


def conv_transpose2d_im2col_fwd(
    x: Array,
    w: Array,
    b: Array,
    stride: tuple[int, int],
    padding: Pad2d,
    output_padding: tuple[int, int],
) -> Array:
    """y: (N, F, OH, OW) from x: (N, C, H, W), w: (C, F, KH, KW), b: (F,); batch-last memory."""
    oh, ow = conv_transpose_out_hw(x.shape, w.shape, stride, padding, output_padding)
    y_shape = (x.shape[0], w.shape[1], oh, ow)
    y = conv2d_im2col_input_grad(x, y_shape, w, stride, padding)  # A.T x: our own new array
    y += b[:, None, None]
    return y


def conv_transpose2d_im2col_bwd(
    dy: Array, x: Array, w: Array, stride: tuple[int, int], padding: Pad2d
) -> tuple[Array, Array, Array]:
    """Gradients ``(dx, dw, db)`` of ``sum(y * dy)``.

    dy: (N, F, OH, OW), x: (N, C, H, W), w: (C, F, KH, KW) -> dx: (N, C, H, W) (batch-last
    memory), dw: (C, F, KH, KW), db: (F,).
    """
    no_bias = namespace(dy, w).zeros(w.shape[0], dtype=w.dtype)
    dx, cols = conv2d_im2col_fwd(dy, w, no_bias, stride, padding)  # A dy, and dy's columns
    dw, _ = conv2d_im2col_param_grads(x, cols, w)  # x in the role of the convolution's dy
    return dx, dw, dy.sum(axis=(0, 2, 3))


def conv_transpose2d_naive_fwd(
    x: Array,
    w: Array,
    b: Array,
    stride: tuple[int, int],
    padding: Pad2d,
    output_padding: tuple[int, int],
) -> Array:
    """y: (N, F, OH, OW) from x: (N, C, H, W), w: (C, F, KH, KW), b: (F,), the textbook way.

    ``x`` with ``stride - 1`` zeros between its rows (columns), ``KH - 1`` zero rows around
    (and ``output_padding`` more at the end) is correlated with the flipped kernel, its
    two channel axes swapped; the padding is then cropped off.
    """
    xp = namespace(x, w, b)
    n, c, h, width = x.shape
    kh, kw = w.shape[2], w.shape[3]
    (sh, sw), ((top, bottom), (left, right)) = stride, padding
    conv_transpose_out_hw(x.shape, w.shape, stride, padding, output_padding)  # the error
    spread_h, spread_w = (h - 1) * sh + 1, (width - 1) * sw + 1  # x with zeros between
    rows = spread_h + 2 * (kh - 1) + output_padding[0]  # KH - 1 zero rows around, op more
    cols = spread_w + 2 * (kw - 1) + output_padding[1]
    z = xp.zeros((n, c, rows, cols), dtype=x.dtype)
    z[:, :, kh - 1 : kh - 1 + spread_h : sh, kw - 1 : kw - 1 + spread_w : sw] = x
    flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (F, C, KH, KW)
    full = conv2d_naive_fwd(z, flipped, b, (1, 1), ((0, 0), (0, 0)))
    y: Array = xp.ascontiguousarray(
        full[:, :, top : full.shape[2] - bottom, left : full.shape[3] - right]
    )
    return y


def conv_transpose2d_naive_bwd(
    dy: Array, x: Array, w: Array, stride: tuple[int, int], padding: Pad2d
) -> tuple[Array, Array, Array]:
    """Gradients ``(dx, dw, db)``, by the convolution's reference kernels.

    dy: (N, F, OH, OW), x: (N, C, H, W), w: (C, F, KH, KW) -> dx: (N, C, H, W),
    dw: (C, F, KH, KW), db: (F,).
    """
    no_bias = namespace(dy, w).zeros(w.shape[0], dtype=w.dtype)
    dx = conv2d_naive_fwd(dy, w, no_bias, stride, padding)  # A dy
    _, dw, _ = conv2d_naive_bwd(x, dy, w, stride, padding)  # x in the role of dy
    return dx, dw, dy.sum(axis=(0, 2, 3))
