"""residual and concat: values, summed backwards, nesting, state and context, error paths,
and the composer's check of every child's dx (issues 21 and 23)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import same_tree

import fcnn
from fcnn import Context, Layer
from fcnn.gradcheck import check_layer
from fcnn.layers.norm import BatchNormCfg, batch_norm2d_fwd
from fcnn.model import param_grads
from fcnn.tree import flatten_dict

Arr = np.ndarray[Any, Any]


def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    return {k: v.shape for k, v in flatten_dict(tree).items()}


def conv_block(width: int, stride: int = 1) -> Layer:
    """bn -> relu -> conv: no convolution bias right before a batch norm, whose gradient
    would be zero and make relative gradient errors meaningless."""
    return fcnn.sequential(
        fcnn.BatchNorm2d(), fcnn.Relu(), fcnn.Conv2d(width, 3, stride=stride, padding=1)
    )


def nested_model() -> Layer:
    """Residual in concat in sequential in residual, and a projection shortcut."""
    inner = fcnn.concat(
        fcnn.residual(conv_block(3)),
        fcnn.sequential(fcnn.Conv2d(2, 1), fcnn.Relu(), name="narrow"),
    )
    return fcnn.sequential(
        fcnn.Conv2d(3, 3, padding=1),
        fcnn.residual(fcnn.sequential(inner, fcnn.Conv2d(3, 1)), name="outer"),
        fcnn.residual(conv_block(4, stride=2), fcnn.Conv2d(4, 1, stride=2)),
        fcnn.GlobalAvgPool2d(),
        fcnn.Dense(3),
    )


# --- residual --------------------------------------------------------------------------------


def test_residual_identity_adds_the_input(rng: np.random.Generator) -> None:
    block = fcnn.sequential(fcnn.Conv2d(2, 3, padding=1), fcnn.Relu())
    model = fcnn.residual(block)
    params, state, out = fcnn.init(model, rng, (2, 5, 4), np.float64)
    assert out == (2, 5, 4) and set(params) == {"block"} and state == {}
    x = rng.standard_normal((3, 2, 5, 4))
    y, _, _ = fcnn.forward(model, params, state, x)
    want = fcnn.predict(block, params["block"], {}, x) + x
    np.testing.assert_allclose(y, want, atol=1e-14)


def test_residual_backward_is_the_sum_of_both_paths(rng: np.random.Generator) -> None:
    block = fcnn.Conv2d(3, 3, padding=1)
    shortcut = fcnn.Conv2d(3, 1)
    model = fcnn.residual(block, shortcut)
    params, _, _ = fcnn.init(model, rng, (3, 6, 6), np.float64)
    x = rng.standard_normal((2, 3, 6, 6))
    y, cache, _ = fcnn.forward(model, params, {}, x)
    dy = rng.standard_normal(y.shape)
    dx, grads = fcnn.backward(model, cache, dy)
    _, cb = fcnn.conv2d_fwd(params["block"], x, fcnn.Conv2dCfg(padding=1))
    _, cs = fcnn.conv2d_fwd(params["shortcut"], x, fcnn.Conv2dCfg())
    dxb, gb = fcnn.conv2d_bwd(cb, dy)
    dxs, gs = fcnn.conv2d_bwd(cs, dy)
    np.testing.assert_allclose(dx, dxb + dxs, atol=1e-13)
    assert same_tree(grads, {"block": gb, "shortcut": gs})
    # the identity shortcut's part of dx is dy itself
    ident = fcnn.residual(block)
    y, cache, _ = fcnn.forward(ident, {"block": params["block"]}, {}, x)
    dx, _ = fcnn.backward(ident, cache, dy)
    np.testing.assert_allclose(dx, dxb + dy, atol=1e-13)


@pytest.mark.parametrize("train", [False, True])
def test_residual_gradient_check(rng: np.random.Generator, train: bool) -> None:
    model = fcnn.residual(conv_block(4, stride=2), fcnn.Conv2d(4, 1, stride=2))
    params, state, out = fcnn.init(model, rng, (2, 7, 6), np.float64)
    assert out == (4, 4, 3)
    ctx = Context(train=train, rng=rng)
    report = check_layer(model, params, state, rng.standard_normal((3, 2, 7, 6)), ctx, rng=rng)
    assert report.ok(1e-6), report
    assert set(report.errors) == {"x", *flatten_dict(params)}


def test_batch_norm_inside_a_residual_trains_and_evaluates(rng: np.random.Generator) -> None:
    model = fcnn.sequential(fcnn.residual(fcnn.sequential(fcnn.BatchNorm2d(), fcnn.Relu())))
    params, state, _ = fcnn.init(model, rng, (3, 4, 4))
    assert shapes(state) == {"residual1/block/bn1/mean": (3,), "residual1/block/bn1/var": (3,)}
    x = (rng.standard_normal((8, 3, 4, 4)) * 2 + 1).astype(np.float32)
    bn = params["residual1"]["block"]["bn1"]
    bn_state = state["residual1"]["block"]["bn1"]
    y, _, new_state = fcnn.forward(model, params, state, x, Context(train=True, rng=rng))
    want, want_cache = batch_norm2d_fwd(bn, x, BatchNormCfg(), state=bn_state, train=True)
    np.testing.assert_allclose(y, np.maximum(want, 0) + x, rtol=1e-6, atol=1e-6)
    assert same_tree(new_state["residual1"]["block"]["bn1"], want_cache.state)
    assert not same_tree(new_state, state)  # moved
    assert np.all(state["residual1"]["block"]["bn1"]["mean"] == 0)  # the old one untouched
    # eval mode uses the running statistics just returned, and keeps them
    y_eval, _, s_eval = fcnn.forward(model, params, new_state, x)
    run = want_cache.state
    norm = (x - run["mean"][:, None, None]) / np.sqrt(run["var"][:, None, None] + 1e-5)
    np.testing.assert_allclose(y_eval, np.maximum(norm, 0) + x, rtol=1e-5, atol=1e-5)
    assert same_tree(s_eval, new_state)


def test_residual_shape_mismatch_says_what_to_add(rng: np.random.Generator) -> None:
    model = fcnn.sequential(fcnn.Relu(), fcnn.residual(fcnn.Conv2d(4, 3, stride=2, padding=1)))
    with pytest.raises(
        ValueError,
        match=r"^residual1: residual: the block gives \(4, 3, 3\) but the shortcut gives "
        r"\(2, 6, 6\) .*give residual a shortcut= that matches \(a 1x1 Conv2d",
    ):
        fcnn.init(model, rng, (2, 6, 6))


def test_errors_name_the_path_through_the_blocks(rng: np.random.Generator) -> None:
    stage = fcnn.sequential(
        fcnn.residual(fcnn.sequential(fcnn.Conv2d(2, 3, padding=1), fcnn.Relu())), name="block2"
    )
    model = fcnn.sequential(fcnn.Relu(), stage)
    params, state, _ = fcnn.init(model, rng, (2, 5, 5))
    x3 = np.zeros((1, 3, 5, 5), np.float32)
    with pytest.raises(
        ValueError, match=r"^block2/residual1/block/conv1: conv2d: x has 3 channels"
    ):
        fcnn.forward(model, params, state, x3)
    with pytest.raises(ValueError, match=r"^block2/residual1/block/conv1: conv2d: input shape"):
        fcnn.init(model, rng, (2, 5))
    bad = {"block2": {"residual1": {"block": {}, "extra": {}}}}
    with pytest.raises(ValueError, match=r"^block2/residual1: residual: unexpected params keys"):
        fcnn.forward(model, bad, state, np.zeros((1, 2, 5, 5), np.float32))


def test_residual_rejects_non_layers() -> None:
    with pytest.raises(TypeError, match=r"^residual: argument 0 is a function, not a Layer"):
        fcnn.residual(fcnn.relu_fwd)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^residual: argument 1 is a tuple"):
        fcnn.residual(fcnn.Relu(), (1, 2))  # type: ignore[arg-type]


# --- concat ----------------------------------------------------------------------------------


def test_concat_joins_the_branches_along_channels(rng: np.random.Generator) -> None:
    model = fcnn.concat(fcnn.Conv2d(2, 1), fcnn.Relu(), fcnn.Conv2d(3, 3, padding=1, name="wide"))
    params, state, out = fcnn.init(model, rng, (4, 5, 5), np.float64)
    assert out == (9, 5, 5) and set(params) == {"conv1", "wide"}
    assert [e["name"] for e in model.spec["branches"]] == ["conv1", "relu1", "wide"]
    x = rng.standard_normal((2, 4, 5, 5))
    y, cache, _ = fcnn.forward(model, params, state, x)
    parts = [
        fcnn.conv2d_fwd(params["conv1"], x, fcnn.Conv2dCfg())[0],
        np.maximum(x, 0),
        fcnn.conv2d_fwd(params["wide"], x, fcnn.Conv2dCfg(padding=1))[0],
    ]
    np.testing.assert_allclose(y, np.concatenate(parts, axis=1), atol=1e-13)
    # the backward: each branch gets its slice of dy, and dx sums the branches' dx
    dy = rng.standard_normal(y.shape)
    dx, grads = fcnn.backward(model, cache, dy)
    _, c1 = fcnn.conv2d_fwd(params["conv1"], x, fcnn.Conv2dCfg())
    _, c3 = fcnn.conv2d_fwd(params["wide"], x, fcnn.Conv2dCfg(padding=1))
    dx1, g1 = fcnn.conv2d_bwd(c1, dy[:, :2])
    dx3, g3 = fcnn.conv2d_bwd(c3, dy[:, 6:])
    np.testing.assert_allclose(dx, dx1 + dy[:, 2:6] * (x > 0) + dx3, atol=1e-13)
    assert same_tree(grads, {"conv1": g1, "wide": g3})


@pytest.mark.parametrize("axis", [1, 2, 3])
def test_concat_gradient_check_along_any_axis(rng: np.random.Generator, axis: int) -> None:
    model = fcnn.concat(fcnn.Conv2d(2, 3, padding=1), conv_block(2), fcnn.Relu(), axis=axis)
    params, state, out = fcnn.init(model, rng, (2, 4, 3), np.float64)
    assert out == tuple(3 * d if i == axis - 1 else d for i, d in enumerate((2, 4, 3)))
    report = check_layer(model, params, state, rng.standard_normal((3, 2, 4, 3)), rng=rng)
    assert report.ok(1e-6), report


def test_concat_of_flat_features(rng: np.random.Generator) -> None:
    model = fcnn.sequential(fcnn.Flatten(), fcnn.concat(fcnn.Dense(3), fcnn.Dense(2)))
    params, state, out = fcnn.init(model, rng, (2, 2, 2), np.float64)
    assert out == (5,)
    assert check_layer(model, params, state, rng.standard_normal((4, 2, 2, 2)), rng=rng).ok(1e-7)


def test_concat_refusals(rng: np.random.Generator) -> None:
    with pytest.raises(
        ValueError, match=r"^concat: axis must be an int >= 1 \(axis 0 is the batch\)"
    ):
        fcnn.concat(fcnn.Relu(), axis=0)
    with pytest.raises(ValueError, match="concat: needs at least one branch"):
        fcnn.concat()
    with pytest.raises(ValueError, match="concat: duplicate layer name 'a'"):
        fcnn.concat(fcnn.Relu(name="a"), fcnn.Relu(name="a"))
    with pytest.raises(TypeError, match=r"^concat: argument 1 is a function"):
        fcnn.concat(fcnn.Relu(), fcnn.relu_fwd)  # type: ignore[arg-type]
    model = fcnn.sequential(fcnn.concat(fcnn.Conv2d(2, 3), fcnn.Conv2d(2, 1)))
    with pytest.raises(
        ValueError,
        match=r"^concat1: concat: outputs may differ only along axis 1, but conv1 gives "
        r"\(2, 3, 3\), conv2 gives \(2, 5, 5\)",
    ):
        fcnn.init(model, rng, (1, 5, 5))
    with pytest.raises(ValueError, match=r"concat: axis 3 needs outputs of rank >= 3"):
        fcnn.init(fcnn.concat(fcnn.Dense(2), axis=3), rng, (4,))


def test_context_and_state_reach_every_branch(rng: np.random.Generator) -> None:
    model = fcnn.concat(fcnn.BatchNorm2d(), fcnn.Dropout(0.5), fcnn.SpatialDropout2d(0.5))
    params, state, _ = fcnn.init(model, rng, (3, 4, 4))
    x = rng.standard_normal((5, 3, 4, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"^dropout1: dropout: train mode needs a numpy"):
        fcnn.forward(model, params, state, x, Context(train=True))
    y1, _, s1 = fcnn.forward(model, params, state, x, Context(True, np.random.default_rng(1)))
    y2, _, s2 = fcnn.forward(model, params, state, x, Context(True, np.random.default_rng(1)))
    np.testing.assert_array_equal(y1, y2)  # same seed, same masks
    assert set(s1) == {"bn1"} and not same_tree(s1, state) and same_tree(s1, s2)
    y3, _, _ = fcnn.forward(model, params, state, x, Context(True, np.random.default_rng(2)))
    assert not np.array_equal(y1[:, 3:], y3[:, 3:])
    np.testing.assert_array_equal(fcnn.predict(model, params, state, x)[:, 3:6], x)  # eval


# --- nesting and the composer's duties --------------------------------------------------------


@pytest.mark.parametrize("train", [False, True])
def test_nested_blocks_gradient_check(rng: np.random.Generator, train: bool) -> None:
    model = nested_model()
    params, state, out = fcnn.init(model, rng, (2, 6, 6), np.float64)
    assert out == (3,)
    assert "outer/block/concat1/residual1/block/conv1/w" in flatten_dict(params)
    assert "outer/block/concat1/narrow/conv1/w" in flatten_dict(params)
    assert "residual1/shortcut/w" in flatten_dict(params)
    x = rng.standard_normal((4, 2, 6, 6))
    report = check_layer(model, params, state, x, Context(train=train, rng=rng), rng=rng)
    assert report.ok(1e-6), report


@pytest.mark.parametrize(
    "model",
    [
        nested_model(),
        fcnn.sequential(
            fcnn.residual(fcnn.Conv2d(2, 3, padding=1), fcnn.Conv2d(2, 1)), fcnn.Flatten()
        ),
        fcnn.sequential(fcnn.concat(fcnn.Conv2d(2, 3, padding=1), conv_block(2)), fcnn.Flatten()),
    ],
    ids=["nested", "residual-first", "concat-first"],
)
def test_param_grads_equal_backward_grads(model: Layer) -> None:
    rng = np.random.default_rng(0)
    params, state, _ = fcnn.init(model, rng, (2, 6, 6))
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    y, cache, _ = fcnn.forward(model, params, state, x, Context(train=True, rng=rng))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    _, full = fcnn.backward(model, cache, dy)
    only = param_grads(model, cache, dy)
    assert fcnn.tree_paths(only) == fcnn.tree_paths(full) == fcnn.tree_paths(params)
    for a, b in zip(fcnn.tree_leaves(only), fcnn.tree_leaves(full), strict=True):
        np.testing.assert_array_equal(a, b)


def test_float32_in_float32_out_and_inputs_untouched(rng: np.random.Generator) -> None:
    model = nested_model()
    params, state, _ = fcnn.init(model, rng, (2, 6, 6))
    for leaf in fcnn.tree_leaves(params):
        leaf.setflags(write=False)
    before = fcnn.tree_map(np.copy, params)
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    x.setflags(write=False)
    y, cache, new_state = fcnn.forward(model, params, state, x, Context(train=True, rng=rng))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy.setflags(write=False)
    dx, grads = fcnn.backward(model, cache, dy)
    assert y.dtype == dx.dtype == np.float32 and dx.shape == x.shape
    assert {g.dtype for g in fcnn.tree_leaves(grads)} == {np.dtype(np.float32)}
    assert {s.dtype for s in fcnn.tree_leaves(new_state)} == {np.dtype(np.float32)}
    assert same_tree(params, before)


# --- the composer checks each backward's dx (issue 21) ---------------------------------------


def _own(dx_of: Any, name: str = "mine") -> Layer:
    """A user's identity pair whose backward returns ``dx_of(dy)``."""

    def mine_fwd(params: Any, x: Arr, cfg: Any = None) -> tuple[Arr, None]:
        return x * 1.0, None

    def mine_bwd(cache: Any, dy: Arr) -> tuple[Any, dict[str, Any]]:
        return dx_of(dy), {}

    return fcnn.layer(mine_fwd, mine_bwd, name=name)


