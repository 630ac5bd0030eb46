"""The rectified linear unit: the pure pair ``relu_fwd`` / ``relu_bwd`` and the ``Relu`` layer.

Elementwise, any input rank >= 1, no parameters (``params`` must be ``{}``)::

    y, cache = relu_fwd({}, x)          # x: (N, ...) -> y: (N, ...), y = max(x, 0)
    dx, grads = relu_bwd(cache, dy)     # dx = dy * (y > 0), grads == {}

The derivative at exactly 0 is taken as 0 (like PyTorch).

The other activations, each a pair and a layer the same way (docs/activations.md)::

    leaky_relu   y = max(x, slope * x), 0 <= slope <= 1     LeakyRelu(slope=0.01)
    gelu         y = x * Phi(x) (Phi: the standard normal CDF), or with
                 approximate="tanh" y = x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) / 2
                                                            Gelu(approximate="none")
    sigmoid      y = 1 / (1 + exp(-x))                      Sigmoid()
    tanh         y = tanh(x)                                Tanh()

``leaky_relu`` and ``gelu`` take a cfg (``LeakyReluCfg``, ``GeluCfg``); every one keeps
x's dtype and memory layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..ops.layout import memory_flat
from ..ops.special import normal_cdf, normal_pdf
from ..ops.xp import fused, is_numpy, namespace
from ._checks import Signature
from .base import Array, Layer, Params, pair_layer, to_spec

__all__ = [
    "Gelu",
    "GeluCache",
    "GeluCfg",
    "LeakyRelu",
    "LeakyReluCache",
    "LeakyReluCfg",
    "Relu",
    "ReluCache",
    "Sigmoid",
    "SigmoidCache",
    "Tanh",
    "TanhCache",
    "gelu_bwd",
    "gelu_fwd",
    "leaky_relu_bwd",
    "leaky_relu_fwd",
    "relu_bwd",
    "relu_fwd",
    "sigmoid_bwd",
    "sigmoid_fwd",
    "tanh_bwd",
    "tanh_fwd",
]

_SIG = Signature("relu", x="(N, ...)")
_BLOCK = 4096  # elements of the zeros block ``_positive_part`` compares against


class ReluCache(NamedTuple):
    """What ``relu_bwd`` needs: the output y (x's shape and dtype); ``y > 0`` is ``x > 0``."""

    y: Array


def relu_fwd(params: Params, x: Array, cfg: None = None) -> tuple[Array, ReluCache]:
    """ReLU forward. params: {}; x: (N, ...) float -> y: (N, ...) = max(x, 0), x's dtype.

    The cache keeps ``y`` itself (do not write into it before ``relu_bwd``). Raises
    ``ValueError``/``TypeError`` starting with ``"relu: "`` on bad input.
    """
    _SIG.check(params, x, cfg)
    y = _positive_part(x)
    return y, ReluCache(y)


def _positive_part(x: Array) -> Array:
    """max(x, 0) elementwise: x: (...) -> (...), x's dtype and memory layout.

    ``maximum`` rather than ``x * mask``: -inf * 0 would be NaN. NumPy's ``maximum``
    has no fast loop for a scalar 0, so x's memory is compared, as rows of ``_BLOCK``
    elements, with one small zeros block, which the fast array-array loop takes; and
    no zeros array as large as x to fill and read.
    """
    xp = namespace(x)
    y: Array = xp.empty_like(x)
    src, dst = (memory_flat(x), memory_flat(y)) if is_numpy(xp) else (None, None)
    # empty_like keeps a dense x's layout, so src and dst list the same elements in turn.
    if src is None or dst is None:
        xp.maximum(x, 0, out=y)  # a strided x, or a device (one kernel): the plain way
        return y
    zeros = np.zeros(min(src.size, _BLOCK), dtype=x.dtype)
    rows = src.size // _BLOCK
    head = rows * _BLOCK
    if rows:
        np.maximum(src[:head].reshape(rows, _BLOCK), zeros, out=dst[:head].reshape(rows, _BLOCK))
    np.maximum(src[head:], zeros[: src.size - head], out=dst[head:])
    return y


def relu_bwd(cache: ReluCache, dy: Array) -> tuple[Array, Params]:
    """ReLU backward. dy: (N, ...) like y -> dx: (N, ...) = dy * (y > 0), grads ``{}``."""
    _SIG.check_dy(dy, y=cache.y)
    return _relu_grad(dy, cache.y), {}


@fused
def _relu_grad(xp: Any, dy: Array, y: Array) -> Array:
    """dy * (y > 0) elementwise (one kernel on a device)."""
    dx: Array = dy * (y > 0)
    return dx


def Relu(*, name: str | None = None) -> Layer:
    """A ReLU layer: any per-sample shape, returned unchanged by ``init``; no parameters."""
    init = _SIG.kept_shape_init
    return pair_layer("relu", relu_fwd, relu_bwd, None, init, to_spec("Relu"), name)


# --- leaky ReLU ------------------------------------------------------------------------------


@dataclass(frozen=True, init=False)
class LeakyReluCfg:
    """``slope``: the derivative for ``x <= 0``, a number in [0, 1] (PyTorch's
    ``negative_slope``, kept in [0, 1] so that ``y = max(x, slope * x)`` and ``y > 0``
    exactly where ``x > 0``). ``LeakyReluCfg().slope == 0.01``."""

    slope: float

    def __init__(self, slope: float = 0.01) -> None:
        number = isinstance(slope, int | float | np.integer | np.floating)
        if isinstance(slope, bool) or not number or not 0 <= slope <= 1:
            raise ValueError(f"LeakyReluCfg.slope must be a number in [0, 1], got {slope!r}")
        object.__setattr__(self, "slope", float(slope))


class LeakyReluCache(NamedTuple):
    """What ``leaky_relu_bwd`` needs: the cfg and y (x's shape and dtype; y > 0 iff x > 0)."""

    cfg: LeakyReluCfg
    y: Array


_LEAKY = Signature("leaky_relu", x="(N, ...)", cfg=LeakyReluCfg)


def leaky_relu_fwd(params: Params, x: Array, cfg: LeakyReluCfg) -> tuple[Array, LeakyReluCache]:
    """Leaky ReLU forward. params: {}; x: (N, ...) float -> y = max(x, slope * x), x's dtype.

    Raises ``ValueError``/``TypeError`` starting with ``"leaky_relu: "`` on bad input.
    """
    _LEAKY.check(params, x, cfg)
    # slope 0 is ReLU: max(x, 0), as 0 * inf would be NaN
    y: Array = namespace(x).maximum(x, x * cfg.slope if cfg.slope else 0)
    return y, LeakyReluCache(cfg, y)


def leaky_relu_bwd(cache: LeakyReluCache, dy: Array) -> tuple[Array, Params]:
    """Leaky ReLU backward. dy: (N, ...) like y -> dx = dy where x > 0, slope * dy elsewhere
    (at exactly 0 too, like PyTorch); grads ``{}``."""
    _LEAKY.check_dy(dy, y=cache.y)
    keep = cache.y > 0
    # scale = 1 where x > 0, slope elsewhere, built exactly (0 + slope and 1 + 0), in dy's
    # dtype and layout; several cheap passes beat one where(keep, dy, slope * dy).
    scale = (~keep).astype(dy.dtype)
    scale *= cache.cfg.slope
    scale += keep
    dx: Array = dy * scale
    return dx, {}


def LeakyRelu(slope: float = 0.01, *, name: str | None = None) -> Layer:
    """A leaky ReLU layer, ``y = max(x, slope * x)``: any per-sample shape, kept; no params."""
    cfg = LeakyReluCfg(slope)
    return pair_layer(
        "leakyrelu",
        leaky_relu_fwd,
        leaky_relu_bwd,
        cfg,
        _LEAKY.kept_shape_init,
        to_spec("LeakyRelu", cfg),
        name,
    )


# --- GELU ------------------------------------------------------------------------------------

_GELU_FORMS = ("none", "tanh")
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_CUBIC = 0.044715  # the tanh form's coefficient of x^3 (as in PyTorch)


@dataclass(frozen=True, init=False)
class GeluCfg:
    """``approximate``: ``"none"`` (exact, ``x * Phi(x)``) or ``"tanh"`` (the tanh formula),
    as PyTorch's ``gelu(approximate=...)``."""

    approximate: str

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in _GELU_FORMS:
            raise ValueError(
                f"GeluCfg.approximate must be one of {list(_GELU_FORMS)}, got {approximate!r}"
            )
        object.__setattr__(self, "approximate", approximate)


class GeluCache(NamedTuple):
    """What ``gelu_bwd`` needs: the cfg, x and the gate g (y = x * g), both x's shape."""

    cfg: GeluCfg
    x: Array
    gate: Array


_GELU = Signature("gelu", x="(N, ...)", cfg=GeluCfg)


def _tanh_gate(x: Array) -> Array:
    """(1 + tanh(u)) / 2 with u = sqrt(2/pi) * x * (1 + 0.044715 x^2): x's shape and dtype."""
    xp = namespace(x)
    u = x * x
    u *= _CUBIC
    u += 1
    u *= x
    u *= _SQRT_2_OVER_PI
    gate: Array = xp.tanh(u)
    gate += 1
    gate *= 0.5
    return gate


def gelu_fwd(params: Params, x: Array, cfg: GeluCfg) -> tuple[Array, GeluCache]:
    """GELU forward. params: {}; x: (N, ...) float -> y = x * g(x), x's dtype, with the gate
    ``g = Phi`` (the standard normal CDF) or, for ``approximate="tanh"``,
    ``g = (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) / 2``.

    Raises ``ValueError``/``TypeError`` starting with ``"gelu: "`` on bad input.
    """
    _GELU.check(params, x, cfg)
    gate = normal_cdf(x) if cfg.approximate == "none" else _tanh_gate(x)
    y: Array = x * gate
    return y, GeluCache(cfg, x, gate)


def gelu_bwd(cache: GeluCache, dy: Array) -> tuple[Array, Params]:
    """GELU backward. dy: (N, ...) like x -> dx = dy * (g + x * g'), grads ``{}``.

    Exact: ``g' = phi(x)``, the normal density. Tanh form: ``g = (1 + tanh u) / 2`` gives
    ``g' = (1 - tanh(u)^2) / 2 * u' = 2 g (1 - g) * sqrt(2/pi) * (1 + 3 * 0.044715 x^2)``.
    """
    cfg, x, gate = cache
    _GELU.check_dy(dy, x=x)
    if cfg.approximate == "none":
        slope = normal_pdf(x)
    else:
        slope = 2 * gate * (1 - gate) * _SQRT_2_OVER_PI * (1 + 3 * _CUBIC * x * x)
    dx: Array = dy * (gate + x * slope)
    return dx, {}


def Gelu(approximate: str = "none", *, name: str | None = None) -> Layer:
    """A GELU layer (``approximate``: ``"none"`` or ``"tanh"``): any per-sample shape, kept;
    no params."""
    cfg = GeluCfg(approximate)
    init = _GELU.kept_shape_init
    return pair_layer("gelu", gelu_fwd, gelu_bwd, cfg, init, to_spec("Gelu", cfg), name)


# --- sigmoid and tanh ------------------------------------------------------------------------


class SigmoidCache(NamedTuple):
    """What ``sigmoid_bwd`` needs: y = sigmoid(x) (x's shape and dtype)."""

    y: Array


class TanhCache(NamedTuple):
    """What ``tanh_bwd`` needs: y = tanh(x) (x's shape and dtype)."""

    y: Array


_SIGMOID = Signature("sigmoid", x="(N, ...)")
_TANH = Signature("tanh", x="(N, ...)")


def sigmoid_fwd(params: Params, x: Array, cfg: None = None) -> tuple[Array, SigmoidCache]:
    """Sigmoid forward. params: {}; x: (N, ...) float -> y = 1 / (1 + exp(-x)), x's dtype.

    Computed as ``exp(min(x, 0)) / (1 + exp(-|x|))``: no exp of a large positive number
    (no overflow), and the same value as ``1 / (1 + exp(-x))`` for x >= 0 and
    ``exp(x) / (1 + exp(x))`` for x < 0. Raises starting with ``"sigmoid: "``.
    """
    _SIGMOID.check(params, x, cfg)
    xp = namespace(x)
    y: Array = xp.exp(xp.minimum(x, 0))
    y /= 1 + xp.exp(-xp.abs(x))
    return y, SigmoidCache(y)


def sigmoid_bwd(cache: SigmoidCache, dy: Array) -> tuple[Array, Params]:
    """Sigmoid backward. dy: (N, ...) like y -> dx = dy * y * (1 - y), grads ``{}``."""
    _SIGMOID.check_dy(dy, y=cache.y)
    slope = 1 - cache.y
    slope *= cache.y
    dx: Array = dy * slope
    return dx, {}


def tanh_fwd(params: Params, x: Array, cfg: None = None) -> tuple[Array, TanhCache]:
    """Tanh forward. params: {}; x: (N, ...) float -> y = tanh(x), x's dtype.

    Raises ``ValueError``/``TypeError`` starting with ``"tanh: "`` on bad input.
    """
    _TANH.check(params, x, cfg)
    y: Array = namespace(x).tanh(x)
    return y, TanhCache(y)


def tanh_bwd(cache: TanhCache, dy: Array) -> tuple[Array, Params]:
    """Tanh backward. dy: (N, ...) like y -> dx = dy * (1 - y^2), grads ``{}``."""
    _TANH.check_dy(dy, y=cache.y)
    slope = cache.y * cache.y
    slope *= -1
    slope += 1
    dx: Array = dy * slope
    return dx, {}


def Sigmoid(*, name: str | None = None) -> Layer:
    """A sigmoid layer: any per-sample shape, kept; no parameters."""
    init = _SIGMOID.kept_shape_init
    return pair_layer("sigmoid", sigmoid_fwd, sigmoid_bwd, None, init, to_spec("Sigmoid"), name)


def Tanh(*, name: str | None = None) -> Layer:
    """A tanh layer: any per-sample shape, kept; no parameters."""
    init = _TANH.kept_shape_init
    return pair_layer("tanh", tanh_fwd, tanh_bwd, None, init, to_spec("Tanh"), name)
