"""Relu, Flatten and Dense: gradient checks, values, dtypes, views, errors, constructors."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from helpers import read_only_view

from fcnn.gradcheck import check_pair
from fcnn.layers.activation import Relu, ReluCache, relu_bwd, relu_fwd
from fcnn.layers.base import Context
from fcnn.layers.dense import Dense, DenseCache, dense_bwd, dense_fwd
from fcnn.layers.shape import Flatten, FlattenCache, flatten_bwd, flatten_fwd

Arr = np.ndarray[Any, Any]


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> Arr:
    """Values with |v| >= 0.1, so finite differences never cross the kink at 0."""
    return rng.choice([-1.0, 1.0], size=shape) * (0.1 + np.abs(rng.standard_normal(shape)))


def dense_params(rng: np.random.Generator, d_in: int, d_out: int, dtype: Any = np.float64) -> Any:
    return {
        "w": rng.standard_normal((d_in, d_out)).astype(dtype),
        "b": rng.standard_normal(d_out).astype(dtype),
    }


# --- relu -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 4, 5), (6,)])
def test_relu_gradcheck(rng: np.random.Generator, shape: tuple[int, ...]) -> None:
    report = check_pair(relu_fwd, relu_bwd, {}, away_from_zero(rng, shape), None, rng=rng)
    assert report.ok(1e-6), report


def test_relu_values() -> None:
    x = np.array([[-2.0, -0.0, 0.0, 3.0, -np.inf, np.inf]])
    y, cache = relu_fwd({}, x)
    np.testing.assert_array_equal(y, [[0, 0, 0, 3, 0, np.inf]])
    dx, grads = relu_bwd(cache, np.arange(1.0, 7.0)[None])
    np.testing.assert_array_equal(dx, [[0, 0, 0, 4, 0, 6]])  # derivative 0 at exactly 0
    assert grads == {} and isinstance(cache, ReluCache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_dtype(rng: np.random.Generator, dtype: Any) -> None:
    x = rng.standard_normal((3, 4)).astype(dtype)
    y, cache = relu_fwd({}, x)
    dx, _ = relu_bwd(cache, rng.standard_normal((3, 4)).astype(dtype))
    assert y.dtype == dtype and dx.dtype == dtype


def test_relu_read_only_non_contiguous(rng: np.random.Generator) -> None:
    values = rng.standard_normal((3, 2, 4))
    x = read_only_view(values)
    y, cache = relu_fwd({}, x)
    dy = read_only_view(rng.standard_normal((3, 2, 4)))
    dx, _ = relu_bwd(cache, dy)
    np.testing.assert_array_equal(x, values)
    np.testing.assert_array_equal(y, np.maximum(values, 0))
    np.testing.assert_array_equal(dx, dy * (values > 0))


def _odd_stride_on_a_length_1_axis(a: np.ndarray) -> np.ndarray:
    """Dense ``a: (M, 1, ...)`` whose length-1 axis has a stride no layout would give it.

    ReLU's fast path pairs x's and y's memory element by element; this checks that
    such a stride does not make the two orders differ.
    """
    strides = (a.strides[0], 12345 * a.itemsize, *a.strides[2:])
    out: np.ndarray = np.lib.stride_tricks.as_strided(a, strides=strides, writeable=False)
    return out


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a,  # C-ordered
        lambda a: a.transpose(3, 0, 1, 2),  # an NCHW view of batch-last memory
        lambda a: a[:, ::2],  # strided: not one block of memory
        lambda a: a[::-1],  # negative strides
        lambda a: _odd_stride_on_a_length_1_axis(a.reshape(-1, 1, 2, 2)),
    ],
)
@pytest.mark.parametrize("size", [3, 4096, 4097 * 2])  # below, at and above the zeros block
def test_relu_values_in_every_memory_layout(
    rng: np.random.Generator, make: Any, size: int
) -> None:
    base = rng.standard_normal((size // 8 + 1, 2, 2, 2)).astype(np.float32)
    base.flat[:3] = [-np.inf, np.nan, np.inf]
    x = make(base)
    y, _ = relu_fwd({}, x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))  # -inf -> 0, NaN stays NaN
    assert y.dtype == x.dtype
    if x.flags.c_contiguous or x.transpose(1, 2, 3, 0).flags.c_contiguous:
        # A dense input's layout is kept (batch-last stays batch-last); axes of length 1
        # never move in memory, so their strides do not matter.
        moving = [i for i, d in enumerate(x.shape) if d > 1]
        assert [y.strides[i] for i in moving] == [x.strides[i] for i in moving]


def test_relu_rejects(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match=r"^relu: params must have keys \[\], got \['w'\]"):
        relu_fwd({"w": x}, x)
    with pytest.raises(TypeError, match=r"^relu: x must have a floating dtype, got int64"):
        relu_fwd({}, np.ones((2, 3), dtype=np.int64))
    with pytest.raises(TypeError, match=r"^relu: x must have a floating dtype, got object"):
        relu_fwd({}, x.astype(object))
    with pytest.raises(TypeError, match=r"^relu: takes no cfg"):
        relu_fwd({}, x, 3)  # type: ignore[arg-type]
    _, cache = relu_fwd({}, x)
    with pytest.raises(
        ValueError, match=r"^relu: dy must have the shape of y \(2, 3\), got \(3, 2\)"
    ):
        relu_bwd(cache, x.T)
    with pytest.raises(TypeError, match=r"^relu: dtypes must match"):
        relu_bwd(cache, x.astype(np.float32))


def test_relu_constructor(rng: np.random.Generator) -> None:
    layer = Relu(name="act")
    assert layer.kind == "relu" and layer.name == "act"
    assert layer.init(rng, (3, 5, 5), np.float32) == ({}, {}, (3, 5, 5))
    assert json.loads(json.dumps(layer.spec)) == {"type": "Relu"}
    x = rng.standard_normal((2, 3, 5, 5))
    y, cache, state = layer.apply({}, {}, x, Context())
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert layer.backward(cache, np.ones_like(y))[0].shape == x.shape and state == {}


# --- flatten ----------------------------------------------------------------------------


def test_flatten_gradcheck(rng: np.random.Generator) -> None:
    report = check_pair(flatten_fwd, flatten_bwd, {}, rng.standard_normal((2, 3, 2, 4)), rng=rng)
    assert report.ok(1e-6), report


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flatten_values_and_dtype(rng: np.random.Generator, dtype: Any) -> None:
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    y, cache = flatten_fwd({}, x)
    assert y.shape == (2, 60) and y.dtype == dtype and isinstance(cache, FlattenCache)
    np.testing.assert_array_equal(y, x.reshape(2, -1))
    dy = rng.standard_normal((2, 60)).astype(dtype)
    dx, grads = flatten_bwd(cache, dy)
    assert dx.dtype == dtype and grads == {}
    np.testing.assert_array_equal(dx, dy.reshape(x.shape))


def test_flatten_read_only_non_contiguous_and_empty_batch(rng: np.random.Generator) -> None:
    values = rng.standard_normal((2, 3, 4))
    x = read_only_view(values)
    y, cache = flatten_fwd({}, x)
    np.testing.assert_array_equal(y, values.reshape(2, 12))
    np.testing.assert_array_equal(x, values)
    dx, _ = flatten_bwd(cache, read_only_view(rng.standard_normal((2, 12))))
    assert dx.shape == (2, 3, 4)
    y0, _ = flatten_fwd({}, np.zeros((0, 3, 4)))
    assert y0.shape == (0, 12)


def test_flatten_rejects(rng: np.random.Generator) -> None:
    with pytest.raises(
        ValueError, match=r"^flatten: x must have rank >= 2 \(N, D1, ...\), got shape \(4,\)"
    ):
        flatten_fwd({}, np.ones(4))
    with pytest.raises(TypeError, match=r"^flatten: x must have a floating dtype, got int32"):
        flatten_fwd({}, np.ones((2, 2), dtype=np.int32))
    with pytest.raises(ValueError, match=r"^flatten: params must have keys \[\]"):
        flatten_fwd({"b": np.ones(1)}, np.ones((2, 2)))
    _, cache = flatten_fwd({}, rng.standard_normal((2, 3, 4)))
    with pytest.raises(ValueError, match=r"^flatten: dy must have the shape of y \(2, 12\)"):
        flatten_bwd(cache, np.ones((2, 3, 4)))
    with pytest.raises(TypeError, match=r"^flatten: dtypes must match, but y is float64, dy is f"):
        flatten_bwd(cache, np.ones((2, 12), dtype=np.float32))
    with pytest.raises(TypeError, match=r"^flatten: dy must have a floating dtype, got int64"):
        flatten_bwd(cache, np.ones((2, 12), dtype=np.int64))


def test_flatten_constructor(rng: np.random.Generator) -> None:
    layer = Flatten()
    assert layer.kind == "flatten" and layer.name is None
    assert layer.init(rng, (3, 5, 4), np.float32) == ({}, {}, (60,))
    assert json.loads(json.dumps(layer.spec)) == {"type": "Flatten"}
    with pytest.raises(ValueError, match=r"^flatten: input shape must be"):
        layer.init(rng, (), np.float32)


# --- dense ------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "d_in", "d_out"), [(4, 5, 3), (1, 7, 1), (3, 1, 6)])
def test_dense_gradcheck(rng: np.random.Generator, n: int, d_in: int, d_out: int) -> None:
    params = dense_params(rng, d_in, d_out)
    report = check_pair(dense_fwd, dense_bwd, params, rng.standard_normal((n, d_in)), rng=rng)
    assert report.ok(1e-6), report
    assert set(report.errors) == {"x", "w", "b"}


def test_dense_values(rng: np.random.Generator) -> None:
    params = dense_params(rng, 4, 3)
    x = rng.standard_normal((5, 4))
    y, cache = dense_fwd(params, x)
    assert isinstance(cache, DenseCache)
    np.testing.assert_allclose(y, x @ params["w"] + params["b"], atol=1e-14)
    dy = rng.standard_normal((5, 3))
    dx, grads = dense_bwd(cache, dy)
    np.testing.assert_allclose(dx, dy @ params["w"].T, atol=1e-14)
    np.testing.assert_allclose(grads["w"], x.T @ dy, atol=1e-14)
    np.testing.assert_allclose(grads["b"], dy.sum(axis=0), atol=1e-14)


def test_dense_float32(rng: np.random.Generator) -> None:
    params = dense_params(rng, 6, 2, np.float32)
    y, cache = dense_fwd(params, rng.standard_normal((3, 6)).astype(np.float32))
    dx, grads = dense_bwd(cache, rng.standard_normal((3, 2)).astype(np.float32))
    assert y.dtype == dx.dtype == grads["w"].dtype == grads["b"].dtype == np.float32


def test_dense_read_only_non_contiguous(rng: np.random.Generator) -> None:
    p = dense_params(rng, 4, 3)
    params = {"w": read_only_view(p["w"]), "b": read_only_view(p["b"])}
    xv = rng.standard_normal((5, 4))
    x = read_only_view(xv)
    y, cache = dense_fwd(params, x)
    dy = read_only_view(rng.standard_normal((5, 3)))
    _, grads = dense_bwd(cache, dy)
    np.testing.assert_allclose(y, xv @ p["w"] + p["b"], atol=1e-14)
    np.testing.assert_allclose(grads["w"], xv.T @ dy, atol=1e-14)
    np.testing.assert_array_equal(x, xv)
    np.testing.assert_array_equal(params["w"], p["w"])


def test_dense_rejects(rng: np.random.Generator) -> None:
    params = dense_params(rng, 4, 3)
    x = rng.standard_normal((2, 4))
    with pytest.raises(
        ValueError, match=r"^dense: x must have rank 2 \(N, D_in\).*insert Flatten\(\)"
    ):
        dense_fwd(params, rng.standard_normal((2, 1, 2, 2)))
    with pytest.raises(
        ValueError, match=r"^dense: x must have rank 2 \(N, D_in\), got shape \(4,\)$"
    ):
        dense_fwd(params, x[0])
    with pytest.raises(ValueError, match=r"^dense: x has 5 features \(D_in\) but w expects 4$"):
        dense_fwd(params, rng.standard_normal((2, 5)))
    with pytest.raises(
        TypeError, match=r"^dense: dtypes must match, but x is float32, w is float64"
    ):
        dense_fwd(params, x.astype(np.float32))
    with pytest.raises(TypeError, match=r"^dense: x must have a floating dtype, got int64"):
        dense_fwd(params, np.ones((2, 4), dtype=np.int64))
    with pytest.raises(TypeError, match=r"^dense: x must have a floating dtype, got object"):
        dense_fwd(params, x.astype(object))
    with pytest.raises(
        ValueError, match=r"^dense: params must have keys \['b', 'w'\].*missing \['b'\]"
    ):
        dense_fwd({"w": params["w"]}, x)
    with pytest.raises(ValueError, match=r"^dense: params .*unexpected \['v'\]"):
        dense_fwd({**params, "v": params["b"]}, x)
    with pytest.raises(
        ValueError, match=r"^dense: b must have shape \(D_out,\) = \(3,\), got \(4,\)"
    ):
        dense_fwd({"w": params["w"], "b": np.zeros(4)}, x)
    with pytest.raises(ValueError, match=r"^dense: w must have rank 2"):
        dense_fwd({"w": params["w"][None], "b": params["b"]}, x)
    with pytest.raises(TypeError, match=r"^dense: takes no cfg"):
        dense_fwd(params, x, "cfg")  # type: ignore[arg-type]
    _, cache = dense_fwd(params, x)
    with pytest.raises(
        ValueError, match=r"^dense: dy must have the shape of y \(2, 3\), got \(3, 2\)"
    ):
        dense_bwd(cache, np.ones((3, 2)))
    with pytest.raises(TypeError, match=r"^dense: dtypes must match"):
        dense_bwd(cache, np.ones((2, 3), dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_constructor(dtype: Any) -> None:
    layer = Dense(50, name="fc")
    assert layer.kind == "dense" and layer.name == "fc"
    params, state, out = layer.init(np.random.default_rng(0), (800,), dtype)
    assert out == (50,) and state == {}
    assert params["w"].shape == (800, 50) and params["b"].shape == (50,)
    assert params["w"].dtype == params["b"].dtype == dtype
    assert np.all(params["b"] == 0)
    assert params["w"].std() == pytest.approx(np.sqrt(2 / 800), rel=0.05)  # He-normal
    assert json.loads(json.dumps(layer.spec)) == {"type": "Dense", "out_features": 50}


def test_dense_constructor_rejects(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match=r"^dense: out_features must be >= 1, got 0"):
        Dense(0)
    with pytest.raises(TypeError, match=r"^dense: out_features must be an int"):
        Dense(2.0)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^dense: input shape must be \(D_in,\).*insert Flatten\(\)"
    ):
        Dense(3).init(rng, (2, 4, 4), np.float32)
    with pytest.raises(TypeError, match=r"^dense: dtype must be a floating dtype"):
        Dense(3).init(rng, (4,), np.int64)


def test_flatten_dense_chain_infers_sizes(rng: np.random.Generator) -> None:
    _, _, flat = Flatten().init(rng, (2, 3, 4), np.float64)
    params, _, out = Dense(5).init(rng, flat, np.float64)
    y, _ = dense_fwd(params, flatten_fwd({}, rng.standard_normal((7, 2, 3, 4)))[0])
    assert y.shape == (7, *out)
