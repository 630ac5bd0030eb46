"""Dropout and spatial dropout: fixed-mask gradients, scaling, seeds, eval identity,
purity (inputs and global random state), errors and the layers."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import read_only_view

from fcnn.gradcheck import check_layer, check_pair
from fcnn.layers.base import Context
from fcnn.layers.dense import Dense
from fcnn.layers.dropout import (
    Dropout,
    DropoutCache,
    DropoutCfg,
    SpatialDropout2d,
    dropout_bwd,
    dropout_fwd,
    spatial_dropout2d_fwd,
)
from fcnn.layers.shape import Flatten
from fcnn.model import init, sequential

Arr = np.ndarray[Any, Any]
Fwd = Callable[..., tuple[Arr, DropoutCache]]
FWDS: list[tuple[Fwd, tuple[int, ...]]] = [
    (dropout_fwd, (4, 3, 5, 2)),
    (dropout_fwd, (6, 7)),
    (spatial_dropout2d_fwd, (4, 6, 3, 5)),
]
IDS = ["elementwise-4d", "elementwise-2d", "spatial"]


def fixed_mask(fwd: Fwd, seed: int) -> Callable[[Any, Arr, DropoutCfg], tuple[Arr, DropoutCache]]:
    """The pair's forward with a fresh generator from ``seed`` per call: always the same mask."""

    def f(params: Any, x: Arr, cfg: DropoutCfg) -> tuple[Arr, DropoutCache]:
        return fwd(params, x, cfg, train=True, rng=np.random.default_rng(seed))

    return f


# --- gradients ----------------------------------------------------------------------------


@pytest.mark.parametrize(("fwd", "shape"), FWDS, ids=IDS)
def test_gradcheck_with_a_fixed_mask(
    rng: np.random.Generator, fwd: Fwd, shape: tuple[int, ...]
) -> None:
    x = rng.standard_normal(shape)
    report = check_pair(fixed_mask(fwd, 5), dropout_bwd, {}, x, DropoutCfg(0.4), rng=rng)
    assert report.ok(1e-8), report
    y, cache = fixed_mask(fwd, 5)({}, x, DropoutCfg(0.4))
    assert cache.mask is not None and 0 < np.count_nonzero(y == 0) < y.size  # some dropped


def test_gradcheck_through_a_model(rng: np.random.Generator) -> None:
    """check_layer copies ctx.rng before every pass, so the mask is fixed across them."""
    model = sequential(SpatialDropout2d(0.3), Flatten(), Dense(3), Dropout(0.5))
    params, state, _ = init(model, rng, (4, 2, 3), np.float64)
    ctx = Context(train=True, rng=np.random.default_rng(11))
    report = check_layer(model, params, state, rng.standard_normal((5, 4, 2, 3)), ctx, rng=rng)
    assert report.ok(1e-7), report


# --- values -------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_inverted_scaling(rate: float) -> None:
    x = np.ones((200, 500))
    y, cache = dropout_fwd({}, x, DropoutCfg(rate), train=True, rng=np.random.default_rng(0))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1.0 / (1.0 - rate), rtol=1e-15)
    assert abs(kept.mean() - (1.0 - rate)) < 0.01
    assert abs(y.mean() - 1.0) < 0.03  # the expectation is preserved
    dy = np.random.default_rng(1).standard_normal(x.shape)
    dx, grads = dropout_bwd(cache, dy)
    np.testing.assert_array_equal(dx, dy * y)  # x == 1: y is the scaled mask
    assert grads == {}


def test_spatial_dropout_drops_whole_channels() -> None:
    x = np.random.default_rng(0).uniform(1.0, 2.0, (50, 40, 3, 4))
    y, cache = spatial_dropout2d_fwd(
        {}, x, DropoutCfg(0.3), train=True, rng=np.random.default_rng(2)
    )
    assert cache.mask is not None and cache.mask.shape == (50, 40, 1, 1)
    dropped = np.all(y == 0, axis=(2, 3))
    kept = np.all(y != 0, axis=(2, 3))
    assert np.all(dropped | kept)  # every map is entirely dropped or entirely kept
    assert abs(dropped.mean() - 0.3) < 0.04
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-15)


