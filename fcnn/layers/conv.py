"""2-D convolution: the pure pair ``conv2d_fwd`` / ``conv2d_bwd`` and the ``Conv2d`` layer.

Cross-correlation like PyTorch's ``conv2d``, NCHW activations and OIHW weights::

    y, cache = conv2d_fwd({"w": w, "b": b}, x, Conv2dCfg(stride=2, padding=1))
    dx, grads = conv2d_bwd(cache, dy)                  # grads = {"w": dw, "b": db}

    x: (N, C, H, W)   w: (F, C, KH, KW)   b: (F,)   y, dy: (N, F, OH, OW)
    OH = (H + pad_top + pad_bottom - KH) // stride_h + 1
    OW = (W + pad_left + pad_right - KW) // stride_w + 1

When the stride does not divide ``H + pad - KH`` the last rows are touched by no
window and get zero gradient. ``Conv2dCfg.impl`` picks the kernel: ``"im2col"``
(default, columns + one matmul), ``"strided"`` (sliding-window view + tensordot,
NumPy only) or ``"naive"`` (loops over output positions, the reference). All give
the same results. ``"im2col"`` returns ``y`` and ``dx`` as NCHW-shaped views of
batch-last ``(C, H, W, N)`` memory, which the next layer reads without a copy
(see ``fcnn.ops.layout``); inputs may have any memory layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ..ops.conv_im2col import conv2d_im2col_bwd, conv2d_im2col_fwd, conv2d_im2col_param_grads
from ..ops.conv_naive import conv2d_naive_bwd, conv2d_naive_fwd
from ..ops.conv_strided import conv2d_strided_bwd, conv2d_strided_fwd
from ..ops.shapes import Pad2d, normalize_padding, out_hw, positive_pair
from ._checks import (
    check_dy,
    check_float,
    check_params,
    check_rank,
    check_same_dtype,
    check_shape_in,
)
from .base import Array, Layer, Params, Shape, State, pair_layer

__all__ = [
    "Conv2d",
    "Conv2dCache",
    "Conv2dCfg",
    "conv2d_bwd",
    "conv2d_fwd",
    "conv2d_param_grads",
]

_IMPLS = ("im2col", "naive", "strided")
_OP = "conv2d"


@dataclass(frozen=True, init=False)
class Conv2dCfg:
    """How to convolve; the kernel size and channels come from ``w.shape``, not from here.

    ``stride``: int or ``(sh, sw)``, each >= 1. ``padding``: int, ``(ph, pw)`` or
    ``((top, bottom), (left, right))``, each >= 0. ``impl``: ``"im2col"``,
    ``"strided"`` or ``"naive"``. Stored canonically: ``Conv2dCfg(2, 1).padding ==
    ((1, 1), (1, 1))``.
    """

    stride: tuple[int, int]
    padding: Pad2d
    impl: str

    def __init__(
        self,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] = 0,
        impl: str = "im2col",
    ) -> None:
        if impl not in _IMPLS:
            raise ValueError(f"Conv2dCfg.impl must be one of {list(_IMPLS)}, got {impl!r}")
        object.__setattr__(self, "stride", positive_pair(stride, "Conv2dCfg.stride"))
        object.__setattr__(self, "padding", normalize_padding(padding, "Conv2dCfg.padding"))
        object.__setattr__(self, "impl", impl)


class Conv2dCache(NamedTuple):
    """What ``conv2d_bwd`` needs: the cfg, ``w``, the input shape and the impl's saved array.

    ``saved`` is ``x`` for ``"naive"``, the columns (C*KH*KW + 1, OH*OW*N) (with a row
    of ones for the bias) for ``"im2col"`` and the read-only window view
    (N, C, OH, OW, KH, KW) for ``"strided"``.
    """

    cfg: Conv2dCfg
    w: Array
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    saved: Array


def _check_inputs(params: Any, x: Any) -> tuple[Array, Array, tuple[int, int]]:
    """Validate ``params`` and ``x``; return ``w``, ``b`` and ``(OH, OW)``."""
    check_params(params, ("w", "b"), _OP)
    w, b = params["w"], params["b"]
    check_float(x, _OP, "x")
    check_float(w, _OP, "w")
    check_float(b, _OP, "b")
    check_same_dtype(_OP, x=x, w=w, b=b)
    check_rank(x, 4, "(N, C, H, W)", _OP, "x")
    check_rank(w, 4, "(F, C, KH, KW)", _OP, "w")
    f, c, kh, kw = w.shape
    if tuple(b.shape) != (f,):
        raise ValueError(f"{_OP}: b must have shape (F,) = ({f},), got {tuple(b.shape)}")
    if x.shape[1] != c:
        raise ValueError(f"{_OP}: x has {x.shape[1]} channels but w expects {c}")
    return w, b, (kh, kw)


def _out_hw(
    h: int, wd: int, kh: int, kw: int, cfg: Conv2dCfg, op: str
) -> tuple[int, int]:
    """``(OH, OW)`` via ``out_hw``, with ``op`` prefixed to its error."""
    try:
        return out_hw(h, wd, kh, kw, cfg.stride, cfg.padding)
    except ValueError as err:
        raise ValueError(f"{op}: {err}") from None


def conv2d_fwd(params: Params, x: Array, cfg: Conv2dCfg) -> tuple[Array, Conv2dCache]:
    """2-D convolution (cross-correlation) forward.

    params: {"w": (F, C, KH, KW), "b": (F,)}; x: (N, C, H, W) -> y: (N, F, OH, OW) with::

        OH = (H + pad_top + pad_bottom - KH) // stride_h + 1
        OW = (W + pad_left + pad_right - KW) // stride_w + 1

    x, w and b must share one floating dtype; y has that dtype. With ``impl="im2col"``
    y is an NCHW-shaped view of batch-last (F, OH, OW, N) memory, so it is not
    C-contiguous (``np.ascontiguousarray(y)`` if you need that). Raises
    ``ValueError``/``TypeError`` starting with ``"conv2d: "`` on bad input.
    Returns ``(y, cache)``; pass the cache to ``conv2d_bwd``.
    """
    if not isinstance(cfg, Conv2dCfg):
        raise TypeError(f"{_OP}: cfg must be a Conv2dCfg, got {type(cfg).__name__}")
    w, b, (kh, kw) = _check_inputs(params, x)
    _out_hw(x.shape[2], x.shape[3], kh, kw, cfg, _OP)
    saved: Array
    if cfg.impl == "im2col":
        y, saved = conv2d_im2col_fwd(x, w, b, cfg.stride, cfg.padding)
    elif cfg.impl == "strided":
        y, saved = conv2d_strided_fwd(x, w, b, cfg.stride, cfg.padding)
    else:
        y, saved = conv2d_naive_fwd(x, w, b, cfg.stride, cfg.padding), x
    return y, Conv2dCache(cfg, w, tuple(x.shape), tuple(y.shape), saved)


def conv2d_bwd(cache: Conv2dCache, dy: Array) -> tuple[Array, Params]:
    """2-D convolution backward: gradients of ``sum(y * dy)``.

    dy: (N, F, OH, OW), same dtype as the forward input -> dx: (N, C, H, W),
    {"w": dw (F, C, KH, KW), "b": db (F,)}, all in that dtype.
    """
    cfg, w = cache.cfg, cache.w
    check_dy(dy, cache.y_shape, cache.w.dtype, _OP)
    if cfg.impl == "im2col":
        dx, dw, db = conv2d_im2col_bwd(dy, cache.saved, cache.x_shape, w, cfg.stride, cfg.padding)
    elif cfg.impl == "strided":
        dx, dw, db = conv2d_strided_bwd(dy, cache.saved, cache.x_shape, w, cfg.stride, cfg.padding)
    else:
        dx, dw, db = conv2d_naive_bwd(dy, cache.saved, w, cfg.stride, cfg.padding)
    return dx, {"w": dw, "b": db}


def conv2d_param_grads(cache: Conv2dCache, dy: Array) -> Params:
    """``conv2d_bwd(cache, dy)[1]`` without computing ``dx``: {"w": (F, C, KH, KW), "b": (F,)}.

    The composer calls it for a model's first layer, whose input needs no
    gradient. Only ``impl="im2col"`` has a cheaper path; the others run the full backward.
    """
    if cache.cfg.impl != "im2col":
        return conv2d_bwd(cache, dy)[1]
    check_dy(dy, cache.y_shape, cache.w.dtype, _OP)
    dw, db = conv2d_im2col_param_grads(dy, cache.saved, cache.w)
    return {"w": dw, "b": db}


def Conv2d(
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] = 0,
    impl: str = "im2col",
    *,
    name: str | None = None,
) -> Layer:
    """A 2-D convolution layer: ``out_channels`` filters of ``kernel_size`` (int or (KH, KW)).

    Input channels are inferred at ``init`` from the per-sample shape (C, H, W);
    the output shape is (F, OH, OW) with ``OH = (H + pad_top + pad_bottom - KH) //
    stride_h + 1``. Weights are He-normal (std ``sqrt(2 / (C*KH*KW))``), biases zero.
    """
    if isinstance(out_channels, bool) or not isinstance(out_channels, int | np.integer):
        raise TypeError(f"Conv2d.out_channels must be an int, got {out_channels!r}")
    if out_channels < 1:
        raise ValueError(f"Conv2d.out_channels must be >= 1, got {out_channels!r}")
    f = int(out_channels)
    kh, kw = positive_pair(kernel_size, "Conv2d.kernel_size")
    cfg = Conv2dCfg(stride=stride, padding=padding, impl=impl)

    def init(rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike) -> tuple[
        Params, State, Shape
    ]:
        shape = tuple(int(d) for d in in_shape)
        check_shape_in(shape, 3, "(C, H, W)", "Conv2d")
        if not np.issubdtype(np.dtype(dtype), np.floating):
            raise TypeError(f"Conv2d: dtype must be a floating dtype, got {np.dtype(dtype)}")
        c, h, wd = shape
        oh, ow = _out_hw(h, wd, kh, kw, cfg, "Conv2d")
        std = math.sqrt(2.0 / (c * kh * kw))
        w = (rng.standard_normal((f, c, kh, kw)) * std).astype(dtype)
        params: Params = {"w": w, "b": np.zeros((f,), dtype=dtype)}
        return params, {}, (f, oh, ow)

    spec = {
        "type": "Conv2d",
        "out_channels": f,
        "kernel_size": [kh, kw],
        "stride": list(cfg.stride),
        "padding": [list(cfg.padding[0]), list(cfg.padding[1])],
        "impl": cfg.impl,
    }
    return pair_layer(
        "conv", conv2d_fwd, conv2d_bwd, cfg, init, spec, name, param_grads=conv2d_param_grads
    )
