"""Conv2d: gradient checks, agreement of the three kernels, dtypes, views, errors, the layer."""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from typing import Any

import numpy as np
import pytest
from conv_cases import (
    ConvCase,
    assert_float32_in_float32_out,
    assert_gradcheck,
    assert_impls_agree,
    assert_matches_torch,
    assert_read_only_inputs_survive,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import fcnn.layers.conv as conv_module
from fcnn.gradcheck import check_pair
from fcnn.layers.base import Context
from fcnn.layers.conv import Conv2d, Conv2dCache, Conv2dCfg, conv2d_bwd, conv2d_fwd
from fcnn.ops.layout import batch_last, nchw_view

IMPLS = ["naive", "im2col", "strided"]

# ConvCase(N, C, F, H, W, KH, KW, stride, padding); comments say why each case is here.
GRID = [
    ConvCase(1, 1, 2, 5, 5, 3, 3, 1, 0),  # the plain case
    # non-square kernel and input; 7 + 2 - 2 = 7 odd: stride 2 skips
    ConvCase(2, 2, 3, 7, 9, 2, 3, 2, 1),
    # asymmetric padding, stride 3 divides neither axis
    ConvCase(1, 2, 2, 7, 9, 3, 2, 3, ((1, 0), (2, 1))),
    ConvCase(2, 1, 3, 6, 5, 2, 2, (2, 3), ((2, 1), (0, 2))),  # different strides per axis
    ConvCase(1, 2, 1, 3, 4, 3, 3, (1, 2), ((3, 0), (0, 4))),  # windows lying wholly in the padding
    ConvCase(1, 2, 2, 8, 7, 1, 1, 3, 0),  # 1x1 kernel, most rows untouched
]


# --- gradients and agreement ------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", GRID, ids=str)
def test_gradcheck(rng: np.random.Generator, impl: str, case: ConvCase) -> None:
    assert_gradcheck(case, rng, impl)


@pytest.mark.parametrize("case", GRID, ids=str)
def test_impls_agree_on_grid(rng: np.random.Generator, case: ConvCase) -> None:
    assert_impls_agree(case, rng, IMPLS)


@st.composite
def conv_cases(draw: st.DrawFn) -> ConvCase:
    n, c, f = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pt, pb, pl, pr = (draw(st.integers(0, 3)) for _ in range(4))
    # Output >= 1x1 needs H + pt + pb >= KH.
    h = draw(st.integers(max(1, kh - pt - pb), kh + 6))
    w = draw(st.integers(max(1, kw - pl - pr), kw + 6))
    return ConvCase(n, c, f, h, w, kh, kw, (sh, sw), ((pt, pb), (pl, pr)))


@settings(max_examples=120)
@given(conv_cases(), st.integers(0, 2**32 - 1))
def test_impls_agree_hypothesis(case: ConvCase, seed: int) -> None:
    assert_impls_agree(case, np.random.default_rng(seed), IMPLS, dy_seed=seed)


def test_known_values() -> None:
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    params = {"w": np.ones((1, 1, 2, 2)), "b": np.array([0.5])}
    for impl in IMPLS:
        y, _ = conv2d_fwd(params, x, Conv2dCfg(stride=2, impl=impl))
        # Each 2x2 block sums to 4 * its top-left + 10.
        np.testing.assert_array_equal(y[0, 0], [[10.5, 18.5], [42.5, 50.5]])


@pytest.mark.parametrize("impl", IMPLS)
def test_rows_no_window_touches_get_zero_gradient(rng: np.random.Generator, impl: str) -> None:
    # H = W = 6, K = 3, stride 2: windows start at 0 and 2, so row/column 5 is never read.
    case = ConvCase(1, 2, 2, 6, 6, 3, 3, 2, 0)
    _, dx, _, _ = case.run(*case.make(rng), impl)
    assert np.all(dx[:, :, 5, :] == 0) and np.all(dx[:, :, :, 5] == 0)
    assert np.any(dx[:, :, 4, :] != 0)


# --- dtypes, views, read-only inputs ----------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_float32_in_float32_out(rng: np.random.Generator, impl: str) -> None:
    assert_float32_in_float32_out(ConvCase(2, 2, 3, 7, 6, 3, 2, 2, ((1, 0), (0, 1))), rng, impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_inputs(rng: np.random.Generator, impl: str) -> None:
    case = ConvCase(2, 2, 3, 7, 6, 3, 2, (1, 2), 1)
    params, x = case.make(rng)
    x_view = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    wide = np.zeros((3, 4, 3, 2))
    wide[:, ::2] = params["w"]
    w_view = wide[:, ::2]
    assert not x_view.flags.c_contiguous and not w_view.flags.c_contiguous
    ref = case.run(params, x, impl)
    got = case.run({"w": w_view, "b": params["b"]}, x_view, impl)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # A sliced batch (every other sample) is also a view.
    big = np.repeat(x, 2, axis=0)[::2]
    np.testing.assert_allclose(case.run(params, big, impl)[0], ref[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_read_only_inputs_are_not_modified(rng: np.random.Generator, impl: str) -> None:
    case = ConvCase(2, 2, 3, 6, 5, 2, 3, 2, ((0, 1), (1, 0)))
    assert_read_only_inputs_survive(case, rng, impl, *case.make(rng))


def test_docstring_shows_shapes_and_formula() -> None:
    doc = conv2d_fwd.__doc__ or ""
    for text in (
        "(N, C, H, W)",
        "(F, C, KH, KW)",
        "(N, F, OH, OW)",
        "OH = (H + pad_top + pad_bottom - KH) // stride_h + 1",
        "OW = (W + pad_left + pad_right - KW) // stride_w + 1",
    ):
        assert text in doc, text


def test_public_names() -> None:
    assert conv_module.__all__ == [
        "Conv2d",
        "Conv2dCache",
        "Conv2dCfg",
        "conv2d_bwd",
        "conv2d_fwd",
        "conv2d_param_grads",
    ]


# --- the cfg --------------------------------------------------------------------------


def test_cfg_is_canonical_and_frozen() -> None:
    cfg = Conv2dCfg(2, 1)
    assert cfg.stride == (2, 2)
    assert cfg.padding == ((1, 1), (1, 1))
    assert cfg.impl == "im2col"
    assert cfg == Conv2dCfg((2, 2), ((1, 1), (1, 1)), "im2col")
    assert Conv2dCfg(padding=(1, 2)).padding == ((1, 1), (2, 2))
    assert hash(cfg) == hash(Conv2dCfg(stride=(2, 2), padding=1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.stride = (1, 1)  # type: ignore[misc]


# --- bad input ------------------------------------------------------------------------


def _good(rng: np.random.Generator) -> tuple[dict[str, Any], Any]:
    return ConvCase(1, 1, 2, 5, 5, 3, 3).make(rng)


def test_wrong_rank_of_x(rng: np.random.Generator) -> None:
    params, x = _good(rng)
    msg = r"^conv2d: x must have rank 4 \(N, C, H, W\), got shape \(1, 5, 5\)"
    with pytest.raises(ValueError, match=msg):
        conv2d_fwd(params, x[0], Conv2dCfg())


def test_wrong_rank_of_w(rng: np.random.Generator) -> None:
    params, x = _good(rng)
    with pytest.raises(ValueError, match=r"^conv2d: w must have rank 4"):
        conv2d_fwd({**params, "w": params["w"][0]}, x, Conv2dCfg())


def test_channel_mismatch(rng: np.random.Generator) -> None:
    params, _ = _good(rng)
    x3 = rng.standard_normal((1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"^conv2d: x has 3 channels \(C\) but w expects 1$"):
        conv2d_fwd(params, x3, Conv2dCfg())


def test_integer_x_is_a_type_error(rng: np.random.Generator) -> None:
    params, x = _good(rng)
    with pytest.raises(TypeError, match=r"^conv2d: x must have a floating dtype, got int64"):
        conv2d_fwd(params, x.astype(np.int64), Conv2dCfg())


def test_object_dtype_is_a_type_error(rng: np.random.Generator) -> None:
    params, x = _good(rng)
    with pytest.raises(TypeError, match=r"^conv2d: x must have a floating dtype, got object"):
        conv2d_fwd(params, x.astype(object), Conv2dCfg())
    with pytest.raises(TypeError, match=r"^conv2d: w must have a floating dtype, got object"):
        conv2d_fwd({**params, "w": params["w"].astype(object)}, x, Conv2dCfg())


def test_mixed_float32_float64(rng: np.random.Generator) -> None:
    params, x = _good(rng)
    msg = r"^conv2d: dtypes must match, but x is float32, w is float64"
    with pytest.raises(TypeError, match=msg):
        conv2d_fwd(params, x.astype(np.float32), Conv2dCfg())


def test_kernel_larger_than_padded_input(rng: np.random.Generator) -> None:
    params, _ = _good(rng)
    x = rng.standard_normal((1, 1, 2, 5))
    msg = r"^conv2d: kernel H=3 is larger than the padded input H=2 \(input 2 \+ padding 0\+0\)"
    with pytest.raises(ValueError, match=msg):
        conv2d_fwd(params, x, Conv2dCfg())
    # With padding it fits.
    y, _ = conv2d_fwd(params, x, Conv2dCfg(padding=((1, 0), (0, 0))))
    assert y.shape == (1, 2, 1, 3)


def test_stride_zero() -> None:
    with pytest.raises(ValueError, match=r"Conv2dCfg.stride must be >= 1, got 0"):
        Conv2dCfg(stride=0)
    with pytest.raises(ValueError, match=r"Conv2dCfg.stride must be >= 1, got \(1, 0\)"):
        Conv2dCfg(stride=(1, 0))


def test_negative_padding() -> None:
    with pytest.raises(ValueError, match=r"Conv2dCfg.padding must be >= 0, got -1"):
        Conv2dCfg(padding=-1)
    with pytest.raises(ValueError, match=r"Conv2dCfg.padding must be >= 0"):
        Conv2dCfg(padding=((0, 0), (1, -2)))


def test_unknown_impl() -> None:
    with pytest.raises(
        ValueError,
        match=r"Conv2dCfg.impl must be one of \['im2col', 'naive', 'strided'\], got 'fft'",
    ):
        Conv2dCfg(impl="fft")


def test_cfg_of_the_wrong_type(rng: np.random.Generator) -> None:
    params, x = _good(rng)
    with pytest.raises(TypeError, match=r"^conv2d: cfg must be a Conv2dCfg, got dict"):
        conv2d_fwd(params, x, {"stride": 1})  # type: ignore[arg-type]


def test_params_missing_or_extra_keys(rng: np.random.Generator) -> None:
    params, x = _good(rng)
    msg = r"^conv2d: params must have keys \['b', 'w'\].*missing \['b'\]"
    with pytest.raises(ValueError, match=msg):
        conv2d_fwd({"w": params["w"]}, x, Conv2dCfg())
    with pytest.raises(ValueError, match=r"^conv2d: params must have keys.*unexpected \['gamma'\]"):
        conv2d_fwd({**params, "gamma": params["b"]}, x, Conv2dCfg())


def test_wrong_b_shape(rng: np.random.Generator) -> None:
    params, x = _good(rng)
    with pytest.raises(ValueError, match=r"^conv2d: b must have shape \(F,\) = \(2,\), got \(3,\)"):
        conv2d_fwd({**params, "b": np.zeros(3)}, x, Conv2dCfg())
    with pytest.raises(ValueError, match=r"^conv2d: b must have shape"):
        conv2d_fwd({**params, "b": np.zeros((2, 1))}, x, Conv2dCfg())


@pytest.mark.parametrize("impl", IMPLS)
def test_dy_of_wrong_shape(rng: np.random.Generator, impl: str) -> None:
    params, x = _good(rng)
    y, cache = conv2d_fwd(params, x, Conv2dCfg(impl=impl))
    msg = r"^conv2d: dy must have the shape of y \(1, 2, 3, 3\), got \(1, 2, 3, 2\)"
    with pytest.raises(ValueError, match=msg):
        conv2d_bwd(cache, np.zeros((1, 2, 3, 2)))
    msg = r"^conv2d: dtypes must match, but y is float64, dy is float32"
    with pytest.raises(TypeError, match=msg):
        conv2d_bwd(cache, np.zeros(y.shape, np.float32))


# --- the layer ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_init_shapes_and_dtype(rng: np.random.Generator, dtype: Any) -> None:
    layer = Conv2d(4, (2, 3), stride=2, padding=((1, 0), (2, 1)))
    assert layer.kind == "conv"
    params, state, out_shape = layer.init(rng, (3, 7, 9), dtype)
    assert state == {}
    assert params["w"].shape == (4, 3, 2, 3) and params["w"].dtype == dtype
    assert params["b"].shape == (4,) and params["b"].dtype == dtype
    assert np.all(params["b"] == 0)
    # OH = (7 + 1 + 0 - 2) // 2 + 1 = 4, OW = (9 + 2 + 1 - 3) // 2 + 1 = 5
    assert out_shape == (4, 4, 5)
    x = rng.standard_normal((2, 3, 7, 9)).astype(dtype)
    y, cache, new_state = layer.apply(params, state, x, Context())
    assert y.shape == (2, *out_shape) and y.dtype == dtype and new_state == {}
    dx, grads = layer.backward(cache, np.ones_like(y))
    assert dx.shape == x.shape and set(grads) == {"w", "b"}


def test_layer_init_is_he_normal() -> None:
    rng = np.random.default_rng(0)
    params, _, _ = Conv2d(64, 3).init(rng, (16, 5, 5), np.float64)
    expected = np.sqrt(2.0 / (16 * 3 * 3))
    assert abs(params["w"].std() / expected - 1) < 0.05
    assert abs(params["w"].mean()) < 0.05 * expected


def test_layer_spec_is_json(rng: np.random.Generator) -> None:
    layer = Conv2d(8, 3, stride=(1, 2), padding=1, impl="strided", name="stem")
    assert layer.name == "stem"
    assert layer.spec == {
        "type": "Conv2d",
        "out_channels": 8,
        "kernel_size": [3, 3],
        "stride": [1, 2],
        "padding": [[1, 1], [1, 1]],
        "impl": "strided",
    }
    assert json.loads(json.dumps(layer.spec)) == layer.spec


def test_layer_constructor_errors() -> None:
    with pytest.raises(ValueError, match=r"^conv2d: kernel_size must be >= 1, got 0"):
        Conv2d(4, 0)
    with pytest.raises(ValueError, match=r"^conv2d: kernel_size must be >= 1, got \(3, 0\)"):
        Conv2d(4, (3, 0))
    with pytest.raises(ValueError, match=r"^conv2d: out_channels must be >= 1, got 0"):
        Conv2d(0, 3)
    with pytest.raises(TypeError, match=r"^conv2d: out_channels must be an int"):
        Conv2d(2.5, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Conv2dCfg.impl must be one of"):
        Conv2d(4, 3, impl="winograd")
    with pytest.raises(ValueError, match=r"Conv2dCfg.stride must be >= 1"):
        Conv2d(4, 3, stride=0)


def test_layer_init_errors(rng: np.random.Generator) -> None:
    msg = r"^conv2d: kernel W=5 is larger than the padded input W=4 \(input 3 \+ padding 1\+0\)"
    with pytest.raises(ValueError, match=msg):
        Conv2d(2, (1, 5), padding=((0, 0), (1, 0))).init(rng, (1, 6, 3), np.float32)
    with pytest.raises(ValueError, match=r"^conv2d: input shape must be \(C, H, W\)"):
        Conv2d(2, 3).init(rng, (1, 6), np.float32)
    with pytest.raises(TypeError, match=r"^conv2d: dtype must be a floating dtype, got int32"):
        Conv2d(2, 3).init(rng, (1, 6, 6), np.int32)


def test_cache_type(rng: np.random.Generator) -> None:
    params, x = _good(rng)
    _, cache = conv2d_fwd(params, x, Conv2dCfg())
    assert isinstance(cache, Conv2dCache) and cache.cfg == Conv2dCfg()


# --- PyTorch, when it is installed ----------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_matches_torch(rng: np.random.Generator, impl: str) -> None:
    torch = pytest.importorskip("torch")
    cases = [
        ConvCase(2, 2, 3, 7, 9, 2, 3, (2, 3), (1, 2)),
        ConvCase(1, 3, 2, 6, 6, 3, 3, 2, (1, 1)),
    ]
    for case in cases:
        params, x = case.make(rng)
        conv = partial(torch.nn.functional.conv2d, stride=case.stride, padding=case.pad)
        ours = case.run(params, x, impl)
        assert_matches_torch(torch, ours, params, x, conv, rtol=1e-10, atol=1e-10)


# --- the batch-last memory layout of the im2col kernel -----------------------------------


def test_im2col_output_is_an_nchw_view_of_batch_last_memory(rng: np.random.Generator) -> None:
    case = ConvCase(3, 2, 4, 6, 5, 3, 3, 1, 1)
    params, x = case.make(rng)
    y, cache = conv2d_fwd(params, x, case.cfg("im2col"))
    assert y.shape == (3, 4, 6, 5)
    assert np.shares_memory(batch_last(y), y)  # (F, OH, OW, N) memory: the GEMM's own output
    dx, _ = conv2d_bwd(cache, np.ones_like(y))
    assert dx.shape == x.shape and np.shares_memory(batch_last(dx), dx)


@pytest.mark.parametrize("impl", IMPLS)
def test_any_memory_layout_of_x_and_dy_gives_the_same_result(
    rng: np.random.Generator, impl: str
) -> None:
    case = ConvCase(2, 3, 4, 7, 6, 3, 2, (2, 1), ((1, 0), (0, 1)))
    params, x = case.make(rng)
    cfg = case.cfg(impl)
    y, cache = conv2d_fwd(params, x, cfg)
    dy = rng.standard_normal(y.shape)
    dx, grads = conv2d_bwd(cache, dy)
    for x_in, dy_in in [
        (nchw_view(batch_last(x)), dy),
        (x, nchw_view(batch_last(dy))),
        (nchw_view(batch_last(x)), nchw_view(batch_last(dy))),
        (x, np.asfortranarray(dy)),
    ]:
        y2, cache2 = conv2d_fwd(params, x_in, cfg)
        dx2, grads2 = conv2d_bwd(cache2, dy_in)
        np.testing.assert_allclose(y2, y, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(dx2, dx, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(grads2["w"], grads["w"], rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(grads2["b"], grads["b"], rtol=1e-13, atol=1e-13)


def test_a_chain_of_layers_gradchecks_through_batch_last_activations(
    rng: np.random.Generator,
) -> None:
    # conv -> maxpool -> conv: the inner activations and gradients stay batch-last.
    from fcnn.layers.pool import Pool2dCfg, max_pool2d_bwd, max_pool2d_fwd

    p1, x = ConvCase(2, 1, 3, 8, 8, 3, 3).make(rng)
    p2 = {"w": rng.standard_normal((2, 3, 2, 2)), "b": rng.standard_normal(2)}
    c1, c2, pc = Conv2dCfg(1, 1), Conv2dCfg(1, 0), Pool2dCfg(2)

    def fwd(params: dict[str, Any], x: Any, cfg: None) -> tuple[Any, Any]:
        h, k1 = conv2d_fwd(params["c1"], x, c1)
        h, kp = max_pool2d_fwd({}, h, pc)
        h, k2 = conv2d_fwd(params["c2"], h, c2)
        return h, (k1, kp, k2)

    def bwd(cache: Any, dy: Any) -> tuple[Any, dict[str, Any]]:
        k1, kp, k2 = cache
        d, g2 = conv2d_bwd(k2, dy)
        d, _ = max_pool2d_bwd(kp, d)
        d, g1 = conv2d_bwd(k1, d)
        return d, {"c1": g1, "c2": g2}

    report = check_pair(fwd, bwd, {"c1": p1, "c2": p2}, x, None, rng=rng)
    assert report.ok(1e-6), report


@pytest.mark.parametrize("impl", ["im2col", "naive", "strided"])
def test_param_grads_checks_dy_like_the_backward(impl: str) -> None:
    from fcnn.layers.conv import conv2d_param_grads

    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((2, 1, 3, 3)), "b": np.zeros(2)}
    _, cache = conv2d_fwd(params, rng.standard_normal((2, 1, 5, 5)), Conv2dCfg(impl=impl))
    with pytest.raises(ValueError, match=r"conv2d: dy must have the shape of y"):
        conv2d_param_grads(cache, np.zeros((2, 2, 4, 4)))
    with pytest.raises(TypeError, match="conv2d"):
        conv2d_param_grads(cache, np.zeros((2, 2, 3, 3), dtype=np.int64))
    with pytest.raises((TypeError, ValueError), match="conv2d"):
        conv2d_param_grads(cache, np.zeros((2, 2, 3, 3), dtype=np.float32))
    grads = conv2d_param_grads(cache, np.ones((2, 2, 3, 3)))
    assert grads["w"].dtype == np.float64 and grads["w"].shape == (2, 1, 3, 3)


@pytest.mark.parametrize(
    ("c", "f", "k"),
    [(3, 4, 3), (1, 12, 1), (1, 10, 3)],  # column rows C*K*K + 1 vs F filters: >, < and =
)
def test_param_grads_match_the_naive_backward_in_both_product_orders(
    rng: np.random.Generator, c: int, f: int, k: int
) -> None:
    from fcnn.layers.conv import conv2d_param_grads

    case = ConvCase(3, c, f, 6, 5, k, k, pad=1)
    params, x = case.make(rng)
    dy_shape = (3, f, 6 - k + 3, 5 - k + 3)
    dy = rng.standard_normal(dy_shape)
    _, fast = conv2d_fwd(params, x, case.cfg("im2col"))
    _, slow = conv2d_fwd(params, x, case.cfg("naive"))
    got, want = conv2d_param_grads(fast, dy), conv2d_bwd(slow, dy)[1]
    for key in ("w", "b"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-10, atol=1e-12)
        assert got[key].flags.c_contiguous
