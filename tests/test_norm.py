"""Batch norm: full train-mode gradients, running statistics, eval mode, dtypes, purity,
errors, the layers, and PyTorch as an optional reference."""

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
from fcnn.layers.norm import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNormCache,
    BatchNormCfg,
    batch_norm1d_bwd,
    batch_norm1d_fwd,
    batch_norm2d_bwd,
    batch_norm2d_fwd,
)
from fcnn.model import init, sequential
from fcnn.tree import flatten_dict, tree_map

Arr = np.ndarray[Any, Any]
Fwd = Callable[..., tuple[Arr, BatchNormCache]]
Bwd = Callable[[BatchNormCache, Arr], tuple[Arr, dict[str, Arr]]]

# (fwd, bwd, x shape): conv maps with H != W, and features.
PAIRS: list[tuple[Fwd, Bwd, tuple[int, ...]]] = [
    (batch_norm2d_fwd, batch_norm2d_bwd, (3, 4, 5, 2)),
    (batch_norm1d_fwd, batch_norm1d_bwd, (7, 5)),
]
IDS = ["2d", "1d"]


def make(
    rng: np.random.Generator, shape: tuple[int, ...], dtype: Any = np.float64
) -> tuple[dict[str, Arr], dict[str, Arr], Arr]:
    """Random gamma/beta, non-trivial running statistics, and x with per-channel offsets."""
    c = shape[1]
    params = {"gamma": rng.uniform(0.5, 2.0, c), "beta": rng.standard_normal(c)}
    state = {"mean": rng.standard_normal(c), "var": rng.uniform(0.5, 2.0, c)}
    offset = rng.standard_normal(c).reshape((1, c) + (1,) * (len(shape) - 2))
    x = 2.0 * rng.standard_normal(shape) + 3.0 * offset

    def cast(a: Arr) -> Arr:
        return a.astype(dtype)

    return tree_map(cast, params), tree_map(cast, state), cast(x)


def randn(rng: np.random.Generator, shape: tuple[int, ...]) -> Arr:
    return np.asarray(rng.standard_normal(shape))


def axes_of(x: Arr) -> tuple[int, ...]:
    return (0, *range(2, x.ndim))


def bcast(v: Arr, x: Arr) -> Arr:
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


# --- gradients ----------------------------------------------------------------------------


