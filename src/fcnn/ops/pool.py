"""Max and average pooling kernels on bare arrays and ints.

For ``x: (N, C, H, W)``, a window ``KH x KW``, stride ``(sh, sw)`` and padding
``((top, bottom), (left, right))``::

    y = max_pool2d_fwd(x, (KH, KW), stride, padding)              # (N, C, OH, OW)
    dx = max_pool2d_bwd(dy, x, y, (KH, KW), stride, padding)       # (N, C, H, W)
    y = avg_pool2d_fwd(x, (KH, KW), stride, padding)
    dx = avg_pool2d_bwd(dy, x.shape, (KH, KW), stride, padding)
    y = global_avg_pool2d_fwd(x)                                    # (N, C): mean over H, W
    dx = global_avg_pool2d_bwd(dy, x.shape)                         # dy: (N, C)

    OH = (H + top + bottom - KH) // sh + 1              (shapes.conv_out_size)
    OW = (W + left + right - KW) // sw + 1

Every kernel loops over the window offsets ``(i, j)`` only: each step is one
strided slice of the padded input (or of the padded gradient buffer), combined
with ``maximum`` or ``+``. Within one offset a slice has no repeated indices, so
``+=`` is exact; overlapping windows (stride < window) accumulate across offsets.
The kernels work in the batch-last memory layout (``ops.layout``): a slice of a
``(C, H, W, N)`` array has contiguous inner runs of N elements, where an NCHW
slice steps through memory two floats at a time. Inputs may have any strides; outputs are
NCHW-shaped views of batch-last memory.

- Max pooling pads with ``-inf`` of the input's dtype, so padded cells never win.
  Backward routes each window's gradient to exactly one element, the *first*
  maximum in row-major window order (ties go to the earliest offset). NaN
  propagates through the maximum, and a window whose maximum is NaN sends its
  gradient to its first NaN cell, on both backward paths.
- Average pooling pads with zeros and always divides by ``KH * KW`` (PyTorch's
  default ``count_include_pad=True``).

Rows and columns that no window touches (the stride does not divide
``H + pad - KH``) get zero gradient. Nothing here writes into an argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from numpy.typing import NDArray

from .layout import batch_last, nchw_view, padded_batch_last
from .shapes import Pad2d, out_hw
from .shims import may_hold_nan
from .xp import fused, is_numpy, namespace

__all__ = [
    "avg_pool2d_bwd",
    "avg_pool2d_fwd",
    "global_avg_pool2d_bwd",
    "global_avg_pool2d_fwd",
    "max_pool2d_bwd",
    "max_pool2d_fwd",
]

Array = NDArray[Any]


def _cropped(buf: Array, x_shape: tuple[int, ...], padding: Pad2d) -> Array:
    """The (N, C, H, W) interior of a padded batch-last gradient buffer (C, Hp, Wp, N)."""
    (top, bottom), (left, right) = padding
    if not (top or bottom or left or right):
        return nchw_view(buf)
    h, w = int(x_shape[2]), int(x_shape[3])
    out: Array = namespace(buf).ascontiguousarray(buf[:, top : top + h, left : left + w, :])
    return nchw_view(out)


def _window_slices(
    oh: int, ow: int, window: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[slice, slice]]:
    """The (rows, cols) slices of the padded input seen at each window offset, row-major."""
    kh, kw = window
    sh, sw = stride
    return [
        (slice(i, i + sh * oh, sh), slice(j, j + sw * ow, sw)) for i in range(kh) for j in range(kw)
    ]


def _is_max(cells: Array, yt: Array, nan_windows: bool) -> Array:
    """Which cells hold their window's maximum: cells, yt: (C, OH, OW, N) -> bool, same shape.

    ``cells == y``; and, when some window's maximum is NaN (``nan_windows``), its NaN
    cells too: NaN equals nothing, but only a window holding a NaN has a NaN maximum.
    """
    hit: Array = cells == yt
    if nan_windows:
        hit |= namespace(cells).isnan(cells)
    return hit


def _reduce_windows(
    xpad: Array,
    oh: int,
    ow: int,
    window: tuple[int, int],
    stride: tuple[int, int],
    combine: Callable[..., Any],
) -> Array:
    """``combine`` (``xp.maximum`` or ``xp.add``) over every window of xpad: (C, Hp, Wp, N).

    Returns (C, OH, OW, N). Separably: first over the KH row offsets on (C, OH, Wp, N)
    slices, then over the KW column offsets: KH + KW passes instead of KH * KW, and
    the first ones read whole contiguous rows.
    """
    kh, kw = window
    sh, sw = stride

    def row_offset(i: int) -> Array:
        return xpad[:, i : i + sh * oh : sh]  # (C, OH, Wp, N)

    # The first combine allocates the result: no separate copy of the first offset.
    rows = row_offset(0) if kh == 1 else combine(row_offset(0), row_offset(1))
    for i in range(2, kh):
        combine(rows, row_offset(i), out=rows)

    def col_offset(j: int) -> Array:
        return rows[:, :, j : j + sw * ow : sw]  # (C, OH, OW, N)

    if kw == 1:
        y: Array = namespace(xpad).array(col_offset(0), copy=True)  # never a view of x
    else:
        y = combine(col_offset(0), col_offset(1))
    for j in range(2, kw):
        combine(y, col_offset(j), out=y)
    return y


def max_pool2d_fwd(
    x: Array, window: tuple[int, int], stride: tuple[int, int], padding: Pad2d
) -> Array:
    """Max over each window. x: (N, C, H, W) -> y: (N, C, OH, OW), same dtype as ``x``."""
    oh, ow = out_hw(x.shape[2], x.shape[3], *window, stride, padding)
    xpad = padded_batch_last(x, padding, -float("inf"))
    return nchw_view(_reduce_windows(xpad, oh, ow, window, stride, namespace(x).maximum))


def max_pool2d_bwd(
    dy: Array,
    x: Array,
    y: Array,
    window: tuple[int, int],
    stride: tuple[int, int],
    padding: Pad2d,
) -> Array:
    """Gradient of max pooling: each window's ``dy`` goes to its first maximum.

    dy, y: (N, C, OH, OW); x: (N, C, H, W) -> dx: (N, C, H, W) in ``dy``'s dtype.
    ``y`` must be ``max_pool2d_fwd(x, ...)`` (ties are found by exact equality).
    """
    (top, bottom), (left, right) = padding
    disjoint = stride[0] >= window[0] and stride[1] >= window[1]
    if disjoint and not (top or bottom or left or right):
        return _max_pool2d_bwd_disjoint(dy, x, y, window, stride)
    return _max_pool2d_bwd_general(dy, x, y, window, stride, padding)


def _max_pool2d_bwd_general(
    dy: Array,
    x: Array,
    y: Array,
    window: tuple[int, int],
    stride: tuple[int, int],
    padding: Pad2d,
) -> Array:
    """``max_pool2d_bwd`` for any window, stride and padding (overlapping windows add up)."""
    xp = namespace(dy, x, y)
    oh, ow = int(y.shape[2]), int(y.shape[3])
    xpad = padded_batch_last(x, padding, -float("inf"))  # (C, Hp, Wp, N)
    yt, dyt = batch_last(y), batch_last(dy)
    buf = xp.zeros(xpad.shape, dtype=dy.dtype)
    # ``free`` marks windows whose maximum has not been claimed yet; a later equal
    # maximum in the same window must not get the gradient a second time.
    free = xp.ones(yt.shape, dtype=bool)
    nan_windows = may_hold_nan(yt)
    offsets = _window_slices(oh, ow, window, stride)
    for k, (rows, cols) in enumerate(offsets):
        hit = _is_max(xpad[:, rows, cols], yt, nan_windows)
        hit &= free
        cells = buf[:, rows, cols]  # added to in place, through the view
        cells += dyt * hit
        if k + 1 < len(offsets):
            free ^= hit  # hit is a subset of free: this clears the claimed windows
    return _cropped(buf, tuple(x.shape), padding)


def _max_pool2d_bwd_disjoint(
    dy: Array, x: Array, y: Array, window: tuple[int, int], stride: tuple[int, int]
) -> Array:
    """``max_pool2d_bwd`` when no two windows share a cell (stride >= window, no padding).

    The common 2x2 stride-2 case. Each cell of x is in one window at most, so every
    offset's ``dy * hit`` is written straight into its strided slice of dx: no
    padded gradient buffer, no ``+=`` and no dense mask (one window-sized boolean
    per offset), and no zero fill when the windows tile x exactly. Ties still go
    to the first maximum only, and a NaN window to its first NaN cell, as on the
    general path. The last offset takes every window not yet claimed without
    comparing (without padding, each window's maximum is one of its cells, so a
    window no earlier cell claimed has it in the last one): one comparison fewer.
    """
    xp = namespace(dy, x, y)
    n, c, h, w = (int(d) for d in x.shape)
    oh, ow = int(y.shape[2]), int(y.shape[3])
    xt, yt, dyt = batch_last(x), batch_last(y), batch_last(dy)
    tiled = tuple(stride) == tuple(window) and (oh * window[0], ow * window[1]) == (h, w)
    if tiled:
        dxt: Array = xp.empty((c, h, w, n), dtype=dy.dtype)  # every cell is written below
    else:
        dxt = xp.zeros((c, h, w, n), dtype=dy.dtype)
    offsets = _window_slices(oh, ow, window, stride)
    if not is_numpy(xp):
        # A device pays per kernel: every offset's share in one fused kernel, then one
        # copy per offset into its slice of dx.
        shares = _first_max_shares(yt, dyt, *(xt[:, rows, cols] for rows, cols in offsets))
        for (rows, cols), share in zip(offsets, shares, strict=True):
            dxt[:, rows, cols] = share
        return nchw_view(dxt)
    nan_windows = may_hold_nan(yt)
    free: Array | None = None  # windows whose maximum is still unclaimed
    last = len(offsets) - 1
    for k, (rows, cols) in enumerate(offsets):
        if k == last and free is not None:
            hit = free  # the windows whose maximum no earlier cell held
        else:
            hit = _is_max(xt[:, rows, cols], yt, nan_windows)
            if free is not None:
                hit &= free
        xp.multiply(dyt, hit, out=dxt[:, rows, cols])
        if k < last:
            free = ~hit if free is None else xp.logical_xor(free, hit, out=free)
    return nchw_view(dxt)


@fused
def _first_max_shares(xp: Any, yt: Array, dyt: Array, *cells: Array) -> tuple[Array, ...]:
    """Each window's gradient at each of its cells: yt, dyt and every cell (C, OH, OW, N),
    one cell per window offset in row-major order -> one (C, OH, OW, N) share per offset.

    The rule of ``_max_pool2d_bwd_disjoint``, elementwise: ``dyt`` goes to the first cell
    equal to the window's maximum (the first NaN cell of a window whose maximum is NaN);
    the last offset takes every window no earlier cell claimed.
    """
    shares = []
    free: Any = None
    for k, cells_k in enumerate(cells):
        if k == len(cells) - 1 and free is not None:
            hit = free
        else:
            hit = (cells_k == yt) | xp.isnan(cells_k)
            if free is not None:
                hit = hit & free
        shares.append(dyt * hit)
        free = ~hit if free is None else free & ~hit
    return tuple(shares)


def avg_pool2d_fwd(
    x: Array, window: tuple[int, int], stride: tuple[int, int], padding: Pad2d
) -> Array:
    """Mean over each window (zeros padded, divisor ``KH * KW``).

    x: (N, C, H, W) -> y: (N, C, OH, OW), same dtype as ``x``.
    """
    oh, ow = out_hw(x.shape[2], x.shape[3], *window, stride, padding)
    xpad = padded_batch_last(x, padding, 0.0)
    y = _reduce_windows(xpad, oh, ow, window, stride, namespace(x).add)
    y /= window[0] * window[1]
    return nchw_view(y)


def avg_pool2d_bwd(
    dy: Array,
    x_shape: tuple[int, ...],
    window: tuple[int, int],
    stride: tuple[int, int],
    padding: Pad2d,
) -> Array:
    """Gradient of average pooling: every cell of a window gets ``dy / (KH * KW)``.

    dy: (N, C, OH, OW) -> dx: (N, C, H, W) with ``H, W`` from ``x_shape``, in ``dy``'s dtype.
    """
    n, c, h, w = (int(d) for d in x_shape)
    (top, bottom), (left, right) = padding
    oh, ow = int(dy.shape[2]), int(dy.shape[3])
    share = batch_last(dy) / (window[0] * window[1])
    buf = namespace(dy).zeros((c, h + top + bottom, w + left + right, n), dtype=dy.dtype)
    for rows, cols in _window_slices(oh, ow, window, stride):
        cells = buf[:, rows, cols]  # added to in place, through the view
        cells += share
    return _cropped(buf, (n, c, h, w), padding)


# --- global average pooling: one window covering the whole map ------------------------------


def global_avg_pool2d_fwd(x: Array) -> Array:
    """The mean of each map. x: (N, C, H, W) -> y: (N, C), x's dtype and library.

    ``y[n, c] = sum_{h, w} x[n, c, h, w] / (H * W)``; any memory layout.
    """
    xp = namespace(x)
    y: Array = xp.mean(x, axis=(2, 3))
    return y


def global_avg_pool2d_bwd(dy: Array, x_shape: tuple[int, ...]) -> Array:
    """Every cell of map ``(n, c)`` gets ``dy[n, c] / (H * W)``.

    dy: (N, C) -> dx: (N, C, H, W) with ``H, W`` from ``x_shape``, in dy's dtype and
    library; an NCHW-shaped view of new batch-last memory, as the other kernels return.
    """
    xp = namespace(dy)
    n, c, h, w = (int(d) for d in x_shape)
    share = dy.T / (h * w)  # (C, N); a Python int keeps dy's dtype
    dxt = xp.empty((c, h, w, n), dtype=dy.dtype)
    dxt[...] = share[:, None, None, :]
    return nchw_view(dxt)
