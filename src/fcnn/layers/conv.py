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

Three more settings (docs/conv_groups_dilation.md): ``padding="same"`` (stride 1, odd
kernels: the output keeps the input's size), ``dilation`` (kernel taps ``d`` apart, so
``KH`` becomes ``dilation_h * (KH - 1) + 1`` in the formulas above) and ``groups``
(``w: (F, C/groups, KH, KW)``; filter block ``g`` sees channel block ``g`` only;
``groups == C`` is a depthwise convolution). ``"im2col"`` and ``"naive"`` support all
of them, ``"strided"`` only dilation 1 and groups 1.
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
from ..ops.shapes import Pad2d, normalize_padding, out_hw, positive_pair, same_padding
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
PaddingArg = int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] | str


@dataclass(frozen=True, init=False)
class Conv2dCfg:
    """How to convolve; the kernel size and channels come from ``w.shape``, not from here.

    ``stride``: int or ``(sh, sw)``, each >= 1. ``padding``: int, ``(ph, pw)``,
    ``((top, bottom), (left, right))``, each >= 0, ``"valid"`` (no padding) or
    ``"same"`` (stride 1 and an odd kernel, checked when ``w`` comes: the output keeps
    the input's size; see ``pads``). ``impl``: ``"im2col"``, ``"strided"`` or ``"naive"``.
    ``dilation``: int or ``(dh, dw)``, each >= 1 (kernel taps that far apart).
    ``groups``: int >= 1 dividing both channel counts; ``w`` is then
    ``(F, C/groups, KH, KW)``. ``"strided"`` takes dilation 1 and groups 1 only.
    Stored canonically: ``Conv2dCfg(2, 1).padding == ((1, 1), (1, 1))``,
    ``Conv2dCfg(padding="same").padding == "same"``.
    """

    stride: tuple[int, int]
    padding: Pad2d | str
    impl: str
    dilation: tuple[int, int]
    groups: int

    def __init__(
        self,
        stride: int | tuple[int, int] = 1,
        padding: PaddingArg = 0,
        impl: str = "im2col",
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
    ) -> None:
        if impl not in _IMPLS:
            raise ValueError(f"Conv2dCfg.impl must be one of {list(_IMPLS)}, got {impl!r}")
        st = positive_pair(stride, "Conv2dCfg.stride")
        dil = positive_pair(dilation, "Conv2dCfg.dilation")
        grp = _groups(groups)
        if impl == "strided" and (dil != (1, 1) or grp != 1):
            raise ValueError(
                f"Conv2dCfg: impl='strided' supports dilation 1 and groups 1 only, got "
                f"dilation {dil} and groups {grp}; use impl='im2col' or 'naive'"
            )
        object.__setattr__(self, "stride", st)
        object.__setattr__(self, "padding", _padding(padding, st))
        object.__setattr__(self, "impl", impl)
        object.__setattr__(self, "dilation", dil)
        object.__setattr__(self, "groups", grp)

    def pads(self, kh: int, kw: int) -> Pad2d:
        """The padding ``((top, bottom), (left, right))`` for a (KH, KW) kernel: ``padding``
        itself, or for ``"same"`` ``dilation * (K - 1) // 2`` on both sides of each axis
        (``ValueError`` for an even kernel size)."""
        if self.padding == "same":
            return same_padding(kh, kw, self.dilation)
        return self.padding  # type: ignore[return-value]


def _groups(v: object) -> int:
    """``Conv2dCfg.groups``: an int >= 1."""
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise TypeError(f"Conv2dCfg.groups must be an int, got {v!r}")
    if v < 1:
        raise ValueError(f"Conv2dCfg.groups must be >= 1, got {v!r}")
    return int(v)