@pytest.mark.parametrize(("fwd", "bwd", "shape"), PAIRS, ids=IDS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_gradcheck(
    rng: np.random.Generator, fwd: Fwd, bwd: Bwd, shape: tuple[int, ...], train: bool
) -> None:
    params, state, x = make(rng, shape)
    cfg = BatchNormCfg(momentum=0.3, eps=1e-3)

    def pair_fwd(p: Any, xx: Arr, c: BatchNormCfg) -> tuple[Arr, BatchNormCache]:
        y, cache = fwd(p, xx, c, state=state, train=train)
        return y, cache

    report = check_pair(pair_fwd, bwd, params, x, cfg, rng=rng)
    assert set(report.errors) == {"x", "gamma", "beta"}
    assert report.ok(1e-7), report


def test_train_dx_is_not_the_eval_formula(rng: np.random.Generator) -> None:
    """The train-mode dx differs from gamma / std * dy: the batch statistics depend on x."""
    params, state, x = make(rng, (4, 3, 3, 3))
    y, cache = batch_norm2d_fwd(params, x, BatchNormCfg(eps=1e-12), state=state, train=True)
    dy = randn(rng, y.shape)
    dx, _ = batch_norm2d_bwd(cache, dy)
    std = np.sqrt(x.var(axis=(0, 2, 3)) + 1e-12)
    simplified = dy * bcast(params["gamma"] / std, x)
    assert not np.allclose(dx, simplified, atol=1e-3)
    # The full gradient is orthogonal to per-channel shifts and (up to eps) to x's deviations.
    np.testing.assert_allclose(dx.sum(axis=(0, 2, 3)), 0.0, atol=1e-10)
    xc = x - x.mean(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose((dx * xc).sum(axis=(0, 2, 3)), 0.0, atol=1e-9)


def test_gradcheck_through_a_model_in_train_mode(rng: np.random.Generator) -> None:
    from fcnn.layers.activation import Relu
    from fcnn.layers.conv import Conv2d
    from fcnn.layers.dense import Dense
    from fcnn.layers.shape import Flatten

    model = sequential(
        Conv2d(3, 3, padding=1), BatchNorm2d(), Relu(), Flatten(), Dense(4), BatchNorm1d()
    )
    params, state, _ = init(model, rng, (2, 4, 3), np.float64)
    x = rng.standard_normal((5, 2, 4, 3))
    ctx = Context(train=True)
    report = check_layer(model, params, state, x, ctx, rng=rng)
    # A bias right before batch norm has an exactly zero gradient (the batch mean
    # removes it), which a relative error cannot measure: check those apart.
    biases = {"conv1/b", "dense1/b"}
    rest = {k: v for k, v in report.errors.items() if k not in biases}
    assert max(rest.values()) < 1e-6, report
    assert {"x", "conv1/w", "bn1/gamma", "bn1/beta", "bn2/gamma", "bn2/beta"} <= set(rest)
    y, cache, _ = model.apply(params, state, x, ctx)
    _, grads = model.backward(cache, randn(rng, y.shape))
    for path in biases:
        assert np.max(np.abs(flatten_dict(grads)[path])) < 1e-12, path


# --- values and running statistics --------------------------------------------------------


@pytest.mark.parametrize(("fwd", "bwd", "shape"), PAIRS, ids=IDS)
def test_train_forward_matches_the_formula(
    rng: np.random.Generator, fwd: Fwd, bwd: Bwd, shape: tuple[int, ...]
) -> None:
    params, state, x = make(rng, shape)
    cfg = BatchNormCfg(momentum=0.25, eps=1e-4)
    y, _c = fwd(params, x, cfg, state=state, train=True)
    new_state = _c.state
    ax = axes_of(x)
    mean, var = x.mean(axis=ax), x.var(axis=ax)
    want = bcast(params["gamma"], x) * (x - bcast(mean, x)) / np.sqrt(bcast(var, x) + 1e-4)
    np.testing.assert_allclose(y, want + bcast(params["beta"], x), rtol=1e-12, atol=1e-12)
    m = x.size // x.shape[1]
    np.testing.assert_allclose(new_state["mean"], 0.75 * state["mean"] + 0.25 * mean, rtol=1e-12)
    unbiased = var * m / (m - 1)
    np.testing.assert_allclose(new_state["var"], 0.75 * state["var"] + 0.25 * unbiased, rtol=1e-12)
    # Normalised with the biased variance: y has mean beta and (biased) std ~ gamma.
    np.testing.assert_allclose(y.mean(axis=ax), params["beta"], atol=1e-12)
    np.testing.assert_allclose(y.std(axis=ax), params["gamma"], rtol=1e-3)


@pytest.mark.parametrize(("fwd", "bwd", "shape"), PAIRS, ids=IDS)
def test_eval_forward_uses_running_statistics(
    rng: np.random.Generator, fwd: Fwd, bwd: Bwd, shape: tuple[int, ...]
) -> None:
    params, state, x = make(rng, shape)
    y, _c = fwd(params, x, BatchNormCfg(eps=1e-3), state=state, train=False)
    new_state = _c.state
    scale = params["gamma"] / np.sqrt(state["var"] + 1e-3)
    want = (x - bcast(state["mean"], x)) * bcast(scale, x) + bcast(params["beta"], x)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    assert new_state is state  # eval mode never changes the state


@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_running_statistics_converge_to_the_data_statistics(
    rng: np.random.Generator, momentum: float
) -> None:
    c = 3
    mu, sigma = np.array([2.0, -1.0, 0.5]), np.array([0.5, 3.0, 1.0])
    params = {"gamma": np.ones(c), "beta": np.zeros(c)}
    state = {"mean": np.zeros(c), "var": np.ones(c)}
    cfg = BatchNormCfg(momentum=momentum)
    for _ in range(300):
        x = mu.reshape(1, c, 1, 1) + sigma.reshape(1, c, 1, 1) * rng.standard_normal((8, c, 4, 4))
        _, _c = batch_norm2d_fwd(params, x, cfg, state=state, train=True)
        state = _c.state
    np.testing.assert_allclose(state["mean"], mu, atol=0.05 * sigma.max())
    np.testing.assert_allclose(state["var"], sigma**2, rtol=0.15)
    # ... after which eval mode standardises data from that distribution.
    x = mu.reshape(1, c, 1, 1) + sigma.reshape(1, c, 1, 1) * rng.standard_normal((64, c, 8, 8))
    y, _ = batch_norm2d_fwd(params, x, cfg, state=state, train=False)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=0.1)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1.0, atol=0.1)