@pytest.mark.parametrize(
    ("dx_of", "err", "message"),
    [
        (
            lambda dy: dy.astype(np.float64),
            TypeError,
            "dx of dtype float64 for an input x of dtype float32",
        ),
        (
            lambda dy: dy[:, :1],
            ValueError,
            r"dx of shape \(2, 1, 4, 4\) for an input x of shape \(2, 3, 4, 4\)",
        ),
        (lambda dy: None, TypeError, "dx of type NoneType, not an array"),
    ],
    ids=["float64", "shape", "none"],
)
@pytest.mark.parametrize("where", ["sequential", "residual", "concat"])
def test_regression_a_wrong_dx_was_blamed_on_the_previous_layer(
    rng: np.random.Generator, dx_of: Any, err: type[Exception], message: str, where: str
) -> None:
    mine = _own(dx_of)
    inner = {
        "sequential": fcnn.sequential(mine, fcnn.Relu()),
        "residual": fcnn.residual(fcnn.sequential(mine, fcnn.Relu())),
        "concat": fcnn.concat(fcnn.sequential(mine, fcnn.Relu()), fcnn.Relu()),
    }[where]
    model = fcnn.sequential(fcnn.Conv2d(3, 1), inner, fcnn.Flatten())
    params, state, _ = fcnn.init(model, rng, (2, 4, 4))
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    y, cache, _ = fcnn.forward(model, params, state, x)
    path = {"sequential": "block1", "residual": "residual1/block", "concat": "concat1/block1"}
    with pytest.raises(err, match=rf"^{path[where]}/mine: backward returned {message}"):
        fcnn.backward(model, cache, np.ones_like(y))
    with pytest.raises(err, match=rf"^{path[where]}/mine: backward returned"):
        fcnn.loss_and_grad(model, fcnn.mse)(params, state, x, np.zeros_like(y), None)


