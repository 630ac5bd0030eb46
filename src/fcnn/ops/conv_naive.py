"""2-D convolution (cross-correlation, like PyTorch) by loops over output positions.

The readable reference and the test oracle for the fast kernels; not for training.
Shapes::

    x: (N, C, H, W)    w: (F, C, KH, KW)    b: (F,)    y: (N, F, OH, OW)

    OH = (H + pad_top + pad_bottom - dh*(KH - 1) - 1) // stride_h + 1   (shapes.conv_out_size)
    OW = (W + pad_left + pad_right - dw*(KW - 1) - 1) // stride_w + 1

    y[n, f, oh, ow] = b[f] + sum_{c,i,j} xpad[n, c, oh*sh + i*dh, ow*sw + j*dw] * w[f, c, i, j]

with dilation ``(dh, dw)``, ``(1, 1)`` by default. With ``groups = G``, ``w`` is
``(F, C/G, KH, KW)`` and the convolution is, by definition, ``G`` independent ones: filter
block ``g`` of ``F/G`` filters over channel block ``g`` of ``C/G`` channels, their outputs
stacked along the channel axis (``_by_groups``).
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from .shapes import Pad2d, dilated_span, out_hw
from .xp import namespace

__all__ = ["conv2d_naive_bwd", "conv2d_naive_fwd"]

Array = NDArray[Any]


def _pad(x: Array, padding: Pad2d) -> Array:
    """x: (N, C, H, W) -> (N, C, H + top + bottom, W + left + right), zeros around (a copy)."""
    (top, bottom), (left, right) = padding
    xpad: Array = namespace(x).pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    return xpad


def _group(a: Array, axis: int, g: int, groups: int) -> Array:
    """Block ``g`` of ``groups`` equal blocks of ``a`` along ``axis`` (a view)."""
    size = a.shape[axis] // groups
    index = [slice(None)] * a.ndim
    index[axis] = slice(g * size, (g + 1) * size)
    return a[tuple(index)]


def conv2d_naive_fwd(
    x: Array,
    w: Array,
    b: Array,
    stride: tuple[int, int],
    padding: Pad2d,
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> Array:
    """y: (N, F, OH, OW) from x: (N, C, H, W), w: (F, C/groups, KH, KW), b: (F,)."""
    xp = namespace(x, w, b)
    if groups > 1:
        parts = [
            conv2d_naive_fwd(
                _group(x, 1, g, groups),
                _group(w, 0, g, groups),
                _group(b, 0, g, groups),
                stride,
                padding,
                dilation,
            )
            for g in range(groups)
        ]
        stacked: Array = xp.concatenate(parts, axis=1)
        return stacked
    n, _, h, width = x.shape
    f, _, kh, kw = w.shape
    sh, sw = stride
    dh, dw = dilation
    span_h, span_w = dilated_span(kh, dh), dilated_span(kw, dw)
    oh, ow = out_hw(h, width, kh, kw, stride, padding, dilation)
    xpad = _pad(x, padding)
    y: Array = xp.empty((n, f, oh, ow), dtype=x.dtype)
    for r in range(oh):
        for s in range(ow):
            rows, cols = slice(r * sh, r * sh + span_h, dh), slice(s * sw, s * sw + span_w, dw)
            window = xpad[:, :, rows, cols]  # (N, C, KH, KW): every dh-th row from r*sh
            y[:, :, r, s] = xp.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return y


def conv2d_naive_bwd(
    dy: Array,
    x: Array,
    w: Array,
    stride: tuple[int, int],
    padding: Pad2d,
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> tuple[Array, Array, Array]:
    """Gradients ``(dx, dw, db)`` of ``sum(y * dy)``.

    dy: (N, F, OH, OW), x: (N, C, H, W), w: (F, C/groups, KH, KW)
    -> dx: (N, C, H, W), dw: w's shape, db: (F,).
    """
    xp = namespace(dy, x, w)
    if groups > 1:
        parts = [
            conv2d_naive_bwd(
                _group(dy, 1, g, groups),
                _group(x, 1, g, groups),
                _group(w, 0, g, groups),
                stride,
                padding,
                dilation,
            )
            for g in range(groups)
        ]
        dxs, dws, dbs = zip(*parts, strict=True)
        return xp.concatenate(dxs, axis=1), xp.concatenate(dws), xp.concatenate(dbs)
    _, _, h, width = x.shape
    _, _, kh, kw = w.shape
    sh, sw = stride
    dh, dw_ = dilation
    span_h, span_w = dilated_span(kh, dh), dilated_span(kw, dw_)
    (top, _), (left, _) = padding
    oh, ow = dy.shape[2], dy.shape[3]
    xpad = _pad(x, padding)
    dxpad = xp.zeros(xpad.shape, dtype=dy.dtype)
    dw = xp.zeros(w.shape, dtype=dy.dtype)
    for r in range(oh):
        for s in range(ow):
            g = dy[:, :, r, s]  # (N, F)
            rows, cols = slice(r * sh, r * sh + span_h, dh), slice(s * sw, s * sw + span_w, dw_)
            dw += xp.tensordot(g, xpad[:, :, rows, cols], axes=([0], [0]))
            window = dxpad[:, :, rows, cols]  # added to in place, through the view
            window += xp.tensordot(g, w, axes=([1], [0]))
    dx = dxpad[:, :, top : top + h, left : left + width]
    db = dy.sum(axis=(0, 2, 3))
    return xp.ascontiguousarray(dx), dw, db