def test_running_variance_is_unbiased_on_average(rng: np.random.Generator) -> None:
    """With momentum 1 the running variance is the unbiased estimate of each batch:
    small batches (M = 4) average to the true variance, not to 3/4 of it."""
    params = {"gamma": np.ones(1), "beta": np.zeros(1)}
    state = {"mean": np.zeros(1), "var": np.ones(1)}
    cfg = BatchNormCfg(momentum=1.0)
    seen = []
    for _ in range(4000):
        x = 2.0 * rng.standard_normal((4, 1))
        seen.append(batch_norm1d_fwd(params, x, cfg, state=state, train=True)[1].state["var"][0])
    assert abs(np.mean(seen) - 4.0) < 0.2  # biased would be 3.0


@pytest.mark.parametrize(("fwd", "bwd", "shape"), PAIRS, ids=IDS)
def test_eval_is_deterministic_and_independent_of_batch_size(
    rng: np.random.Generator, fwd: Fwd, bwd: Bwd, shape: tuple[int, ...]
) -> None:
    params, state, x = make(rng, shape)
    cfg = BatchNormCfg()
    y_all, _ = fwd(params, x, cfg, state=state, train=False)
    y_again, _ = fwd(params, x, cfg, state=state, train=False)
    np.testing.assert_array_equal(y_all, y_again)
    one_by_one = np.concatenate(
        [fwd(params, x[i : i + 1], cfg, state=state, train=False)[0] for i in range(len(x))]
    )
    np.testing.assert_allclose(one_by_one, y_all, rtol=1e-14, atol=1e-14)
    # Train mode, by contrast, depends on the rest of the batch.
    y_train, _ = fwd(params, x, cfg, state=state, train=True)
    y_half, _ = fwd(params, x[:2], cfg, state=state, train=True)
    assert not np.allclose(y_half, y_train[:2])


@pytest.mark.parametrize(("fwd", "bwd", "shape"), PAIRS, ids=IDS)
def test_eval_backward(
    rng: np.random.Generator, fwd: Fwd, bwd: Bwd, shape: tuple[int, ...]
) -> None:
    params, state, x = make(rng, shape)
    y, cache = fwd(params, x, BatchNormCfg(eps=1e-3), state=state, train=False)
    dy = randn(rng, y.shape)
    dx, grads = bwd(cache, dy)
    inv_std = 1.0 / np.sqrt(state["var"] + 1e-3)
    np.testing.assert_allclose(dx, dy * bcast(params["gamma"] * inv_std, x), rtol=1e-12)
    xhat = (x - bcast(state["mean"], x)) * bcast(inv_std, x)
    np.testing.assert_allclose(grads["gamma"], (dy * xhat).sum(axis=axes_of(x)), rtol=1e-10)
    np.testing.assert_allclose(grads["beta"], dy.sum(axis=axes_of(x)), rtol=1e-10)


