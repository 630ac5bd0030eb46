"""2-D transposed convolution: the pair ``conv_transpose2d_fwd`` / ``conv_transpose2d_bwd``
and the ``ConvTranspose2d`` layer.

Like PyTorch's ``conv_transpose2d``: NCHW activations, weights ``(C_in, C_out, KH, KW)``::

    y, cache = conv_transpose2d_fwd({"w": w, "b": b}, x, ConvTranspose2dCfg(stride=2))
    dx, grads = conv_transpose2d_bwd(cache, dy)       # grads = {"w": dw, "b": db}

    x: (N, C, H, W)   w: (C, F, KH, KW)   b: (F,)   y, dy: (N, F, OH, OW)
    OH = (H - 1) * stride_h - pad_top - pad_bottom + KH + output_padding_h
    OW = (W - 1) * stride_w - pad_left - pad_right + KW + output_padding_w

Its forward pass is the input gradient of ``conv2d`` with the same ``w``, stride and
padding (a convolution from F to C channels), which maps (OH, OW) back to (H, W); its
backward pass's ``dx`` is that convolution's forward pass (docs/conv_transpose.md). It
upsamples: stride 2 roughly doubles H and W. ``output_padding`` (each ``< stride``) adds
rows at the bottom and columns at the right, to reach sizes the stride skips.
``impl``: ``"im2col"`` (default; ``y`` and ``dx`` are NCHW views of batch-last memory) or
``"naive"`` (the reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ..ops.conv_transpose import (
    conv_transpose2d_im2col_bwd,
    conv_transpose2d_im2col_fwd,
    conv_transpose2d_naive_bwd,
    conv_transpose2d_naive_fwd,
    conv_transpose_out_hw,
)
from ..ops.shapes import Pad2d, normalize_padding, pair, positive_pair
from ._checks import Signature, positive_int, prefixed
from .base import Array, Layer, Params, Shape, State, pair_layer, to_spec

__all__ = [
    "ConvTranspose2d",
    "ConvTranspose2dCache",
    "ConvTranspose2dCfg",
    "conv_transpose2d_bwd",
    "conv_transpose2d_fwd",
]

_IMPLS = ("im2col", "naive")


@dataclass(frozen=True, init=False)
class ConvTranspose2dCfg:
    """How to transpose-convolve; kernel size and channels come from ``w.shape``.

    ``stride``: int or ``(sh, sw)``, each >= 1. ``padding``: int, ``(ph, pw)`` or
    ``((top, bottom), (left, right))``, each >= 0: what the matching convolution pads,
    so here it crops the output. ``output_padding``: int or ``(oph, opw)``, each >= 0
    and smaller than the stride on its axis. ``impl``: ``"im2col"`` or ``"naive"``.
    """

    stride: tuple[int, int]
    padding: Pad2d
    output_padding: tuple[int, int]
    impl: str

    def __init__(
        self,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] = 0,
        output_padding: int | tuple[int, int] = 0,
        impl: str = "im2col",
    ) -> None:
        if impl not in _IMPLS:
            raise ValueError(f"ConvTranspose2dCfg.impl must be one of {list(_IMPLS)}, got {impl!r}")
        st = positive_pair(stride, "ConvTranspose2dCfg.stride")
        op = pair(output_padding, "ConvTranspose2dCfg.output_padding")
        if not (0 <= op[0] < st[0] and 0 <= op[1] < st[1]):
            raise ValueError(
                f"ConvTranspose2dCfg.output_padding must be >= 0 and smaller than the stride "
                f"{st} on each axis, got {output_padding!r}"
            )
        object.__setattr__(self, "stride", st)
        object.__setattr__(
            self, "padding", normalize_padding(padding, "ConvTranspose2dCfg.padding")
        )
        object.__setattr__(self, "output_padding", op)
        object.__setattr__(self, "impl", impl)


class ConvTranspose2dCache(NamedTuple):
    """What ``conv_transpose2d_bwd`` needs: the cfg, the input x: (N, C, H, W),
    w: (C, F, KH, KW) and y's shape (N, F, OH, OW)."""

    cfg: ConvTranspose2dCfg
    x: Array
    w: Array
    y_shape: tuple[int, ...]


