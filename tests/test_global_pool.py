"""GlobalAvgPool2d: the pure pair, its declared checks, gradients, PyTorch agreement, layer."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from helpers import read_only_view

import fcnn
from fcnn.gradcheck import check_layer, check_pair
from fcnn.layers.pool import (
    GlobalAvgPool2d,
    GlobalAvgPool2dCache,
    global_avg_pool2d_bwd,
    global_avg_pool2d_fwd,
)
from fcnn.ops.layout import nchw_view

SHAPES = [(2, 3, 4, 5), (1, 1, 1, 1), (3, 2, 7, 3), (2, 4, 1, 6)]


@pytest.mark.parametrize("shape", SHAPES)
def test_gradcheck(rng: np.random.Generator, shape: tuple[int, ...]) -> None:
    report = check_pair(
        global_avg_pool2d_fwd, global_avg_pool2d_bwd, {}, rng.standard_normal(shape), rng=rng
    )
    assert report.ok(1e-7), report
    assert set(report.errors) == {"x"}


@pytest.mark.parametrize("shape", SHAPES)
def test_values_are_the_means_and_the_shares(rng: np.random.Generator, shape: Any) -> None:
    n, c, h, w = shape
    x = rng.standard_normal(shape)
    y, cache = global_avg_pool2d_fwd({}, x)
    assert isinstance(cache, GlobalAvgPool2dCache) and y.shape == (n, c)
    for i in range(n):
        for k in range(c):
            assert y[i, k] == pytest.approx(sum(x[i, k].ravel()) / (h * w), abs=1e-12)
    dy = rng.standard_normal((n, c))
    dx, grads = global_avg_pool2d_bwd(cache, dy)
    assert grads == {} and dx.shape == shape
    np.testing.assert_allclose(dx, np.repeat(dy / (h * w), h * w).reshape(shape), atol=1e-15)


@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (4, 6, 3, 3), (1, 2, 1, 9)])
def test_matches_torch_adaptive_avg_pool2d(rng: np.random.Generator, shape: Any) -> None:
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape)
    y, cache = global_avg_pool2d_fwd({}, x)
    dy = rng.standard_normal(y.shape)
    dx, _ = global_avg_pool2d_bwd(cache, dy)
    tx = torch.tensor(x, requires_grad=True)  # float64
    ty = torch.nn.functional.adaptive_avg_pool2d(tx, 1)  # (N, C, 1, 1)
    ty.backward(torch.tensor(dy)[:, :, None, None])
    np.testing.assert_allclose(y, ty.detach().numpy()[:, :, 0, 0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_in_dtype_out(rng: np.random.Generator, dtype: Any) -> None:
    x = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    y, cache = global_avg_pool2d_fwd({}, x)
    dx, _ = global_avg_pool2d_bwd(cache, rng.standard_normal(y.shape).astype(dtype))
    assert y.dtype == dtype and dx.dtype == dtype


def test_read_only_and_batch_last_inputs(rng: np.random.Generator) -> None:
    values = rng.standard_normal((3, 2, 4, 5))
    want = values.mean(axis=(2, 3))
    for x in (
        read_only_view(values),
        nchw_view(np.ascontiguousarray(values.transpose(1, 2, 3, 0))),
    ):
        y, cache = global_avg_pool2d_fwd({}, x)
        np.testing.assert_allclose(y, want, atol=1e-14)
        dy = read_only_view(rng.standard_normal(y.shape))
        dx, _ = global_avg_pool2d_bwd(cache, dy)
        np.testing.assert_allclose(dx, np.broadcast_to(dy[:, :, None, None] / 20, x.shape))
        assert dx.flags.writeable  # a new array of its own, not a broadcast view
    np.testing.assert_array_equal(read_only_view(values), values)


def test_forward_rejects_bad_input(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"^global_avg_pool2d: x must have rank 4"):
        global_avg_pool2d_fwd({}, x[:, :, 0])
    with pytest.raises(TypeError, match=r"^global_avg_pool2d: x must have a floating dtype"):
        global_avg_pool2d_fwd({}, x.astype(np.int64))
    with pytest.raises(ValueError, match=r"^global_avg_pool2d: params must have keys \[\]"):
        global_avg_pool2d_fwd({"w": x}, x)
    with pytest.raises(TypeError, match=r"^global_avg_pool2d: takes no cfg"):
        global_avg_pool2d_fwd({}, x, fcnn.Pool2dCfg(2))  # type: ignore[arg-type]


def test_backward_rejects_bad_dy(rng: np.random.Generator) -> None:
    _, cache = global_avg_pool2d_fwd({}, rng.standard_normal((2, 3, 4, 4)))
    with pytest.raises(
        ValueError, match=r"dy must have the shape of y \(2, 3\), got \(2, 3, 1, 1\)"
    ):
        global_avg_pool2d_bwd(cache, np.zeros((2, 3, 1, 1)))
    with pytest.raises(TypeError, match="y is float64, dy is float32"):
        global_avg_pool2d_bwd(cache, np.zeros((2, 3), np.float32))


def test_constructor(rng: np.random.Generator) -> None:
    layer = GlobalAvgPool2d()
    assert layer.kind == "globalpool" and dict(layer.spec) == {"type": "GlobalAvgPool2d"}
    json.dumps(dict(layer.spec))
    assert layer.init(rng, (8, 5, 3), np.float32) == ({}, {}, (8,))
    model = fcnn.sequential(fcnn.Conv2d(4, 3, padding=1), GlobalAvgPool2d(), fcnn.Dense(2))
    params, state, out = fcnn.init(model, rng, (1, 6, 7), np.float64)
    assert out == (2,) and "globalpool1" in [e["name"] for e in model.spec["layers"]]
    x = rng.standard_normal((3, 1, 6, 7))
    assert check_layer(model, params, state, x, rng=rng).ok(1e-6)


def test_constructor_rejects(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match=r"^global_avg_pool2d: input shape must be \(C, H, W\)"):
        GlobalAvgPool2d().init(rng, (8,), np.float32)
    with pytest.raises(TypeError, match=r"^global_avg_pool2d: dtype must be a floating dtype"):
        GlobalAvgPool2d().init(rng, (8, 2, 2), np.int32)
    model = fcnn.sequential(fcnn.Flatten(), GlobalAvgPool2d())
    with pytest.raises(ValueError, match=r"^globalpool1: global_avg_pool2d: input shape"):
        fcnn.init(model, rng, (2, 3, 3))