def _padding(v: PaddingArg, stride: tuple[int, int]) -> Pad2d | str:
    """``Conv2dCfg.padding``: ``"same"`` kept as is (stride 1 only), ``"valid"`` as zeros,
    anything else normalised by ``normalize_padding``."""
    if isinstance(v, str):
        if v == "valid":
            return ((0, 0), (0, 0))
        if v != "same":
            raise ValueError(
                f"Conv2dCfg.padding must be an int, (ph, pw), ((top, bottom), (left, right)), "
                f"'same' or 'valid', got {v!r}"
            )
        if stride != (1, 1):
            raise ValueError(f"Conv2dCfg.padding='same' needs stride 1, got stride {stride}")
        return "same"
    return normalize_padding(v, "Conv2dCfg.padding")


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
# With groups, w holds C_g = C / groups channels; _check ties C_g to x's C.
_SIG_GROUPED = Signature(
    "conv2d",
    x="(N, C, H, W)",
    y="(N, F, OH, OW)",
    params={"w": "(F, C_g, KH, KW)", "b": "(F,)"},
    cfg=Conv2dCfg,
    words={"C": "channel"},
)


def _check(params: Params, x: Array, cfg: Conv2dCfg) -> tuple[Array, Array]:
    """The declared checks; with groups, also ``C == groups * C_g`` and ``F % groups == 0``.

    Returns ``(w, b)``."""
    if not isinstance(cfg, Conv2dCfg) or cfg.groups == 1:
        w, b = _SIG.check(params, x, cfg)
        return w, b
    w, b = _SIG_GROUPED.check(params, x, cfg)
    g, c, (f, c_g) = cfg.groups, x.shape[1], w.shape[:2]
    if c != g * c_g:
        raise ValueError(
            f"conv2d: x has {c} channels (C) but w expects groups * C_g = {g} * {c_g} = {g * c_g}"
        )
    if f % g:
        raise ValueError(f"conv2d: w has {f} filters (F), not a multiple of groups={g}")
    return w, b


def conv2d_fwd(params: Params, x: Array, cfg: Conv2dCfg) -> tuple[Array, Conv2dCache]:
    """2-D convolution (cross-correlation) forward.

    params: {"w": (F, C, KH, KW), "b": (F,)}; x: (N, C, H, W) -> y: (N, F, OH, OW) with::

        OH = (H + pad_top + pad_bottom - KH) // stride_h + 1
        OW = (W + pad_left + pad_right - KW) // stride_w + 1

    (``KH`` read as ``dilation_h * (KH - 1) + 1`` when dilated). With ``cfg.groups > 1``
    w is (F, C/groups, KH, KW). x, w and b must share one floating dtype; y has that
    dtype. With ``impl="im2col"`` y is an NCHW-shaped view of batch-last (F, OH, OW, N)
    memory, so it is not C-contiguous (``np.ascontiguousarray(y)`` if you need that). Raises
    ``ValueError``/``TypeError`` starting with ``"conv2d: "`` on bad input.
    Returns ``(y, cache)``; pass the cache to ``conv2d_bwd``.
    """
    w, b = _check(params, x, cfg)
    saved: Array
    with prefixed(_SIG.op):  # the kernel's error when no window fits, or 'same' does not
        pad, dil, groups = cfg.pads(w.shape[2], w.shape[3]), cfg.dilation, cfg.groups
        if cfg.impl == "im2col":
            y, saved = conv2d_im2col_fwd(x, w, b, cfg.stride, pad, dil, groups)
        elif cfg.impl == "strided":
            y, saved = conv2d_strided_fwd(x, w, b, cfg.stride, pad)
        else:
            y, saved = conv2d_naive_fwd(x, w, b, cfg.stride, pad, dil, groups), x
    return y, Conv2dCache(cfg, w, tuple(x.shape), tuple(y.shape), saved)