_SIG = Signature(
    "conv_transpose2d",
    x="(N, C, H, W)",
    y="(N, F, OH, OW)",
    params={"w": "(C, F, KH, KW)", "b": "(F,)"},
    cfg=ConvTranspose2dCfg,
    words={"C": "channel"},
)


def conv_transpose2d_fwd(
    params: Params, x: Array, cfg: ConvTranspose2dCfg
) -> tuple[Array, ConvTranspose2dCache]:
    """2-D transposed convolution forward: conv2d's input gradient, plus a bias.

    params: {"w": (C, F, KH, KW), "b": (F,)}; x: (N, C, H, W) -> y: (N, F, OH, OW) with::

        OH = (H - 1) * stride_h - pad_top - pad_bottom + KH + output_padding_h
        OW = (W - 1) * stride_w - pad_left - pad_right + KW + output_padding_w

    x, w and b share one floating dtype; y has it. The cache keeps ``x`` and ``w``
    (do not write into them before the backward). Raises ``ValueError``/``TypeError``
    starting with ``"conv_transpose2d: "`` on bad input (an output below 1x1 included).
    """
    w, b = _SIG.check(params, x, cfg)
    args = (cfg.stride, cfg.padding, cfg.output_padding)
    with prefixed(_SIG.op):
        if cfg.impl == "im2col":
            y = conv_transpose2d_im2col_fwd(x, w, b, *args)
        else:
            y = conv_transpose2d_naive_fwd(x, w, b, *args)
    return y, ConvTranspose2dCache(cfg, x, w, tuple(y.shape))


def conv_transpose2d_bwd(cache: ConvTranspose2dCache, dy: Array) -> tuple[Array, Params]:
    """Transposed convolution backward: gradients of ``sum(y * dy)``.

    dy: (N, F, OH, OW) in the forward's dtype -> dx: (N, C, H, W) (conv2d's forward of
    dy), {"w": dw (C, F, KH, KW), "b": db (F,)}, all in that dtype.
    """
    cfg, x, w, y_shape = cache
    _SIG.check_dy(dy, w=w, y=y_shape)
    kernel = conv_transpose2d_im2col_bwd if cfg.impl == "im2col" else conv_transpose2d_naive_bwd
    dx, dw, db = kernel(dy, x, w, cfg.stride, cfg.padding)
    return dx, {"w": dw, "b": db}


def ConvTranspose2d(
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] = 0,
    output_padding: int | tuple[int, int] = 0,
    impl: str = "im2col",
    *,
    name: str | None = None,
) -> Layer:
    """A 2-D transposed convolution layer: ``out_channels`` (F) maps from ``kernel_size``
    (int or (KH, KW)) kernels; input channels are inferred at ``init``.

    Per-sample shapes (C, H, W) -> (F, OH, OW), ``OH = (H - 1) * stride_h - pad_top -
    pad_bottom + KH + output_padding_h``. Params ``{"w": (C, F, KH, KW), "b": (F,)}``:
    weights He-normal over the ``C*KH*KW / (stride_h*stride_w)`` terms an output sums on
    average, biases zero.
    """
    f = positive_int(out_channels, _SIG.op, "out_channels")
    kh, kw = positive_pair(kernel_size, f"{_SIG.op}: kernel_size")
    cfg = ConvTranspose2dCfg(stride, padding, output_padding, impl)

    def init(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        c, h, width = _SIG.check_init(in_shape, dtype)
        with prefixed(_SIG.op):
            oh, ow = conv_transpose_out_hw(
                (1, c, h, width), (c, f, kh, kw), cfg.stride, cfg.padding, cfg.output_padding
            )
        fan_in = max(1.0, c * kh * kw / (cfg.stride[0] * cfg.stride[1]))
        w = (rng.standard_normal((c, f, kh, kw)) * math.sqrt(2.0 / fan_in)).astype(dtype)
        params: Params = {"w": w, "b": np.zeros((f,), dtype=dtype)}
        return params, {}, (f, oh, ow)

    spec = to_spec("ConvTranspose2d", cfg, out_channels=f, kernel_size=[kh, kw])
    return pair_layer(
        "convtranspose", conv_transpose2d_fwd, conv_transpose2d_bwd, cfg, init, spec, name
    )