# --- dtypes and purity --------------------------------------------------------------------


@pytest.mark.parametrize(("fwd", "bwd", "shape"), PAIRS, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_dtype_in_dtype_out(
    rng: np.random.Generator,
    fwd: Fwd,
    bwd: Bwd,
    shape: tuple[int, ...],
    dtype: Any,
    train: bool,
) -> None:
    params, state, x = make(rng, shape, dtype)
    y, cache = fwd(params, x, BatchNormCfg(), state=state, train=train)
    new_state = cache.state
    dx, grads = bwd(cache, randn(rng, y.shape).astype(dtype))
    for name, a in {
        "y": y,
        "dx": dx,
        **grads,
        **{f"state {k}": v for k, v in new_state.items()},
    }.items():
        assert a.dtype == dtype, name


def test_float32_agrees_with_float64(rng: np.random.Generator) -> None:
    params, state, x = make(rng, (16, 4, 6, 5))
    dy = randn(rng, x.shape)
    cfg = BatchNormCfg()
    y64, c64 = batch_norm2d_fwd(params, x, cfg, state=state, train=True)
    s64 = c64.state
    dx64, g64 = batch_norm2d_bwd(c64, dy)

    def f32(a: Arr) -> Arr:
        return a.astype(np.float32)

    y32, c32 = batch_norm2d_fwd(
        tree_map(f32, params), f32(x), cfg, state=tree_map(f32, state), train=True
    )
    s32 = c32.state
    dx32, g32 = batch_norm2d_bwd(c32, f32(dy))
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx32, dx64, rtol=1e-3, atol=1e-4)
    for k in g64:
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-4, atol=1e-3)
    for k in s64:
        np.testing.assert_allclose(s32[k], s64[k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("fwd", "bwd", "shape"), PAIRS, ids=IDS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_read_only_inputs_are_not_written(
    rng: np.random.Generator, fwd: Fwd, bwd: Bwd, shape: tuple[int, ...], train: bool
) -> None:
    params, state, x = make(rng, shape)
    dy = rng.standard_normal(shape)
    cfg = BatchNormCfg()
    y_ref, c_ref = fwd(params, x, cfg, state=state, train=train)
    s_ref = c_ref.state
    dx_ref, g_ref = bwd(c_ref, dy)
    saved = copy.deepcopy((params, state, x, dy))

    def ro(a: Arr) -> Arr:
        return read_only_view(a) if a.ndim > 1 else _frozen(a)

    y, cache = fwd(tree_map(ro, params), ro(x), cfg, state=tree_map(ro, state), train=train)
    new_state = cache.state
    dx, grads = bwd(cache, ro(dy))
    # Same values (non-contiguous x, dy may be summed in another order: rounding only).
    np.testing.assert_allclose(y, y_ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-13, atol=1e-13)
    for k in g_ref:
        np.testing.assert_allclose(grads[k], g_ref[k], rtol=1e-13, atol=1e-13)
    for k in s_ref:
        np.testing.assert_allclose(new_state[k], s_ref[k], rtol=1e-13, atol=1e-13)
    for before, after in zip(
        flatten_dict({"t": saved}).values(),
        flatten_dict({"t": (params, state, x, dy)}).values(),
        strict=True,
    ):
        np.testing.assert_array_equal(before, after)
    # The returned arrays are new: writing to them cannot reach the inputs.
    assert not np.shares_memory(y, x) and not np.shares_memory(dx, dy)
    if train:
        assert not any(np.shares_memory(new_state[k], state[k]) for k in state)


def _frozen(a: Arr) -> Arr:
    b = a.copy()
    b.flags.writeable = False
    return b


# --- bad input ----------------------------------------------------------------------------


def test_bad_input_raises_naming_the_op(rng: np.random.Generator) -> None:
    params, state, x = make(rng, (4, 3, 2, 2))
    cfg = BatchNormCfg()

    def call(**kw: Any) -> Any:
        args = {"params": params, "state": state, "x": x, "cfg": cfg, "train": True, **kw}
        return batch_norm2d_fwd(
            args["params"], args["x"], args["cfg"], state=args["state"], train=args["train"]
        )

    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"x": x[:, :, 0]}, ValueError, r"batch_norm2d: x must have rank 4 \(N, C, H, W\)"),
        (
            {"x": x[:, :2]},
            ValueError,
            r"^batch_norm2d: x has 2 channels \(C\) but gamma expects 3$",
        ),
        ({"x": x.astype(np.int64)}, TypeError, "floating dtype"),
        ({"x": x.astype(np.float32)}, TypeError, "dtypes must match"),
        ({"params": {"gamma": params["gamma"]}}, ValueError, r"missing \['beta'\]"),
        (
            {"state": {"mean": state["mean"]}},
            ValueError,
            r"^batch_norm2d: state must have keys \['mean', 'var'\].*missing \['var'\]",
        ),
        ({"state": {**state, "var": state["var"][:2]}}, ValueError, r"state var must have shape"),
        ({"cfg": None}, TypeError, "cfg must be a BatchNormCfg"),
        ({"train": "yes"}, TypeError, "train must be a bool"),
        ({"x": x[:1, :, :1, :1]}, ValueError, "more than 1 value per channel"),
        ({"x": x[:, :0]}, ValueError, "at least 1 channel"),
    ]
    for kw, err, match in cases:
        with pytest.raises(err, match=match):
            call(**kw)
    # One value per channel is fine in eval mode.
    y, _ = call(x=x[:1, :, :1, :1], train=False)
    assert y.shape == (1, 3, 1, 1)
    with pytest.raises(ValueError, match=r"batch_norm1d: x must have rank 2 \(N, C\)"):
        batch_norm1d_fwd(params, x, cfg, state=state, train=True)
    y, cache = batch_norm2d_fwd(params, x, cfg, state=state, train=True)
    with pytest.raises(ValueError, match="dy must have the shape of y"):
        batch_norm2d_bwd(cache, y[:2])
    with pytest.raises(TypeError, match="dtypes must match"):
        batch_norm2d_bwd(cache, y.astype(np.float32))


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"momentum": -0.1}, ValueError, r"momentum must be in \[0, 1\], got -0.1"),
        ({"momentum": 1.5}, ValueError, "momentum"),
        ({"momentum": float("nan")}, ValueError, "momentum"),
        ({"momentum": None}, TypeError, "momentum must be a number"),
        ({"eps": 0.0}, ValueError, "eps must be a finite number > 0, got 0.0"),
        ({"eps": float("inf")}, ValueError, "eps"),
        ({"eps": True}, TypeError, "eps"),
    ],
)
def test_bad_cfg(kw: dict[str, Any], err: type[Exception], match: str) -> None:
    with pytest.raises(err, match=match):
        BatchNormCfg(**kw)
    with pytest.raises(err, match=match):
        BatchNorm2d(**kw)