def conv2d_bwd(cache: Conv2dCache, dy: Array) -> tuple[Array, Params]:
    """2-D convolution backward: gradients of ``sum(y * dy)``.

    dy: (N, F, OH, OW), same dtype as the forward input -> dx: (N, C, H, W),
    {"w": dw (F, C, KH, KW), "b": db (F,)}, all in that dtype.
    """
    cfg, w = cache.cfg, cache.w
    _SIG.check_dy(dy, w=w, y=cache.y_shape)
    pad, dil, groups = cfg.pads(w.shape[2], w.shape[3]), cfg.dilation, cfg.groups
    if cfg.impl == "im2col":
        dx, dw, db = conv2d_im2col_bwd(
            dy, cache.saved, cache.x_shape, w, cfg.stride, pad, dil, groups
        )
    elif cfg.impl == "strided":
        dx, dw, db = conv2d_strided_bwd(dy, cache.saved, cache.x_shape, w, cfg.stride, pad)
    else:
        dx, dw, db = conv2d_naive_bwd(dy, cache.saved, w, cfg.stride, pad, dil, groups)
    return dx, {"w": dw, "b": db}


def conv2d_param_grads(cache: Conv2dCache, dy: Array) -> Params:
    """``conv2d_bwd(cache, dy)[1]`` without computing ``dx``: {"w": (F, C, KH, KW), "b": (F,)}.

    The composer calls it for a model's first layer, whose input needs no
    gradient. Only ``impl="im2col"`` has a cheaper path; the others run the full backward.
    """
    if cache.cfg.impl != "im2col":
        return conv2d_bwd(cache, dy)[1]
    _SIG.check_dy(dy, w=cache.w, y=cache.y_shape)
    dw, db = conv2d_im2col_param_grads(dy, cache.saved, cache.w, cache.cfg.groups)
    return {"w": dw, "b": db}


def Conv2d(
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: PaddingArg = 0,
    impl: str = "im2col",
    *,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    name: str | None = None,
) -> Layer:
    """A 2-D convolution layer: ``out_channels`` filters of ``kernel_size`` (int or (KH, KW)).

    Input channels are inferred at ``init`` from the per-sample shape (C, H, W);
    the output shape is (F, OH, OW) with ``OH = (H + pad_top + pad_bottom - KH) //
    stride_h + 1`` (``KH`` dilated: ``dilation_h * (KH - 1) + 1``). ``padding="same"``
    keeps (H, W) (stride 1, odd kernels); ``groups`` must divide ``out_channels`` and C
    (``groups=C``: depthwise). Weights are He-normal (std ``sqrt(2 / (C/groups*KH*KW))``),
    biases zero.
    """
    f = positive_int(out_channels, _SIG.op, "out_channels")
    kh, kw = positive_pair(kernel_size, f"{_SIG.op}: kernel_size")
    cfg = Conv2dCfg(stride=stride, padding=padding, impl=impl, dilation=dilation, groups=groups)
    with prefixed(_SIG.op):
        pad = cfg.pads(kh, kw)  # 'same' with an even kernel fails here, not at init
    if f % cfg.groups:
        raise ValueError(f"conv2d: out_channels={f} is not a multiple of groups={cfg.groups}")

    def init(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        c, h, width = _SIG.check_init(in_shape, dtype)
        g = cfg.groups
        if c % g:
            raise ValueError(f"conv2d: input channels {c} are not a multiple of groups={g}")
        with prefixed(_SIG.op):
            oh, ow = out_hw(h, width, kh, kw, cfg.stride, pad, cfg.dilation)
        c_g = c // cfg.groups
        std = math.sqrt(2.0 / (c_g * kh * kw))
        w = (rng.standard_normal((f, c_g, kh, kw)) * std).astype(dtype)
        params: Params = {"w": w, "b": np.zeros((f,), dtype=dtype)}
        return params, {}, (f, oh, ow)

    spec = to_spec("Conv2d", cfg, out_channels=f, kernel_size=[kh, kw])
    # fcnn 0.2.0 checkpoints store Conv2d specs without these two: written only when set
    for key, default in (("dilation", [1, 1]), ("groups", 1)):
        if spec[key] == default:
            del spec[key]
    return pair_layer(
        "conv", conv2d_fwd, conv2d_bwd, cfg, init, spec, name, param_grads=conv2d_param_grads
    )
