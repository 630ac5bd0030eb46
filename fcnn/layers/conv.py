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
from typing import NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ..ops.conv_im2col import conv2d_im2col_bwd, conv2d_im2col_fwd, conv2d_im2col_param_grads
from ..ops.conv_naive import conv2d_naive_bwd, conv2d_naive_fwd
from ..ops.conv_strided import conv2d_strided_bwd, conv2d_strided_fwd
from ..ops.shapes import Pad2d, normalize_padding, out_hw, positive_pair
from ._checks import Signature, positive_int, prefixed
from .base import Array, Layer, Params, Shape, State, pair_layer, to_spec

__all__ = [
    "Conv2d",
    "Conv2dCache",
    "Conv2dCfg",
    "conv2d_bwd",
    "conv2d_fwd",
    "conv2d_param_grads",
]

_IMPLS = ("im2col", "naive", "strided")


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
    """What ``conv2d_bwd`` needs: the cfg, ``w``, the input and output shapes and the
    impl's saved array.

    ``saved`` is ``x`` for ``"naive"``, the columns (C*KH*KW + 1, OH*OW*N) (with a row
    of ones for the bias) for ``"im2col"`` and the read-only window view
    (N, C, OH, OW, KH, KW) for ``"strided"``.
    """

    cfg: Conv2dCfg
    w: Array
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    saved: Array


_SIG = Signature(
    "conv2d",
    x="(N, C, H, W)",
    y="(N, F, OH, OW)",
    params={"w": "(F, C, KH, KW)", "b": "(F,)"},
    cfg=Conv2dCfg,
    words={"C": "channel"},
)


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
    w, b = _SIG.check(params, x, cfg)
    saved: Array
    with prefixed(_SIG.op):  # the kernel's error when no window fits
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
    _SIG.check_dy(dy, w=w, y=cache.y_shape)
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
    _SIG.check_dy(dy, w=cache.w, y=cache.y_shape)
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
    f = positive_int(out_channels, _SIG.op, "out_channels")
    kh, kw = positive_pair(kernel_size, f"{_SIG.op}: kernel_size")
    cfg = Conv2dCfg(stride=stride, padding=padding, impl=impl)

    def init(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        c, h, width = _SIG.check_init(in_shape, dtype)
        with prefixed(_SIG.op):
            oh, ow = out_hw(h, width, kh, kw, cfg.stride, cfg.padding)
        std = math.sqrt(2.0 / (c * kh * kw))
        w = (rng.standard_normal((f, c, kh, kw)) * std).astype(dtype)
        params: Params = {"w": w, "b": np.zeros((f,), dtype=dtype)}
        return params, {}, (f, oh, ow)

    spec = to_spec("Conv2d", cfg, out_channels=f, kernel_size=[kh, kw])
    return pair_layer(
        "conv", conv2d_fwd, conv2d_bwd, cfg, init, spec, name, param_grads=conv2d_param_grads
    )
