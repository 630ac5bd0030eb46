"""Where NumPy and a device library part ways: one small function per operation.

The kernels read as NumPy code and run unchanged on CuPy (``ops.xp``). A few operations
are fast on the host in one form and on a GPU in another, because a GPU pays for every
kernel launch and a CPU for every pass over memory. Each such operation is one function
here, with the NumPy form (the CPU's, as measured in benchmarks/) and the device form (any
other library; on the CPU the tests run it on a foreign test double, tests/foreign.py).
docs/gpu.md lists them and says why.

    copy_windows(cols, xpad, stride, dilation)
                                       im2col's unfolding: a loop of KH*KW slice copies
                                       (NumPy) or one copy from a strided window view
    channel_sum(a), channel_dot(a, b)  per-channel sums over (N, C, ...): einsum (NumPy),
                                       one reduction kernel elsewhere (CuPy's einsum runs
                                       several, and a product then a sum runs two)
    may_hold_nan(y)                    whether max pooling's backward must look for NaN:
                                       a check on the host, "yes" on a device (a check
                                       there would wait for the device)
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from .xp import fused, is_numpy, namespace

__all__ = ["channel_dot", "channel_sum", "copy_windows", "may_hold_nan", "window_view"]

Array = NDArray[Any]


def window_view(
    xpad: Array,
    kh: int,
    kw: int,
    stride: tuple[int, int],
    oh: int,
    ow: int,
    dilation: tuple[int, int] = (1, 1),
) -> Array:
    """Every window of a batch-last padded map as a view: xpad (C, Hp, Wp, N) ->
    (C, KH, KW, OH, OW, N), element ``[c, i, j, r, s, n] = xpad[c, i*dh + r*sh, j*dw + s*sw, n]``.

    A strided view of ``xpad``'s memory (no copy); do not write into it.
    """
    c, _, _, n = xpad.shape
    s_c, s_h, s_w, s_n = xpad.strides
    sh, sw = stride
    dh, dw = dilation
    shape = (c, kh, kw, oh, ow, n)
    strides = (s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw, s_n)
    view: Array = namespace(xpad).lib.stride_tricks.as_strided(xpad, shape, strides)
    return view


def copy_windows(
    cols: Array, xpad: Array, stride: tuple[int, int], dilation: tuple[int, int] = (1, 1)
) -> None:
    """Fill ``cols`` (C, KH, KW, OH, OW, N) with the windows of xpad (C, Hp, Wp, N), the
    window's taps ``dilation`` apart.

    NumPy: one slice copy per kernel offset, each with long contiguous runs (the fast
    form on a CPU, docs/architecture.md#batch-last-memory-order). Elsewhere: one copy
    from ``window_view``, one kernel instead of KH*KW.
    """
    _, kh, kw, oh, ow, _ = cols.shape
    sh, sw = stride
    dh, dw = dilation
    if not is_numpy(namespace(cols, xpad)):
        cols[...] = window_view(xpad, kh, kw, stride, oh, ow, dilation)
        return
    for i in range(kh):
        for j in range(kw):
            r, s = i * dh, j * dw  # where offset (i, j)'s windows start
            cols[:, i, j] = xpad[:, r : r + sh * oh : sh, s : s + sw * ow : sw, :]


def _channel_major(a: Array) -> Array:
    """a: (N, C, ...) -> (N, C, M) with M the product of the rest (a view for the layouts
    the library makes; a copy otherwise)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def channel_sum(a: Array) -> Array:
    """Per-channel sum of a: (N, C, ...) -> (C,), in a's dtype."""
    xp = namespace(a)
    a3 = _channel_major(a)
    if is_numpy(xp):
        out: Array = xp.einsum("nci->c", a3)  # one pass, no temporary
        return out
    summed: Array = a3.sum(axis=(0, 2))
    return summed


def channel_dot(a: Array, b: Array) -> Array:
    """Per-channel ``sum(a * b)`` of two (N, C, ...) arrays -> (C,), in their dtype."""
    xp = namespace(a, b)
    a3, b3 = _channel_major(a), _channel_major(b)
    if is_numpy(xp):
        out: Array = xp.einsum("nci,nci->c", a3, b3)  # without the product array
        return out
    summed: Array = _sum_of_products(a3, b3)
    return summed


@fused
def _sum_of_products(xp: Any, a: Array, b: Array) -> Array:
    """sum(a * b) over axes 0 and 2 of two (N, C, M) arrays -> (C,): one fused reduction."""
    out: Array = xp.sum(a * b, axis=(0, 2))
    return out


def may_hold_nan(y: Array) -> bool:
    """Whether some window's maximum in y may be NaN (max pooling's backward then also
    routes gradients to NaN cells).

    NumPy: ``max`` propagates NaN, so one reduction answers exactly. Elsewhere: ``True``
    without looking, since reading the answer would wait for the device; the backward
    is then right for any input, at the price of one ``isnan`` per window offset.
    """
    xp = namespace(y)
    if not is_numpy(xp):
        return True
    return bool(y.size) and bool(xp.isnan(y.max()))