def test_cfg_is_frozen_and_normalised() -> None:
    cfg = BatchNormCfg(momentum=1, eps=1e-3)
    assert cfg == BatchNormCfg(1.0, 0.001) and isinstance(cfg.momentum, float)
    with pytest.raises(AttributeError):
        cfg.eps = 1.0  # type: ignore[misc]


# --- layers -------------------------------------------------------------------------------


def test_layer_records_and_init(rng: np.random.Generator) -> None:
    bn2, bn1 = BatchNorm2d(momentum=0.2, eps=1e-3), BatchNorm1d(name="head_bn")
    assert bn2.kind == bn1.kind == "bn" and bn1.name == "head_bn"
    assert dict(bn2.spec) == {"type": "BatchNorm2d", "momentum": 0.2, "eps": 1e-3}
    assert dict(bn1.spec) == {"type": "BatchNorm1d", "momentum": 0.1, "eps": 1e-5}
    json.dumps(dict(bn2.spec))
    params, state, out = bn2.init(rng, (5, 3, 4), np.float32)
    assert out == (5, 3, 4)
    np.testing.assert_array_equal(params["gamma"], np.ones(5, np.float32))
    np.testing.assert_array_equal(params["beta"], np.zeros(5, np.float32))
    np.testing.assert_array_equal(state["mean"], np.zeros(5, np.float32))
    np.testing.assert_array_equal(state["var"], np.ones(5, np.float32))
    assert all(a.dtype == np.float32 for a in (*params.values(), *state.values()))
    params, state, out = bn1.init(rng, (7,), np.float64)
    assert out == (7,) and params["gamma"].shape == state["var"].shape == (7,)
    with pytest.raises(ValueError, match=r"^batch_norm1d: input shape must be \(C,\).*BatchNorm2d"):
        bn1.init(rng, (5, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"^batch_norm2d: input shape must be \(C, H, W\)"):
        bn2.init(rng, (5,), np.float32)
    with pytest.raises(TypeError, match="floating"):
        bn2.init(rng, (5, 3, 4), np.int32)


def test_layer_threads_state_through_a_model(rng: np.random.Generator) -> None:
    model = sequential(BatchNorm2d(momentum=0.5), BatchNorm2d())
    params, state, _ = init(model, rng, (3, 2, 2), np.float64)
    assert set(params) == set(state) == {"bn1", "bn2"}
    x = rng.standard_normal((4, 3, 2, 2)) + 5.0
    before = copy.deepcopy(state)
    _, _, s_eval = model.apply(params, state, x, Context(train=False))
    for k, v in flatten_dict(before).items():
        np.testing.assert_array_equal(flatten_dict(s_eval)[k], v)
    _, _, s_train = model.apply(params, state, x, Context(train=True))
    np.testing.assert_allclose(s_train["bn1"]["mean"], 0.5 * x.mean(axis=(0, 2, 3)))
    for k, v in flatten_dict(before).items():  # the input state was not written
        np.testing.assert_array_equal(flatten_dict(state)[k], v)
    with pytest.raises(
        ValueError, match=r"^bn2: batch_norm2d: x has 3 channels \(C\) but gamma expects 2$"
    ):
        bad = {**params, "bn2": {"gamma": np.ones(2), "beta": np.zeros(2)}}
        model.apply(bad, state, x, Context(train=True))


# --- PyTorch reference (optional) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fwd", "bwd", "shape"), [*PAIRS, (batch_norm2d_fwd, batch_norm2d_bwd, (8, 3, 5, 7))]
)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_matches_torch(
    rng: np.random.Generator, fwd: Fwd, bwd: Bwd, shape: tuple[int, ...], train: bool
) -> None:
    torch = pytest.importorskip("torch")
    params, state, x = make(rng, shape)
    dy = rng.standard_normal(shape)
    momentum, eps = 0.3, 1e-4
    y, cache = fwd(params, x, BatchNormCfg(momentum, eps), state=state, train=train)
    new_state = cache.state
    dx, grads = bwd(cache, dy)

    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(params["gamma"], requires_grad=True)
    tb = torch.tensor(params["beta"], requires_grad=True)
    run_mean, run_var = torch.tensor(state["mean"]), torch.tensor(state["var"])
    ty = torch.nn.functional.batch_norm(
        tx, run_mean, run_var, tg, tb, training=train, momentum=momentum, eps=eps
    )
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(new_state["mean"], run_mean.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(new_state["var"], run_var.numpy(), rtol=1e-12, atol=1e-12)
    assert tx.grad is not None and tg.grad is not None and tb.grad is not None
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(grads["gamma"], tg.grad.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(grads["beta"], tb.grad.numpy(), rtol=1e-9, atol=1e-10)
