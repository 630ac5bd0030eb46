"""The composer: shape inference, naming, nesting, state/context threading, end-to-end grads."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

import fcnn
from fcnn import Context, Layer
from fcnn.gradcheck import check_layer
from fcnn.tree import flatten_dict, tree_map


def small_cnn(impl: str = "im2col") -> Layer:
    return fcnn.sequential(
        fcnn.Conv2d(3, 3, padding=1, impl=impl),
        fcnn.Relu(),
        fcnn.MaxPool2d(2),
        fcnn.Conv2d(4, (2, 3), stride=2, padding=((1, 0), (0, 1)), impl=impl),
        fcnn.Relu(),
        fcnn.AvgPool2d(2, stride=1),
        fcnn.Flatten(),
        fcnn.Dense(3),
    )


def trees_equal(a: Any, b: Any) -> bool:
    return bool(all(fcnn.tree_leaves(tree_map(np.array_equal, a, b))))


def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    return {k: v.shape for k, v in flatten_dict(tree).items()}


def test_init_infers_shapes_and_names(rng: np.random.Generator) -> None:
    model = fcnn.sequential(
        fcnn.Conv2d(4, 3, padding=1), fcnn.Relu(), fcnn.MaxPool2d(2), fcnn.Flatten(), fcnn.Dense(5)
    )
    params, state, out = fcnn.init(model, rng, (2, 8, 8))
    assert out == (5,)
    assert state == {}
    assert shapes(params) == {
        "conv1/w": (4, 2, 3, 3),
        "conv1/b": (4,),
        "dense1/w": (4 * 4 * 4, 5),
        "dense1/b": (5,),
    }
    assert [c["name"] for c in model.spec["layers"]] == [
        "conv1",
        "relu1",
        "maxpool1",
        "flatten1",
        "dense1",
    ]
    json.dumps(model.spec)


def test_init_default_dtype_float32_and_float64(rng: np.random.Generator) -> None:
    p32, _, _ = fcnn.init(small_cnn(), rng, (1, 10, 10))
    p64, _, _ = fcnn.init(small_cnn(), rng, (1, 10, 10), dtype=np.float64)
    assert {v.dtype for v in flatten_dict(p32).values()} == {np.dtype(np.float32)}
    assert {v.dtype for v in flatten_dict(p64).values()} == {np.dtype(np.float64)}


def test_init_is_reproducible_from_the_seed() -> None:
    a, _, _ = fcnn.init(small_cnn(), np.random.default_rng(3), (1, 10, 10))
    b, _, _ = fcnn.init(small_cnn(), np.random.default_rng(3), (1, 10, 10))
    c, _, _ = fcnn.init(small_cnn(), np.random.default_rng(4), (1, 10, 10))
    assert trees_equal(a, b)
    assert not np.array_equal(a["conv1"]["w"], c["conv1"]["w"])


def test_grads_tree_equals_params_tree_and_dtype(rng: np.random.Generator) -> None:
    model = small_cnn()
    params, state, out = fcnn.init(model, rng, (1, 10, 10))
    x = rng.standard_normal((4, 1, 10, 10)).astype(np.float32)
    y, cache, _new_state = fcnn.forward(model, params, state, x)
    assert y.shape == (4, *out) and y.dtype == np.float32
    dx, grads = fcnn.backward(model, cache, rng.standard_normal(y.shape).astype(np.float32))
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert shapes(grads) == shapes(params)
    assert list(flatten_dict(grads)) == list(flatten_dict(params))
    assert all(g.dtype == np.float32 for g in fcnn.tree_leaves(grads))
    tree_map(lambda p, g: p - 0.1 * g, params, grads)  # structures match


@pytest.mark.parametrize("impl", ["naive", "im2col", "strided"])
def test_whole_cnn_gradient_check(rng: np.random.Generator, impl: str) -> None:
    model = small_cnn(impl)
    params, state, _ = fcnn.init(model, rng, (1, 8, 8), dtype=np.float64)
    x = rng.standard_normal((2, 1, 8, 8))
    report = check_layer(model, params, state, x, rng=rng)
    assert report.ok(1e-6), report
    assert set(report.errors) == {"x", *flatten_dict(params)}


def test_nested_blocks_key_params_by_path(rng: np.random.Generator) -> None:
    block = fcnn.sequential(fcnn.Conv2d(2, 3, padding=1), fcnn.Relu())
    model = fcnn.sequential(block, fcnn.sequential(fcnn.Conv2d(2, 1), name="head"), fcnn.Flatten())
    params, _, out = fcnn.init(model, rng, (1, 5, 5), dtype=np.float64)
    assert out == (2 * 5 * 5,)
    assert set(flatten_dict(params)) == {
        "block1/conv1/w",
        "block1/conv1/b",
        "head/conv1/w",
        "head/conv1/b",
    }
    x = rng.standard_normal((2, 1, 5, 5))
    assert check_layer(model, params, {}, x, rng=rng).ok(1e-6)
    assert model.spec["layers"][0]["type"] == "Sequential"


def test_duplicate_names_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate layer name 'a'"):
        fcnn.sequential(fcnn.Relu(name="a"), fcnn.Flatten(name="a"))
    # an explicit name that collides with an automatic one is a duplicate too
    with pytest.raises(ValueError, match="duplicate layer name 'relu1'"):
        fcnn.sequential(fcnn.Relu(name="relu1"), fcnn.Relu())


@pytest.mark.parametrize("bad", ["", "a/b"])
def test_bad_names_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="layer name"):
        fcnn.sequential(fcnn.Relu(name=bad))


def test_non_layer_arguments_rejected() -> None:
    with pytest.raises(TypeError, match="not a Layer"):
        fcnn.sequential(fcnn.Relu(), fcnn.relu_fwd)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one layer"):
        fcnn.sequential()


def test_errors_name_the_layer_path(rng: np.random.Generator) -> None:
    model = fcnn.sequential(fcnn.Relu(), fcnn.sequential(fcnn.Conv2d(2, 3)), name="net")
    params, state, _ = fcnn.init(model, rng, (1, 6, 6))
    x3 = np.zeros((1, 3, 6, 6), np.float32)
    with pytest.raises(ValueError, match=r"^block1/conv1: conv2d: .*3 channels"):
        fcnn.forward(model, params, state, x3)
    with pytest.raises(ValueError, match=r"^block1/conv1: .*kernel"):
        fcnn.init(model, rng, (1, 2, 2))


def test_params_tree_mismatch_rejected(rng: np.random.Generator) -> None:
    model = small_cnn()
    params, state, _ = fcnn.init(model, rng, (1, 10, 10))
    x = np.zeros((1, 1, 10, 10), np.float32)
    extra = {**params, "conv9": {"w": np.zeros(1)}}
    with pytest.raises(ValueError, match=r"unexpected params keys \['conv9'\]"):
        fcnn.forward(model, extra, state, x)
    missing = {k: v for k, v in params.items() if k != "conv2"}
    with pytest.raises(ValueError, match=r"^conv2: conv2d: params must have keys"):
        fcnn.forward(model, missing, state, x)
    no_bias = {**params, "dense1": {"w": params["dense1"]["w"]}}
    with pytest.raises(ValueError, match=r"^dense1: dense: .*missing \['b'\]"):
        fcnn.forward(model, no_bias, state, x)


def test_forward_and_backward_do_not_modify_inputs(rng: np.random.Generator) -> None:
    model = small_cnn()
    params, state, _ = fcnn.init(model, rng, (1, 10, 10))
    for leaf in fcnn.tree_leaves(params):
        leaf.setflags(write=False)
    x = rng.standard_normal((3, 1, 10, 10)).astype(np.float32)
    x.setflags(write=False)
    before = tree_map(np.copy, params)
    y, cache, _ = fcnn.forward(model, params, state, x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy.setflags(write=False)
    fcnn.backward(model, cache, dy)
    assert trees_equal(params, before)


def test_predict_in_chunks_matches_one_pass(rng: np.random.Generator) -> None:
    model = small_cnn()
    params, state, _ = fcnn.init(model, rng, (1, 10, 10))
    x = rng.standard_normal((7, 1, 10, 10)).astype(np.float32)
    full = fcnn.predict(model, params, state, x)
    np.testing.assert_allclose(
        fcnn.predict(model, params, state, x, batch_size=3), full, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="batch_size"):
        fcnn.predict(model, params, state, x, batch_size=0)
    for batch_size in (None, 3):
        with pytest.raises(ValueError, match="no samples"):
            fcnn.predict(model, params, state, x[:0], batch_size=batch_size)


def test_loss_and_grad_matches_forward_loss_and_gradcheck(rng: np.random.Generator) -> None:
    model = small_cnn()
    params, state, _ = fcnn.init(model, rng, (1, 8, 8), dtype=np.float64)
    x = rng.standard_normal((4, 1, 8, 8))
    labels = rng.integers(0, 3, size=4)
    loss, grads, _ = fcnn.loss_and_grad(model, fcnn.softmax_cross_entropy)(
        params, state, x, labels, None
    )
    y, _, _ = fcnn.forward(model, params, state, x)
    assert float(loss) == pytest.approx(float(fcnn.softmax_cross_entropy_fwd(y, labels)[0]))
    # the gradient of the scalar loss, one parameter entry by finite differences
    eps = 1e-6
    w = params["conv1"]["w"]
    bumped = [tree_map(np.copy, params) for _ in range(2)]
    bumped[0]["conv1"]["w"][0, 0, 1, 1] = w[0, 0, 1, 1] + eps
    bumped[1]["conv1"]["w"][0, 0, 1, 1] = w[0, 0, 1, 1] - eps
    lp, lm = (
        float(fcnn.softmax_cross_entropy_fwd(fcnn.predict(model, b, state, x), labels)[0])
        for b in bumped
    )
    assert grads["conv1"]["w"][0, 0, 1, 1] == pytest.approx((lp - lm) / (2 * eps), rel=1e-6)


def counting_noise_layer() -> Layer:
    """A stateful, random layer built by hand: the protocol batch norm and dropout will use.

    It adds ``ctx.rng`` noise in training and counts its training calls in its state.
    """

    def init(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> Any:
        return {}, {"calls": np.zeros((), np.int64)}, shape

    def apply(params: Any, state: Any, x: Any, ctx: Context) -> Any:
        if not ctx.train:
            return x, None, state
        if ctx.rng is None:
            raise ValueError("noise: needs ctx.rng in training")
        noise = ctx.rng.standard_normal(x.shape).astype(x.dtype)
        return x + noise, None, {"calls": state["calls"] + 1}

    def backward(cache: Any, dy: Any) -> Any:
        return dy, {}

    return Layer(kind="noise", init=init, apply=apply, backward=backward, spec={"type": "Noise"})


def test_state_and_context_thread_through_nested_blocks(rng: np.random.Generator) -> None:
    model = fcnn.sequential(fcnn.Relu(), fcnn.sequential(counting_noise_layer()))
    params, state, _ = fcnn.init(model, rng, (2,))
    assert params == {} and state == {"block1": {"noise1": {"calls": 0}}}
    x = np.ones((3, 2))
    y_eval, _, s_eval = fcnn.forward(model, params, state, x)
    np.testing.assert_array_equal(y_eval, x)
    assert s_eval["block1"]["noise1"]["calls"] == 0
    y1, _, s1 = fcnn.forward(model, params, state, x, Context(True, np.random.default_rng(1)))
    y2, _, s2 = fcnn.forward(model, params, s1, x, Context(True, np.random.default_rng(1)))
    np.testing.assert_array_equal(y1, y2)  # same seed, same noise
    assert s1["block1"]["noise1"]["calls"] == 1 and s2["block1"]["noise1"]["calls"] == 2
    assert state["block1"]["noise1"]["calls"] == 0  # the old state is untouched
    with pytest.raises(ValueError, match=r"^block1/noise1: noise: needs ctx.rng"):
        fcnn.forward(model, params, state, x, Context(train=True))


def test_init_rejects_bad_arguments() -> None:
    model = small_cnn()
    with pytest.raises(TypeError, match="Generator"):
        fcnn.init(model, 0, (1, 10, 10))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating"):
        fcnn.init(model, np.random.default_rng(0), (1, 10, 10), dtype=np.int32)


# --- param_grads: the backward without the input's gradient ---------------------------------


def _param_grad_models() -> list[fcnn.Layer]:
    from fcnn.layers.norm import BatchNorm2d
    from fcnn.models import build_model

    nested = fcnn.sequential(
        fcnn.sequential(fcnn.Conv2d(3, 3, padding=1), fcnn.Relu(), name="stem"),
        fcnn.MaxPool2d(2),
        fcnn.Flatten(),
        fcnn.Dense(4),
    )
    relu_first = fcnn.sequential(fcnn.Relu(), fcnn.Conv2d(2, 3, impl="strided"), fcnn.Flatten())
    bn_first = fcnn.sequential(BatchNorm2d(), fcnn.Conv2d(2, 3, impl="naive"), fcnn.Flatten())
    return [build_model("small", 4), build_model("bn", 4), nested, relu_first, bn_first]


@pytest.mark.parametrize("index", range(5))
def test_param_grads_equal_backward_grads(index: int) -> None:
    model = _param_grad_models()[index]
    rng = np.random.default_rng(index)
    params, state, _ = fcnn.init(model, rng, (1, 12, 12))
    x = rng.standard_normal((6, 1, 12, 12)).astype(np.float32)
    y, cache, _ = fcnn.forward(model, params, state, x, fcnn.Context(train=True, rng=rng))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    _, full = fcnn.backward(model, cache, dy)
    only = fcnn.model.param_grads(model, cache, dy)
    assert fcnn.tree_paths(only) == fcnn.tree_paths(full) == fcnn.tree_paths(params)
    for a, b in zip(fcnn.tree_leaves(only), fcnn.tree_leaves(full), strict=True):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)


def test_param_grads_skip_the_first_convolutions_col2im(monkeypatch: pytest.MonkeyPatch) -> None:
    import fcnn.ops.conv_im2col as kernels

    calls: list[tuple[int, ...]] = []
    real = kernels.col2im

    def counting_col2im(dcols: Any, x_shape: tuple[int, ...], *args: Any) -> Any:
        calls.append(tuple(x_shape))
        return real(dcols, x_shape, *args)

    monkeypatch.setattr(kernels, "col2im", counting_col2im)
    model = fcnn.sequential(fcnn.Conv2d(2, 3), fcnn.Relu(), fcnn.Conv2d(3, 3), fcnn.Flatten())
    rng = np.random.default_rng(0)
    params, state, _ = fcnn.init(model, rng, (1, 8, 8))
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    y, cache, _ = fcnn.forward(model, params, state, x)
    fcnn.backward(model, cache, np.ones_like(y))
    assert calls == [(2, 2, 6, 6), (2, 1, 8, 8)]
    calls.clear()
    fcnn.model.param_grads(model, cache, np.ones_like(y))
    assert calls == [(2, 2, 6, 6)]  # the input's dx is never formed
