"""2-D max and average pooling: the pure pairs and the ``MaxPool2d`` / ``AvgPool2d`` /
``GlobalAvgPool2d`` layers.

NCHW activations, no parameters (``params`` must be ``{}``)::

    y, cache = max_pool2d_fwd({}, x, Pool2dCfg(2))          # window 2, stride 2
    dx, grads = max_pool2d_bwd(cache, dy)                   # grads == {}

    x: (N, C, H, W)   y, dy: (N, C, OH, OW)
    OH = (H + pad_top + pad_bottom - KH) // stride_h + 1
    OW = (W + pad_left + pad_right - KW) // stride_w + 1

Max pooling pads with ``-inf`` and sends each window's gradient to its first
maximum (row-major window order; a window whose maximum is NaN: its first NaN
cell); average pooling pads with zeros and divides by ``KH * KW`` (PyTorch's
``count_include_pad=True``). Overlapping windows accumulate; rows no window
touches get zero gradient. Global average pooling is the mean of each whole map::

    y, cache = global_avg_pool2d_fwd({}, x)   # x: (N, C, H, W) -> y: (N, C)
    dx, grads = global_avg_pool2d_bwd(cache, dy)   # dx[n, c, h, w] = dy[n, c] / (H * W)

The kernels live in ``fcnn.ops.pool``;
they return ``y`` and ``dx`` as NCHW-shaped views of batch-last ``(C, H, W, N)``
memory (see ``fcnn.ops.layout``) and accept inputs in any memory layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ..ops import pool as kernels
from ..ops.shapes import Pad2d, normalize_padding, out_hw, positive_pair
from ._checks import Signature, prefixed
from .base import Array, Layer, Params, Shape, State, pair_layer, to_spec

__all__ = [
    "AvgPool2d",
    "AvgPool2dCache",
    "GlobalAvgPool2d",
    "GlobalAvgPool2dCache",
    "MaxPool2d",
    "MaxPool2dCache",
    "Pool2dCfg",
    "avg_pool2d_bwd",
    "avg_pool2d_fwd",
    "global_avg_pool2d_bwd",
    "global_avg_pool2d_fwd",
    "max_pool2d_bwd",
    "max_pool2d_fwd",
]


@dataclass(frozen=True, init=False)
class Pool2dCfg:
    """Pooling window, stride and padding, stored canonically.

    ``window``: int or ``(KH, KW)``, each >= 1. ``stride``: int or ``(sh, sw)``,
    each >= 1; ``None`` means the window (non-overlapping). ``padding``: int,
    ``(ph, pw)`` or ``((top, bottom), (left, right))``, each side at most half the
    window on its axis (``<= KH // 2`` and ``<= KW // 2``, like PyTorch), so every
    window holds at least one input cell. ``Pool2dCfg(2).stride == (2, 2)``.
    """

    window: tuple[int, int]
    stride: tuple[int, int]
    padding: Pad2d

    def __init__(
        self,
        window: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] = 0,
    ) -> None:
        win = positive_pair(window, "Pool2dCfg.window")
        st = win if stride is None else positive_pair(stride, "Pool2dCfg.stride")
        pad = normalize_padding(padding, "Pool2dCfg.padding")
        (top, bottom), (left, right) = pad
        limit_h, limit_w = win[0] // 2, win[1] // 2
        if max(top, bottom) > limit_h or max(left, right) > limit_w:
            raise ValueError(
                f"Pool2dCfg.padding must be at most half the window on each side "
                f"(top, bottom <= {limit_h}; left, right <= {limit_w} for window {win}), "
                f"got {padding!r}"
            )
        object.__setattr__(self, "window", win)
        object.__setattr__(self, "stride", st)
        object.__setattr__(self, "padding", pad)


class MaxPool2dCache(NamedTuple):
    """What ``max_pool2d_bwd`` needs: the cfg, the input x: (N, C, H, W) and y: (N, C, OH, OW)."""

    cfg: Pool2dCfg
    x: Array
    y: Array


class AvgPool2dCache(NamedTuple):
    """What ``avg_pool2d_bwd`` needs: the cfg, the input shape and y: (N, C, OH, OW)."""

    cfg: Pool2dCfg
    x_shape: tuple[int, ...]
    y: Array


_MAX = Signature("max_pool2d", x="(N, C, H, W)", y="(N, C, OH, OW)", cfg=Pool2dCfg)
_AVG = Signature("avg_pool2d", x="(N, C, H, W)", y="(N, C, OH, OW)", cfg=Pool2dCfg)


def max_pool2d_fwd(params: Params, x: Array, cfg: Pool2dCfg) -> tuple[Array, MaxPool2dCache]:
    """Max pooling forward. params: {}; x: (N, C, H, W) -> y: (N, C, OH, OW), x's dtype.

    ``OH = (H + pad_top + pad_bottom - KH) // stride_h + 1`` (likewise ``OW``).
    The cache keeps ``x`` and ``y`` themselves (no copy): like every cached array,
    do not write into them before ``max_pool2d_bwd``, which finds each window's
    maximum by comparing ``x`` with ``y``.
    Raises ``ValueError``/``TypeError`` starting with ``"max_pool2d: "`` on bad input.
    """
    _MAX.check(params, x, cfg)
    with prefixed(_MAX.op):  # the kernel's error when no window fits
        y = kernels.max_pool2d_fwd(x, cfg.window, cfg.stride, cfg.padding)
    return y, MaxPool2dCache(cfg, x, y)


def max_pool2d_bwd(cache: MaxPool2dCache, dy: Array) -> tuple[Array, Params]:
    """Max pooling backward. dy: (N, C, OH, OW) -> dx: (N, C, H, W), grads ``{}``.

    Each window's gradient goes to exactly one element, its first maximum in
    row-major order; overlapping windows accumulate. A window whose maximum is NaN
    sends it to its first NaN cell, on every path.
    """
    cfg, x, y = cache
    _MAX.check_dy(dy, y=y)
    dx = kernels.max_pool2d_bwd(dy, x, y, cfg.window, cfg.stride, cfg.padding)
    return dx, {}


def avg_pool2d_fwd(params: Params, x: Array, cfg: Pool2dCfg) -> tuple[Array, AvgPool2dCache]:
    """Average pooling forward. params: {}; x: (N, C, H, W) -> y: (N, C, OH, OW), x's dtype.

    ``OH = (H + pad_top + pad_bottom - KH) // stride_h + 1`` (likewise ``OW``); every
    window is divided by ``KH * KW``, padded zeros included. Raises
    ``ValueError``/``TypeError`` starting with ``"avg_pool2d: "`` on bad input.
    """
    _AVG.check(params, x, cfg)
    with prefixed(_AVG.op):
        y = kernels.avg_pool2d_fwd(x, cfg.window, cfg.stride, cfg.padding)
    return y, AvgPool2dCache(cfg, tuple(x.shape), y)


def avg_pool2d_bwd(cache: AvgPool2dCache, dy: Array) -> tuple[Array, Params]:
    """Average pooling backward. dy: (N, C, OH, OW) -> dx: (N, C, H, W), grads ``{}``."""
    cfg = cache.cfg
    _AVG.check_dy(dy, y=cache.y)
    dx = kernels.avg_pool2d_bwd(dy, cache.x_shape, cfg.window, cfg.stride, cfg.padding)
    return dx, {}


def _pool_layer(
    kind: str,
    type_name: str,
    sig: Signature,
    fwd: Any,
    bwd: Any,
    cfg: Pool2dCfg,
    name: str | None,
) -> Layer:
    """Shared constructor body of ``MaxPool2d`` and ``AvgPool2d``."""

    def init(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        c, h, w = sig.check_init(in_shape, dtype)
        with prefixed(sig.op):
            oh, ow = out_hw(h, w, *cfg.window, cfg.stride, cfg.padding)
        return {}, {}, (c, oh, ow)

    return pair_layer(kind, fwd, bwd, cfg, init, to_spec(type_name, cfg), name)


def MaxPool2d(
    window: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] = 0,
    *,
    name: str | None = None,
) -> Layer:
    """A max pooling layer; ``stride`` defaults to the window.

    Per-sample shapes: (C, H, W) -> (C, OH, OW), ``OH = (H + pad_top + pad_bottom -
    KH) // stride_h + 1``. No parameters.
    """
    cfg = Pool2dCfg(window, stride, padding)
    return _pool_layer("maxpool", "MaxPool2d", _MAX, max_pool2d_fwd, max_pool2d_bwd, cfg, name)


def AvgPool2d(
    window: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] = 0,
    *,
    name: str | None = None,
) -> Layer:
    """An average pooling layer (divisor ``KH * KW``); ``stride`` defaults to the window.

    Per-sample shapes: (C, H, W) -> (C, OH, OW), ``OH = (H + pad_top + pad_bottom -
    KH) // stride_h + 1``. No parameters.
    """
    cfg = Pool2dCfg(window, stride, padding)
    return _pool_layer("avgpool", "AvgPool2d", _AVG, avg_pool2d_fwd, avg_pool2d_bwd, cfg, name)


# --- global average pooling ------------------------------------------------------------------


class GlobalAvgPool2dCache(NamedTuple):
    """What ``global_avg_pool2d_bwd`` needs: the input shape (N, C, H, W) and y: (N, C)."""

    x_shape: tuple[int, ...]
    y: Array


_GLOBAL = Signature("global_avg_pool2d", x="(N, C, H, W)", y="(N, C)")


def global_avg_pool2d_fwd(
    params: Params, x: Array, cfg: None = None
) -> tuple[Array, GlobalAvgPool2dCache]:
    """Global average pooling forward. params: {}; x: (N, C, H, W) -> y: (N, C), x's dtype.

    ``y[n, c] = sum_{h, w} x[n, c, h, w] / (H * W)`` (PyTorch's
    ``adaptive_avg_pool2d(x, 1)`` without the trailing 1x1). Raises
    ``ValueError``/``TypeError`` starting with ``"global_avg_pool2d: "`` on bad input.
    """
    _GLOBAL.check(params, x, cfg)
    y = kernels.global_avg_pool2d_fwd(x)
    return y, GlobalAvgPool2dCache(tuple(x.shape), y)


def global_avg_pool2d_bwd(cache: GlobalAvgPool2dCache, dy: Array) -> tuple[Array, Params]:
    """Global average pooling backward. dy: (N, C) -> dx: (N, C, H, W), grads ``{}``.

    Every cell of a map gets an equal share of its mean's gradient: ``dy[n, c] / (H * W)``.
    """
    _GLOBAL.check_dy(dy, y=cache.y)
    return kernels.global_avg_pool2d_bwd(dy, cache.x_shape), {}


def GlobalAvgPool2d(*, name: str | None = None) -> Layer:
    """A global average pooling layer: per-sample shape (C, H, W) -> (C,); no parameters.

    Put it between the last convolution and a ``Dense`` head instead of ``Flatten``:
    the head's size then does not depend on the image size.
    """

    def init(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        c, _, _ = _GLOBAL.check_init(in_shape, dtype)
        return {}, {}, (c,)

    spec = to_spec("GlobalAvgPool2d")
    return pair_layer(
        "globalpool", global_avg_pool2d_fwd, global_avg_pool2d_bwd, None, init, spec, name
    )
