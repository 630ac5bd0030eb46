"""LeakyRelu, Gelu (exact and tanh), Sigmoid and Tanh (issue 23), and the normal CDF under the
exact GELU: gradient checks, values, PyTorch, dtypes and layouts, read-only inputs, errors,
the layers and their specs."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import read_only_view

from fcnn.gradcheck import check_pair
from fcnn.layers.activation import (
    Gelu,
    GeluCache,
    GeluCfg,
    LeakyRelu,
    LeakyReluCfg,
    Relu,
    Sigmoid,
    Tanh,
    gelu_bwd,
    gelu_fwd,
    leaky_relu_bwd,
    leaky_relu_fwd,
    sigmoid_bwd,
    sigmoid_fwd,
    tanh_bwd,
    tanh_fwd,
)
from fcnn.layers.base import Context, Layer
from fcnn.ops.layout import batch_last, nchw_view
from fcnn.ops.special import normal_cdf, normal_pdf

Arr = np.ndarray[Any, Any]

# name -> (fwd, bwd, cfg): every activation of this file as one pair with its cfg.
PAIRS: dict[str, tuple[Callable[..., Any], Callable[..., Any], Any]] = {
    "leaky_relu": (leaky_relu_fwd, leaky_relu_bwd, LeakyReluCfg(0.1)),
    "leaky_relu_0": (leaky_relu_fwd, leaky_relu_bwd, LeakyReluCfg(0.0)),
    "gelu": (gelu_fwd, gelu_bwd, GeluCfg()),
    "gelu_tanh": (gelu_fwd, gelu_bwd, GeluCfg("tanh")),
    "sigmoid": (sigmoid_fwd, sigmoid_bwd, None),
    "tanh": (tanh_fwd, tanh_bwd, None),
}
NAMES = list(PAIRS)


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> Arr:
    """Values with |v| >= 0.1 (leaky ReLU's kink at 0 stays out of the finite differences)."""
    return rng.choice([-1.0, 1.0], size=shape) * (0.1 + 2 * np.abs(rng.standard_normal(shape)))


def _torch_reference(name: str, torch: Any, x: Any) -> Any:
    F = torch.nn.functional
    return {
        "leaky_relu": lambda t: F.leaky_relu(t, 0.1),
        "leaky_relu_0": lambda t: F.leaky_relu(t, 0.0),
        "gelu": lambda t: F.gelu(t, approximate="none"),
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
    }[name](x)


# --- gradients, values, PyTorch -------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(4, 7), (2, 3, 4, 5), (6,)])
def test_gradcheck(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> None:
    fwd, bwd, cfg = PAIRS[name]
    report = check_pair(fwd, bwd, {}, away_from_zero(rng, shape), cfg, rng=rng)
    assert report.ok(1e-7), report


@pytest.mark.parametrize("name", NAMES)
def test_matches_torch_forward_and_backward(rng: np.random.Generator, name: str) -> None:
    torch = pytest.importorskip("torch")
    fwd, bwd, cfg = PAIRS[name]
    # From the far tails through 0 (the kinks and the series/fraction switch of the CDF).
    x = np.concatenate(
        [np.linspace(-12, 12, 97), [0.0, -0.0, 3.0, -3.0], 4 * rng.standard_normal(50)]
    )
    x = x.reshape(1, -1)
    y, cache = fwd({}, x, cfg)
    dy = rng.standard_normal(x.shape)
    dx, grads = bwd(cache, dy)
    tx = torch.tensor(x, requires_grad=True)
    ty = _torch_reference(name, torch, tx)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert grads == {}


def test_leaky_relu_values() -> None:
    x = np.array([[-2.0, -0.0, 0.0, 3.0, -np.inf, np.inf]])
    y, cache = leaky_relu_fwd({}, x, LeakyReluCfg(0.25))
    np.testing.assert_array_equal(y, [[-0.5, 0, 0, 3, -np.inf, np.inf]])
    dx, _ = leaky_relu_bwd(cache, np.arange(1.0, 7.0)[None])
    np.testing.assert_array_equal(dx, [[0.25, 0.5, 0.75, 4, 1.25, 6]])  # slope at exactly 0
    y0, _ = leaky_relu_fwd({}, x, LeakyReluCfg(0))
    np.testing.assert_array_equal(y0, [[0, 0, 0, 3, 0, np.inf]])  # slope 0 is ReLU, no NaN


def test_gelu_values() -> None:
    x = np.array([[-3.0, -1.0, 0.0, 1.0, 3.0, np.inf]])
    y, cache = gelu_fwd({}, x, GeluCfg())
    cdf = [0.5 * math.erfc(-v / math.sqrt(2)) for v in (-3.0, -1.0, 0.0, 1.0, 3.0)]
    np.testing.assert_allclose(y[0, :5], np.array([-3.0, -1.0, 0.0, 1.0, 3.0]) * cdf, rtol=1e-13)
    assert y[0, 5] == np.inf and isinstance(cache, GeluCache)
    yt, _ = gelu_fwd({}, x[:, :5], GeluCfg("tanh"))
    u = math.sqrt(2 / math.pi) * (1.0 + 0.044715)  # x = 1
    assert yt[0, 3] == pytest.approx(0.5 * (1 + math.tanh(u)), rel=1e-15)
    assert abs(yt[0, 3] - y[0, 3]) < 1e-3  # the approximation is close, not equal


def test_sigmoid_and_tanh_values_without_overflow() -> None:
    x = np.array([[-800.0, -40.0, 0.0, 40.0, 800.0]])
    with np.errstate(over="raise"):  # no overflow for large |x|
        y, _ = sigmoid_fwd({}, x)
    np.testing.assert_allclose(
        y, [[0.0, math.exp(-40) / (1 + math.exp(-40)), 0.5, 1.0, 1.0]], rtol=1e-15
    )
    assert y[0, 1] > 0  # the small tail is kept, not rounded to 0
    t, cache = tanh_fwd({}, x)
    np.testing.assert_array_equal(t, np.tanh(x))
    dx, _ = tanh_bwd(cache, np.ones_like(x))
    np.testing.assert_allclose(dx, 1 - np.tanh(x) ** 2)


def test_normal_cdf_agrees_with_erfc_everywhere() -> None:
    x = np.concatenate([np.linspace(-38, 38, 20001), [2.999999999, 3.0, 3.000000001]])
    got = normal_cdf(x)
    want = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    assert np.max(np.abs(got - want)) < 1e-15
    tail = (x < -1) & (want > 1e-300)  # not the subnormal numbers, which hold fewer digits
    assert np.max(np.abs(got[tail] - want[tail]) / want[tail]) < 1e-12
    np.testing.assert_array_equal(normal_cdf(np.array([-np.inf, np.inf])), [0.0, 1.0])
    assert np.isnan(normal_cdf(np.array([np.nan]))[0])
    np.testing.assert_allclose(normal_pdf(x), np.exp(-x * x / 2) / math.sqrt(2 * math.pi))


# --- dtypes, layouts, read-only inputs ----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_float32_in_float32_out(rng: np.random.Generator, name: str) -> None:
    fwd, bwd, cfg = PAIRS[name]
    x = (3 * rng.standard_normal((3, 4, 5))).astype(np.float32)
    y, cache = fwd({}, x, cfg)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx, _ = bwd(cache, dy)
    assert y.dtype == np.float32 and dx.dtype == np.float32
    y64, cache64 = fwd({}, x.astype(np.float64), cfg)
    np.testing.assert_allclose(y, y64, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, bwd(cache64, dy.astype(np.float64))[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_batch_last_layout_is_kept(rng: np.random.Generator, name: str) -> None:
    """y and dx keep an NCHW view of batch-last memory, so the next conv reads it without a copy."""
    fwd, bwd, cfg = PAIRS[name]
    x = nchw_view(batch_last(rng.standard_normal((2, 3, 4, 5))))
    y, cache = fwd({}, x, cfg)
    dx, _ = bwd(cache, nchw_view(batch_last(rng.standard_normal(y.shape))))
    assert np.shares_memory(batch_last(y), y) and np.shares_memory(batch_last(dx), dx)


@pytest.mark.parametrize("name", NAMES)
def test_read_only_non_contiguous_inputs(rng: np.random.Generator, name: str) -> None:
    fwd, bwd, cfg = PAIRS[name]
    values = 3 * rng.standard_normal((3, 2, 4))
    x = read_only_view(values)
    y, cache = fwd({}, x, cfg)
    dy_values = rng.standard_normal((3, 2, 4))
    dx, _ = bwd(cache, read_only_view(dy_values))
    np.testing.assert_array_equal(x, values)
    y_ref, cache_ref = fwd({}, values.copy(), cfg)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, bwd(cache_ref, dy_values)[0])


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_names_the_op(rng: np.random.Generator, name: str) -> None:
    fwd, bwd, cfg = PAIRS[name]
    op = name.removesuffix("_0").removesuffix("_tanh")
    x = rng.standard_normal((2, 3))
    with pytest.raises(TypeError, match=rf"^{op}: x must have a floating dtype, got int64"):
        fwd({}, x.astype(np.int64), cfg)
    with pytest.raises(ValueError, match=rf"^{op}: params must have keys \[\], got \['w'\]"):
        fwd({"w": x}, x, cfg)
    with pytest.raises(ValueError, match=rf"^{op}: x must have rank >= 1"):
        fwd({}, np.float64(1.0), cfg)
    _, cache = fwd({}, x, cfg)
    with pytest.raises(
        ValueError, match=rf"^{op}: dy must have the shape of y \(2, 3\), got \(3, 2\)"
    ):
        bwd(cache, np.zeros((3, 2)))
    with pytest.raises(
        TypeError, match=rf"^{op}: dtypes must match, but y is float64, dy is float32"
    ):
        bwd(cache, np.zeros((2, 3), np.float32))


def test_cfg_errors(rng: np.random.Generator) -> None:
    for bad in (-0.1, 1.5, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match=r"^LeakyReluCfg.slope must be a number in \[0, 1\]"):
            LeakyReluCfg(bad)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^GeluCfg.approximate must be one of \['none', 'tanh'\], got 'erf'"
    ):
        GeluCfg("erf")
    x = rng.standard_normal((2, 3))
    with pytest.raises(TypeError, match=r"^gelu: cfg must be a GeluCfg, got LeakyReluCfg"):
        gelu_fwd({}, x, LeakyReluCfg())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^sigmoid: takes no cfg, got GeluCfg"):
        sigmoid_fwd({}, x, GeluCfg())  # type: ignore[arg-type]


# --- the layers and their specs ------------------------------------------------------------

LAYERS: list[tuple[Layer, str, dict[str, Any]]] = [
    (LeakyRelu(0.2), "leakyrelu", {"type": "LeakyRelu", "slope": 0.2}),
    (LeakyRelu(), "leakyrelu", {"type": "LeakyRelu", "slope": 0.01}),
    (Gelu(), "gelu", {"type": "Gelu", "approximate": "none"}),
    (Gelu(approximate="tanh"), "gelu", {"type": "Gelu", "approximate": "tanh"}),
    (Sigmoid(), "sigmoid", {"type": "Sigmoid"}),
    (Tanh(), "tanh", {"type": "Tanh"}),
]
CONSTRUCTORS: dict[str, Callable[..., Layer]] = {
    "LeakyRelu": LeakyRelu,
    "Gelu": Gelu,
    "Sigmoid": Sigmoid,
    "Tanh": Tanh,
}


@pytest.mark.parametrize(("layer", "kind", "spec"), LAYERS)
def test_layer_init_apply_backward_and_spec(
    rng: np.random.Generator, layer: Layer, kind: str, spec: dict[str, Any]
) -> None:
    assert layer.kind == kind and layer.spec == spec
    assert json.loads(json.dumps(layer.spec)) == layer.spec
    # The spec holds exactly the constructor's arguments: it rebuilds the same layer.
    fields = {k: v for k, v in spec.items() if k != "type"}
    assert CONSTRUCTORS[spec["type"]](**fields).spec == spec
    params, state, out_shape = layer.init(rng, (3, 4, 5), np.float32)
    assert params == {} and state == {} and out_shape == (3, 4, 5)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    y, cache, _ = layer.apply(params, state, x, Context())
    assert y.shape == x.shape and y.dtype == np.float32
    dx, grads = layer.backward(cache, rng.standard_normal(y.shape).astype(np.float32))
    assert dx.shape == x.shape and grads == {}
    with pytest.raises(TypeError, match="dtype must be a floating dtype, got int32"):
        layer.init(rng, (3,), np.int32)


@pytest.mark.parametrize(
    ("layer", "op"),
    [
        (Relu(), "relu"),
        (LeakyRelu(), "leaky_relu"),
        (Gelu(), "gelu"),
        (Sigmoid(), "sigmoid"),
        (Tanh(), "tanh"),
    ],
)
def test_layer_init_keeps_the_shape_and_refuses_an_empty_axis(
    rng: np.random.Generator, layer: Layer, op: str
) -> None:
    assert layer.init(rng, (7,), np.float64) == ({}, {}, (7,))
    assert layer.init(rng, (), np.float64) == ({}, {}, ())  # one number per sample
    with pytest.raises(ValueError, match=rf"^{op}: input shape must be \(\.\.\.\) \(no batch"):
        layer.init(rng, (3, 0), np.float32)