def test_regression_own_layer_changing_shape_without_init_got_insert_flatten_before_dense(
    rng: np.random.Generator,
) -> None:
    """The next layer's init said "insert Flatten() before Dense", blaming the wrong thing;
    now the note names the pair made without init=, and its forward is checked."""

    def squeeze_fwd(params: Any, x: Arr, cfg: Any = None) -> tuple[Arr, tuple[int, ...]]:
        return x.reshape(x.shape[0], -1), x.shape

    def squeeze_bwd(cache: tuple[int, ...], dy: Arr) -> tuple[Arr, dict[str, Any]]:
        return dy.reshape(cache), {}

    model = fcnn.sequential(fcnn.layer(squeeze_fwd, squeeze_bwd), fcnn.Dense(2))
    with pytest.raises(
        ValueError,
        match=r"^dense1: dense: input shape must be \(D_in,\).*insert Flatten\(\) before Dense "
        r"\(note: squeeze1 was made by fcnn.layer without init=, so its output is taken to keep "
        r"its input's shape \(2, 3\); if its fwd changes the shape, give it an init\)$",
    ):
        fcnn.init(model, rng, (2, 3))
    alone = fcnn.sequential(fcnn.layer(squeeze_fwd, squeeze_bwd), fcnn.Relu())
    params, state, _ = fcnn.init(alone, rng, (2, 3))
    with pytest.raises(
        ValueError,
        match=r"^squeeze1: squeeze: fwd turned x of shape \(4, 2, 3\) into \(4, 6\), but the "
        r"layer was made without init=.*give fcnn.layer an init\(rng, in_shape, dtype\)",
    ):
        fcnn.forward(alone, params, state, np.zeros((4, 2, 3)))

    def squeeze_init(rng: Any, in_shape: Any, dtype: Any) -> Any:
        return {}, {}, (int(np.prod(in_shape)),)

    fixed = fcnn.sequential(fcnn.layer(squeeze_fwd, squeeze_bwd, init=squeeze_init), fcnn.Dense(2))
    params, state, out = fcnn.init(fixed, rng, (2, 3), np.float64)
    assert out == (2,)
    assert check_layer(fixed, params, state, rng.standard_normal((3, 2, 3)), rng=rng).ok(1e-7)