@pytest.mark.parametrize(("fwd", "shape"), FWDS, ids=IDS)
def test_eval_is_the_identity_and_draws_nothing(fwd: Fwd, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(0).standard_normal(shape)
    gen = np.random.default_rng(3)
    before = copy.deepcopy(gen.bit_generator.state)
    y, cache = fwd({}, x, DropoutCfg(0.5), train=False, rng=gen)
    np.testing.assert_array_equal(y, x)
    assert gen.bit_generator.state == before
    y, cache = fwd({}, x, DropoutCfg(0.5), train=False)  # no generator needed
    dy = np.random.default_rng(1).standard_normal(shape)
    np.testing.assert_array_equal(dropout_bwd(cache, dy)[0], dy)


def test_rate_zero_is_the_identity_even_in_train_mode() -> None:
    x = np.random.default_rng(0).standard_normal((3, 4))
    y, cache = dropout_fwd({}, x, DropoutCfg(0.0), train=True)  # no generator needed
    np.testing.assert_array_equal(y, x)
    assert cache.mask is None


@pytest.mark.parametrize(("fwd", "shape"), FWDS, ids=IDS)
def test_same_seed_same_mask_different_seed_different_mask(
    fwd: Fwd, shape: tuple[int, ...]
) -> None:
    x = np.ones(shape)
    cfg = DropoutCfg(0.5)

    def mask(seed: int) -> Arr:
        return fwd({}, x, cfg, train=True, rng=np.random.default_rng(seed))[0]

    np.testing.assert_array_equal(mask(7), mask(7))
    assert not np.array_equal(mask(7), mask(8))
    # One generator used twice gives two different masks (it advances), as training needs.
    gen = np.random.default_rng(7)
    first = fwd({}, x, cfg, train=True, rng=gen)[0]
    second = fwd({}, x, cfg, train=True, rng=gen)[0]
    np.testing.assert_array_equal(first, mask(7))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize(("fwd", "shape"), FWDS, ids=IDS)
def test_backward_is_deterministic(fwd: Fwd, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    y, cache = fwd({}, x, DropoutCfg(0.5), train=True, rng=np.random.default_rng(4))
    dx1, _ = dropout_bwd(cache, dy)
    dx2, _ = dropout_bwd(cache, dy)
    np.testing.assert_array_equal(dx1, dx2)
    np.testing.assert_array_equal(dx1 == 0, y == 0)  # the gradient flows where x did


def same_global_state(a: Any, b: Any) -> bool:
    """Compare two ``np.random.get_state()`` tuples (name, keys, pos, has_gauss, cached)."""
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


@pytest.mark.parametrize(("fwd", "shape"), FWDS, ids=IDS)
def test_global_random_state_is_neither_used_nor_changed(fwd: Fwd, shape: tuple[int, ...]) -> None:
    x = np.ones(shape)
    saved = np.random.get_state()
    try:
        np.random.seed(123)
        before = np.random.get_state()
        y1, _ = fwd({}, x, DropoutCfg(0.5), train=True, rng=np.random.default_rng(9))
        assert same_global_state(before, np.random.get_state())
        np.random.seed(456)  # reseeding the global state changes nothing
        y2, _ = fwd({}, x, DropoutCfg(0.5), train=True, rng=np.random.default_rng(9))
        np.testing.assert_array_equal(y1, y2)
    finally:
        np.random.set_state(saved)


# --- dtypes and purity --------------------------------------------------------------------


@pytest.mark.parametrize(("fwd", "shape"), FWDS, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("train", [True, False])
def test_dtype_in_dtype_out(fwd: Fwd, shape: tuple[int, ...], dtype: Any, train: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    y, cache = fwd({}, x, DropoutCfg(0.3), train=train, rng=rng)
    dx, _ = dropout_bwd(cache, rng.standard_normal(shape).astype(dtype))
    assert y.dtype == dx.dtype == dtype
    if cache.mask is not None:
        assert cache.mask.dtype == dtype


@pytest.mark.parametrize(("fwd", "shape"), FWDS, ids=IDS)
def test_read_only_inputs_are_not_written(fwd: Fwd, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    values, dvalues = rng.standard_normal(shape), rng.standard_normal(shape)
    x, dy = read_only_view(values), read_only_view(dvalues)
    y, cache = fwd({}, x, DropoutCfg(0.5), train=True, rng=np.random.default_rng(1))
    dx, _ = dropout_bwd(cache, dy)
    y_ref, c_ref = fwd({}, values, DropoutCfg(0.5), train=True, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dropout_bwd(c_ref, dvalues)[0])
    np.testing.assert_array_equal(x, values)
    np.testing.assert_array_equal(dy, dvalues)
    assert not np.shares_memory(y, x) and not np.shares_memory(dx, dy)


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "err"),
    [
        (-0.1, ValueError),
        (1.0, ValueError),
        (1.5, ValueError),
        (float("nan"), ValueError),
        ("0.5", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_bad_rate(rate: Any, err: type[Exception]) -> None:
    for make in (DropoutCfg, Dropout, SpatialDropout2d):
        with pytest.raises(err, match=r"rate must be .*\[0, 1\)"):
            make(rate)


def test_bad_input_raises_naming_the_op() -> None:
    x = np.ones((2, 3, 4, 4))
    gen = np.random.default_rng(0)
    cfg = DropoutCfg(0.5)
    with pytest.raises(ValueError, match=r"spatial_dropout2d: x must have rank 4"):
        spatial_dropout2d_fwd({}, x[:, :, 0], cfg, train=True, rng=gen)
    with pytest.raises(TypeError, match="dropout: x must have a floating dtype"):
        dropout_fwd({}, x.astype(int), cfg, train=True, rng=gen)
    with pytest.raises(ValueError, match=r"dropout: params must have keys \[\]"):
        dropout_fwd({"w": x}, x, cfg, train=True, rng=gen)
    with pytest.raises(TypeError, match="cfg must be a DropoutCfg"):
        dropout_fwd({}, x, 0.5, train=True, rng=gen)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator"):
        dropout_fwd({}, x, cfg, train=True, rng=np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dropout: train mode needs a numpy\.random\.Generator"):
        dropout_fwd({}, x, cfg, train=True, rng=None)
    _, cache = dropout_fwd({}, x, cfg, train=True, rng=gen)
    with pytest.raises(ValueError, match="dy must have the shape of y"):
        dropout_bwd(cache, x[:1])
    with pytest.raises(TypeError, match="dtypes must match"):
        dropout_bwd(cache, x.astype(np.float32))
    with pytest.raises(TypeError, match="dropout: dy must have a floating dtype, got int64"):
        dropout_bwd(cache, x.astype(np.int64))
    with pytest.raises(TypeError, match="dropout: train must be a bool, got int"):
        dropout_fwd({}, x, cfg, train=1, rng=gen)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="spatial_dropout2d: train must be a bool, got str"):
        spatial_dropout2d_fwd({}, x, cfg, train="yes", rng=gen)  # type: ignore[arg-type]


def test_train_mode_without_a_generator_names_the_layer() -> None:
    rng = np.random.default_rng(0)
    model = sequential(Dense(4), sequential(Dropout(0.5, name="drop"), name="head"))
    params, state, _ = init(model, rng, (3,))
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"^head/drop: dropout: train mode needs .*rng=None"):
        model.apply(params, state, x, Context(train=True))
    y, _, _ = model.apply(params, state, x, Context(train=False))  # eval needs no generator
    assert y.shape == (2, 4)


# --- layers -------------------------------------------------------------------------------


def test_layer_records_and_init() -> None:
    rng = np.random.default_rng(0)
    d, s = Dropout(0.25), SpatialDropout2d(0.1, name="sd")
    assert d.kind == s.kind == "dropout" and s.name == "sd"
    assert dict(d.spec) == {"type": "Dropout", "rate": 0.25}
    assert dict(s.spec) == {"type": "SpatialDropout2d", "rate": 0.1}
    json.dumps([dict(d.spec), dict(s.spec)])
    assert d.init(rng, (7,), np.float32) == ({}, {}, (7,))
    assert d.init(rng, (2, 3, 4), np.float32) == ({}, {}, (2, 3, 4))
    assert s.init(rng, (2, 3, 4), np.float32) == ({}, {}, (2, 3, 4))
    with pytest.raises(ValueError, match=r"^spatial_dropout2d: input shape must be \(C, H, W\)"):
        s.init(rng, (7,), np.float32)
    model = sequential(Dense(3), Dropout(0.5), Dropout(0.5))
    params, state, _ = init(model, rng, (2,))
    assert set(params) == {"dense1"} and state == {}
    assert [entry["name"] for entry in model.spec["layers"]] == ["dense1", "dropout1", "dropout2"]


def test_layer_uses_the_context_generator() -> None:
    rng = np.random.default_rng(0)
    layer = Dropout(0.5)
    x = np.ones((4, 50), np.float32)
    a, _, _ = layer.apply({}, {}, x, Context(train=True, rng=np.random.default_rng(3)))
    b, _, _ = layer.apply({}, {}, x, Context(train=True, rng=np.random.default_rng(3)))
    c, _, _ = layer.apply({}, {}, x, Context(train=True, rng=np.random.default_rng(4)))
    e, _, _ = layer.apply({}, {}, x, Context(train=False, rng=rng))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(e, x)
