"""Conv2d's padding="same", dilation and groups (issue 23): gradient checks, the naive reference,
PyTorch, dtypes, read-only inputs, the columns, errors, the layer and its spec."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from conv_cases import (
    ConvCase,
    Window,
    assert_col2im_is_the_adjoint,
    assert_columns_match_windows,
    assert_float32_in_float32_out,
    assert_gradcheck,
    assert_impls_agree,
    assert_matches_torch,
    assert_read_only_inputs_survive,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnn.layers.base import Context
from fcnn.layers.conv import Conv2d, Conv2dCfg, conv2d_bwd, conv2d_fwd, conv2d_param_grads
from fcnn.ops.shapes import conv_out_size, same_padding

IMPLS = ["naive", "im2col"]  # the strided kernel takes dilation 1 and groups 1 only

# (N, C, F, H, W, KH, KW, stride, padding, dilation, groups); comments say why each is here.
GRID = [
    # dilation 2, padding smaller than the dilated kernel's half
    ConvCase(2, 2, 3, 7, 8, 3, 3, 1, 1, 2, 1),
    # stride divides neither axis
    ConvCase(1, 2, 2, 9, 8, 2, 3, (2, 3), ((1, 0), (2, 1)), (3, 2), 1),
    # two groups of 2 channels, 3 filters each
    ConvCase(2, 4, 6, 6, 7, 3, 3, 1, 1, 1, 2),
    # depthwise, 2 filters per channel, ragged
    ConvCase(2, 3, 6, 7, 6, 3, 3, 2, ((0, 1), (1, 0)), 1, 3),
    # depthwise and dilated, asymmetric kernel
    ConvCase(1, 4, 4, 8, 9, 3, 2, (1, 2), 2, (2, 3), 4),
    # "same", non-square odd kernel
    ConvCase(2, 3, 3, 5, 6, 3, 5, 1, "same", 1, 1),
    # "same" with dilation and groups
    ConvCase(1, 4, 2, 6, 5, 3, 3, 1, "same", (2, 1), 2),
]


# --- gradients, the reference, PyTorch ------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", GRID, ids=str)
def test_gradcheck(rng: np.random.Generator, impl: str, case: ConvCase) -> None:
    assert_gradcheck(case, rng, impl)


@pytest.mark.parametrize("case", GRID, ids=str)
def test_im2col_agrees_with_naive(rng: np.random.Generator, case: ConvCase) -> None:
    assert_impls_agree(case, rng, IMPLS)


@st.composite
def grouped_cases(draw: st.DrawFn) -> ConvCase:
    groups = draw(st.integers(1, 3))
    n, c_g, f_g = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pt, pb, pl, pr = (draw(st.integers(0, 2)) for _ in range(4))
    # Output >= 1x1 needs H + pt + pb >= dh*(KH - 1) + 1.
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pt - pb), dh * (kh - 1) + 6))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - pl - pr), dw * (kw - 1) + 6))
    shape = (n, groups * c_g, groups * f_g, h, w, kh, kw)
    return ConvCase(*shape, (sh, sw), ((pt, pb), (pl, pr)), (dh, dw), groups)


@settings(max_examples=80)
@given(grouped_cases(), st.integers(0, 2**32 - 1))
def test_im2col_agrees_with_naive_hypothesis(case: ConvCase, seed: int) -> None:
    assert_impls_agree(case, np.random.default_rng(seed), IMPLS, dy_seed=seed)


def _torch_padding(pad: Any) -> tuple[Any, tuple[int, int, int, int]]:
    """PyTorch's padding argument and an explicit F.pad for asymmetric fcnn padding."""
    if isinstance(pad, str | int):
        return pad, (0, 0, 0, 0)
    (top, bottom), (left, right) = pad
    return 0, (left, right, top, bottom)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", GRID, ids=str)
def test_matches_torch_forward_and_backward(
    rng: np.random.Generator, impl: str, case: ConvCase
) -> None:
    torch = pytest.importorskip("torch")
    params, x = case.make(rng)
    padding, explicit = _torch_padding(case.pad)

    def forward(tx: Any, tw: Any, tb: Any) -> Any:
        return torch.nn.functional.conv2d(
            torch.nn.functional.pad(tx, explicit),
            tw,
            tb,
            stride=case.stride,
            padding=padding,
            dilation=case.dil,
            groups=case.groups,
        )

    ours = case.run(params, x, impl)
    assert_matches_torch(torch, ours, params, x, forward, rtol=1e-10, atol=1e-12)


def test_known_values_of_a_dilated_kernel() -> None:
    # A 2x2 kernel of ones with dilation 2 adds the four corners of each 3x3 window.
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    params = {"w": np.ones((1, 1, 2, 2)), "b": np.zeros(1)}
    for impl in IMPLS:
        y, _ = conv2d_fwd(params, x, Conv2dCfg(dilation=2, impl=impl))
        corners = x[0, 0, :3, :3] + x[0, 0, :3, 2:] + x[0, 0, 2:, :3] + x[0, 0, 2:, 2:]
        np.testing.assert_array_equal(y[0, 0], corners)


def test_depthwise_is_one_convolution_per_channel(rng: np.random.Generator) -> None:
    # groups == C: filter k of channel c sees channel c alone, as a 1-channel convolution.
    case = ConvCase(2, 3, 6, 6, 5, 3, 3, pad=1, groups=3)
    params, x = case.make(rng)
    y, _ = conv2d_fwd(params, x, case.cfg("im2col"))
    for k in range(6):
        c = k // 2  # two filters per channel, in channel order
        one = {"w": params["w"][k : k + 1], "b": params["b"][k : k + 1]}
        alone, _ = conv2d_fwd(one, x[:, c : c + 1], Conv2dCfg(padding=1, impl="naive"))
        np.testing.assert_allclose(y[:, k], alone[:, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("k", "dil"), [(1, 1), (3, 1), (5, 1), (3, 2), ((3, 5), (3, 1))])
def test_same_padding_keeps_the_size(rng: np.random.Generator, k: Any, dil: Any) -> None:
    kh, kw = (k, k) if isinstance(k, int) else k
    case = ConvCase(2, 2, 3, 9, 7, kh, kw, pad="same", dil=dil)
    params, x = case.make(rng)
    for impl in IMPLS:
        y, _, _, _ = case.run(params, x, impl)
        assert y.shape == (2, 3, 9, 7)
    dh, dw = (dil, dil) if isinstance(dil, int) else dil
    assert same_padding(kh, kw, (dh, dw)) == ((dh * (kh - 1) // 2,) * 2, (dw * (kw - 1) // 2,) * 2)


@pytest.mark.parametrize("impl", IMPLS)
def test_rows_no_dilated_window_touches_get_zero_gradient(
    rng: np.random.Generator, impl: str
) -> None:
    # H = W = 8, K = 2, dilation 2, stride 2: windows read rows {0, 2}, {2, 4}, {4, 6}: the odd
    # rows fall between the taps and row 7 is past the last window.
    case = ConvCase(1, 2, 2, 8, 8, 2, 2, 2, 0, 2)
    _, dx, _, _ = case.run(*case.make(rng), impl)
    assert np.all(dx[:, :, 1::2, :] == 0) and np.all(dx[:, :, :, 1::2] == 0)
    assert np.all(dx[:, :, 6, ::2] != 0) and np.all(dx[:, :, ::2, 6] != 0)


# --- dtypes, read-only inputs, the first layer's shortcut ----------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("pad", "dil", "groups"), [(1, 2, 1), ("same", 1, 2), (0, (1, 2), 4)])
def test_float32_in_float32_out(
    rng: np.random.Generator, impl: str, pad: Any, dil: Any, groups: int
) -> None:
    assert_float32_in_float32_out(ConvCase(2, 4, 4, 7, 8, 3, 3, 1, pad, dil, groups), rng, impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_read_only_inputs_are_not_modified(rng: np.random.Generator, impl: str) -> None:
    case = ConvCase(2, 4, 2, 7, 6, 3, 2, 2, ((0, 1), (1, 0)), (2, 1), 2)
    params, x = case.make(rng)
    x = x.transpose(0, 1, 3, 2)  # (2, 4, 6, 7), not contiguous
    assert_read_only_inputs_survive(case, rng, impl, params, x)


@pytest.mark.parametrize("impl", IMPLS)
def test_param_grads_equal_the_backward_with_groups(rng: np.random.Generator, impl: str) -> None:
    case = ConvCase(2, 6, 4, 6, 6, 3, 3, 1, "same", 2, 2)
    params, x = case.make(rng)
    y, cache = conv2d_fwd(params, x, case.cfg(impl))
    dy = rng.standard_normal(y.shape)
    got, want = conv2d_param_grads(cache, dy), conv2d_bwd(cache, dy)[1]
    for key in ("w", "b"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12)
        assert got[key].shape == params[key].shape


# --- im2col / col2im with dilation --------------------------------------------------------

# Window(N, C, H, W, KH, KW, stride, padding, dilation)
DILATED = [
    Window(2, 2, 7, 8, 3, 2, (1, 1), ((1, 1), (0, 2)), (2, 3)),
    Window(1, 3, 9, 9, 2, 3, (2, 3), ((0, 1), (1, 0)), (3, 2)),  # the stride divides neither axis
]


@pytest.mark.parametrize("win", DILATED, ids=str)
def test_dilated_columns_match_windows_and_col2im_is_their_adjoint(
    rng: np.random.Generator, win: Window
) -> None:
    x = rng.standard_normal(win.x_shape)
    cols = win.im2col(x)
    assert_columns_match_windows(win, x, cols)
    assert_col2im_is_the_adjoint(win, x, rng.standard_normal(cols.shape))


def test_dilated_kernel_larger_than_the_input_names_both_sizes() -> None:
    msg = r"^dilated kernel H=7 \(3 taps, dilation 3\) is larger than the padded input H=6"
    with pytest.raises(ValueError, match=msg):
        conv_out_size(4, 3, 1, 1, 1, "H", 3)


# --- bad input ----------------------------------------------------------------------------


def test_groups_that_do_not_fit_the_channels(rng: np.random.Generator) -> None:
    params, x = ConvCase(1, 4, 4, 5, 5, 3, 3, groups=2).make(rng)  # w: (4, 2, 3, 3)
    msg = r"^conv2d: x has 6 channels \(C\) but w expects groups \* C_g = 2 \* 2 = 4$"
    with pytest.raises(ValueError, match=msg):
        conv2d_fwd(params, rng.standard_normal((1, 6, 5, 5)), Conv2dCfg(groups=2))
    with pytest.raises(
        ValueError, match=r"^conv2d: w has 3 filters \(F\), not a multiple of groups=2$"
    ):
        conv2d_fwd({"w": params["w"][:3], "b": params["b"][:3]}, x, Conv2dCfg(groups=2))
    # Without groups, the same weights are a plain channel mismatch.
    with pytest.raises(ValueError, match=r"^conv2d: x has 4 channels \(C\) but w expects 2$"):
        conv2d_fwd(params, x, Conv2dCfg())


def test_same_padding_errors(rng: np.random.Generator) -> None:
    with pytest.raises(
        ValueError, match=r"^Conv2dCfg.padding='same' needs stride 1, got stride \(2, 1\)"
    ):
        Conv2dCfg((2, 1), "same")
    params, x = ConvCase(1, 1, 1, 5, 5, 2, 3).make(rng)
    msg = r"^conv2d: padding='same' needs an odd kernel size, got \(2, 3\)$"
    with pytest.raises(ValueError, match=msg):
        conv2d_fwd(params, x, Conv2dCfg(padding="same"))
    with pytest.raises(ValueError, match=msg):
        Conv2d(4, (2, 3), padding="same")
    with pytest.raises(
        ValueError, match=r"^Conv2dCfg.padding must be an int, .* 'same' or 'valid', got 'full'"
    ):
        Conv2dCfg(padding="full")
    assert Conv2dCfg(padding="valid").padding == ((0, 0), (0, 0))


def test_dilation_and_groups_must_be_positive_ints() -> None:
    with pytest.raises(ValueError, match=r"^Conv2dCfg.dilation must be >= 1, got \(1, 0\)"):
        Conv2dCfg(dilation=(1, 0))
    with pytest.raises(ValueError, match=r"^Conv2dCfg.groups must be >= 1, got 0"):
        Conv2dCfg(groups=0)
    with pytest.raises(TypeError, match=r"^Conv2dCfg.groups must be an int, got 1.5"):
        Conv2dCfg(groups=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^Conv2dCfg.groups must be an int, got True"):
        Conv2dCfg(groups=True)


def test_strided_says_what_it_does_not_support() -> None:
    msg = (
        r"^Conv2dCfg: impl='strided' supports dilation 1 and groups 1 only, got dilation \(2, 2\) "
        r"and groups 1; use impl='im2col' or 'naive'$"
    )
    with pytest.raises(ValueError, match=msg):
        Conv2dCfg(impl="strided", dilation=2)
    with pytest.raises(ValueError, match=r"^Conv2dCfg: impl='strided' supports .* groups 2"):
        Conv2d(4, 3, impl="strided", groups=2)


def test_layer_errors_for_groups(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match=r"^conv2d: out_channels=5 is not a multiple of groups=2$"):
        Conv2d(5, 3, groups=2)
    with pytest.raises(
        ValueError, match=r"^conv2d: input channels 3 are not a multiple of groups=2$"
    ):
        Conv2d(4, 3, groups=2).init(rng, (3, 6, 6), np.float32)
    msg = r"^conv2d: dilated kernel W=9 \(3 taps, dilation 4\) is larger than the padded input W=8"
    with pytest.raises(ValueError, match=msg):
        Conv2d(2, 3, padding=1, dilation=(1, 4)).init(rng, (1, 6, 6), np.float32)


# --- the layer and its spec ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_init_shapes(rng: np.random.Generator, dtype: Any) -> None:
    layer = Conv2d(6, 3, padding="same", dilation=2, groups=3)
    params, state, out_shape = layer.init(rng, (3, 9, 8), dtype)
    assert params["w"].shape == (6, 1, 3, 3) and params["w"].dtype == dtype
    assert out_shape == (6, 9, 8) and state == {}
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    y, cache, _ = layer.apply(params, state, x, Context())
    assert y.shape == (2, *out_shape) and y.dtype == dtype
    dx, grads = layer.backward(cache, rng.standard_normal(y.shape).astype(dtype))
    assert dx.shape == x.shape and grads["w"].shape == (6, 1, 3, 3)
    # He-normal over the C/groups * KH * KW inputs a filter sees.
    big, _, _ = Conv2d(256, 3, groups=2).init(np.random.default_rng(0), (32, 5, 5), np.float64)
    assert abs(big["w"].std() / np.sqrt(2.0 / (16 * 9)) - 1) < 0.05


def test_spec_describes_every_new_setting_and_rebuilds() -> None:
    layer = Conv2d(8, 3, padding="same", dilation=(2, 1), groups=4)
    assert layer.spec == {
        "type": "Conv2d",
        "out_channels": 8,
        "kernel_size": [3, 3],
        "stride": [1, 1],
        "padding": "same",
        "impl": "im2col",
        "dilation": [2, 1],
        "groups": 4,
    }
    assert json.loads(json.dumps(layer.spec)) == layer.spec
    for spec in (layer.spec, Conv2d(4, 3, stride=2, dilation=3).spec, Conv2d(4, 3, groups=2).spec):
        fields = {k: v for k, v in spec.items() if k != "type"}
        assert Conv2d(**fields).spec == spec


def test_spec_of_a_plain_convolution_is_the_0_2_0_spec() -> None:
    """fcnn 0.2.0 checkpoints store Conv2d specs without dilation and groups: the defaults
    leave them out, so those checkpoints still match what the code builds."""
    assert Conv2d(8, 3, padding=1, dilation=1, groups=1).spec == {
        "type": "Conv2d",
        "out_channels": 8,
        "kernel_size": [3, 3],
        "stride": [1, 1],
        "padding": [[1, 1], [1, 1]],
        "impl": "im2col",
    }


@pytest.mark.parametrize("fixture", ["v0.2.0-lines-small.npz", "v0.2.0-digits-fast.npz"])
def test_0_2_0_checkpoints_still_match_what_conv2d_builds(fixture: str) -> None:
    """Their stored Conv2d specs have no dilation or groups; loading compares them with
    today's specs (check_same_model), so a default written into the spec would refuse them."""
    from pathlib import Path

    from fcnn.models import load_trained

    trained = load_trained(Path(__file__).parent / "fixtures" / fixture)
    convs = [s for s in trained.meta["model"]["spec"]["layers"] if s["type"] == "Conv2d"]
    assert convs and all("dilation" not in s and "groups" not in s for s in convs)
    x = np.random.default_rng(0).random((2, *trained.input_shape), dtype=np.float32)
    assert np.allclose(trained.predict_proba(x).sum(axis=1), 1.0, atol=1e-5)
