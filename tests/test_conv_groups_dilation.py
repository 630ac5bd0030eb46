"""Conv2d's padding="same", dilation and groups (issue 23): gradient checks, the naive reference,
PyTorch, dtypes, read-only inputs, the columns, errors, the layer and its spec."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnn.gradcheck import check_pair
from fcnn.layers.base import Context
from fcnn.layers.conv import Conv2d, Conv2dCfg, conv2d_bwd, conv2d_fwd, conv2d_param_grads
from fcnn.ops.im2col import col2im, im2col
from fcnn.ops.shapes import Pad2d, conv_out_size, same_padding

Arr = np.ndarray[Any, Any]
IMPLS = ["naive", "im2col"]  # the strided kernel takes dilation 1 and groups 1 only

# (N, C, F, H, W, KH, KW, stride, padding, dilation, groups); comments say why each is here.
GRID: list[tuple[int, int, int, int, int, int, int, Any, Any, Any, int]] = [
    (2, 2, 3, 7, 8, 3, 3, 1, 1, 2, 1),  # dilation 2, padding smaller than the dilated kernel's half
    (1, 2, 2, 9, 8, 2, 3, (2, 3), ((1, 0), (2, 1)), (3, 2), 1),  # stride divides neither axis
    (2, 4, 6, 6, 7, 3, 3, 1, 1, 1, 2),  # two groups of 2 channels, 3 filters each
    (2, 3, 6, 7, 6, 3, 3, 2, ((0, 1), (1, 0)), 1, 3),  # depthwise, 2 filters per channel, ragged
    (1, 4, 4, 8, 9, 3, 2, (1, 2), 2, (2, 3), 4),  # depthwise and dilated, asymmetric kernel
    (2, 3, 3, 5, 6, 3, 5, 1, "same", 1, 1),  # "same", non-square odd kernel
    (1, 4, 2, 6, 5, 3, 3, 1, "same", (2, 1), 2),  # "same" with dilation and groups
]
GRID_IDS = [f"case{i}" for i in range(len(GRID))]
ARGS = ("n", "c", "f", "h", "w", "kh", "kw", "stride", "pad", "dil", "groups")


def make(
    rng: np.random.Generator,
    n: int,
    c: int,
    f: int,
    h: int,
    w: int,
    kh: int,
    kw: int,
    groups: int = 1,
    dtype: Any = np.float64,
) -> tuple[dict[str, Arr], Arr]:
    params = {
        "w": rng.standard_normal((f, c // groups, kh, kw)).astype(dtype),
        "b": rng.standard_normal(f).astype(dtype),
    }
    return params, rng.standard_normal((n, c, h, w)).astype(dtype)


def run(params: dict[str, Any], x: Arr, cfg: Conv2dCfg, dy_seed: int = 7) -> tuple[Arr, ...]:
    """y, dx, dw, db with a random dy drawn from a fixed seed."""
    y, cache = conv2d_fwd(params, x, cfg)
    dy = np.random.default_rng(dy_seed).standard_normal(y.shape).astype(y.dtype)
    dx, grads = conv2d_bwd(cache, dy)
    return y, dx, grads["w"], grads["b"]


# --- gradients, the reference, PyTorch ------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(ARGS, GRID, ids=GRID_IDS)
def test_gradcheck(
    rng: np.random.Generator,
    impl: str,
    n: int,
    c: int,
    f: int,
    h: int,
    w: int,
    kh: int,
    kw: int,
    stride: Any,
    pad: Any,
    dil: Any,
    groups: int,
) -> None:
    params, x = make(rng, n, c, f, h, w, kh, kw, groups)
    cfg = Conv2dCfg(stride, pad, impl, dil, groups)
    report = check_pair(conv2d_fwd, conv2d_bwd, params, x, cfg, rng=rng)
    assert set(report.errors) == {"x", "w", "b"}
    assert report.ok(1e-6), report


@pytest.mark.parametrize(ARGS, GRID, ids=GRID_IDS)
def test_im2col_agrees_with_naive(
    rng: np.random.Generator,
    n: int,
    c: int,
    f: int,
    h: int,
    w: int,
    kh: int,
    kw: int,
    stride: Any,
    pad: Any,
    dil: Any,
    groups: int,
) -> None:
    params, x = make(rng, n, c, f, h, w, kh, kw, groups)
    ref = run(params, x, Conv2dCfg(stride, pad, "naive", dil, groups))
    got = run(params, x, Conv2dCfg(stride, pad, "im2col", dil, groups))
    for name, a, b in zip(("y", "dx", "dw", "db"), got, ref, strict=True):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=name)


@st.composite
def grouped_cases(draw: st.DrawFn) -> tuple[Any, ...]:
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
    return shape, (sh, sw), ((pt, pb), (pl, pr)), (dh, dw), groups


@settings(max_examples=80)
@given(grouped_cases(), st.integers(0, 2**32 - 1))
def test_im2col_agrees_with_naive_hypothesis(case: tuple[Any, ...], seed: int) -> None:
    shape, stride, pad, dil, groups = case
    rng = np.random.default_rng(seed)
    params, x = make(rng, *shape, groups=groups)
    ref = run(params, x, Conv2dCfg(stride, pad, "naive", dil, groups), dy_seed=seed)
    got = run(params, x, Conv2dCfg(stride, pad, "im2col", dil, groups), dy_seed=seed)
    for name, a, b in zip(("y", "dx", "dw", "db"), got, ref, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=name)


def _torch_padding(pad: Any) -> tuple[Any, tuple[int, int, int, int]]:
    """PyTorch's padding argument and an explicit F.pad for asymmetric fcnn padding."""
    if isinstance(pad, str | int):
        return pad, (0, 0, 0, 0)
    (top, bottom), (left, right) = pad
    return 0, (left, right, top, bottom)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(ARGS, GRID, ids=GRID_IDS)
def test_matches_torch_forward_and_backward(
    rng: np.random.Generator,
    impl: str,
    n: int,
    c: int,
    f: int,
    h: int,
    w: int,
    kh: int,
    kw: int,
    stride: Any,
    pad: Any,
    dil: Any,
    groups: int,
) -> None:
    torch = pytest.importorskip("torch")
    params, x = make(rng, n, c, f, h, w, kh, kw, groups)
    y, dx, dw, db = run(params, x, Conv2dCfg(stride, pad, impl, dil, groups))
    dy = np.random.default_rng(7).standard_normal(y.shape)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(params["w"], requires_grad=True)
    tb = torch.tensor(params["b"], requires_grad=True)
    padding, explicit = _torch_padding(pad)
    ty = torch.nn.functional.conv2d(
        torch.nn.functional.pad(tx, explicit),
        tw,
        tb,
        stride=stride,
        padding=padding,
        dilation=dil,
        groups=groups,
    )
    ty.backward(torch.tensor(dy))
    for ours, theirs in ((y, ty.detach()), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)


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
    params, x = make(rng, 2, 3, 6, 6, 5, 3, 3, groups=3)
    y, _ = conv2d_fwd(params, x, Conv2dCfg(padding=1, groups=3))
    for k in range(6):
        c = k // 2  # two filters per channel, in channel order
        one = {"w": params["w"][k : k + 1], "b": params["b"][k : k + 1]}
        alone, _ = conv2d_fwd(one, x[:, c : c + 1], Conv2dCfg(padding=1, impl="naive"))
        np.testing.assert_allclose(y[:, k], alone[:, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("k", "dil"), [(1, 1), (3, 1), (5, 1), (3, 2), ((3, 5), (3, 1))])
def test_same_padding_keeps_the_size(rng: np.random.Generator, k: Any, dil: Any) -> None:
    kh, kw = (k, k) if isinstance(k, int) else k
    params, x = make(rng, 2, 2, 3, 9, 7, kh, kw)
    for impl in IMPLS:
        y, _, _, _ = run(params, x, Conv2dCfg(padding="same", impl=impl, dilation=dil))
        assert y.shape == (2, 3, 9, 7)
    dh, dw = (dil, dil) if isinstance(dil, int) else dil
    assert same_padding(kh, kw, (dh, dw)) == ((dh * (kh - 1) // 2,) * 2, (dw * (kw - 1) // 2,) * 2)


@pytest.mark.parametrize("impl", IMPLS)
def test_rows_no_dilated_window_touches_get_zero_gradient(
    rng: np.random.Generator, impl: str
) -> None:
    # H = W = 8, K = 2, dilation 2, stride 2: windows read rows {0, 2}, {2, 4}, {4, 6}: the odd
    # rows fall between the taps and row 7 is past the last window.
    params, x = make(rng, 1, 2, 2, 8, 8, 2, 2)
    _, dx, _, _ = run(params, x, Conv2dCfg(2, 0, impl, 2))
    assert np.all(dx[:, :, 1::2, :] == 0) and np.all(dx[:, :, :, 1::2] == 0)
    assert np.all(dx[:, :, 6, ::2] != 0) and np.all(dx[:, :, ::2, 6] != 0)


# --- dtypes, read-only inputs, the first layer's shortcut ----------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("pad", "dil", "groups"), [(1, 2, 1), ("same", 1, 2), (0, (1, 2), 4)])
def test_float32_in_float32_out(
    rng: np.random.Generator, impl: str, pad: Any, dil: Any, groups: int
) -> None:
    params, x = make(rng, 2, 4, 4, 7, 8, 3, 3, groups, dtype=np.float32)
    cfg = Conv2dCfg(1, pad, impl, dil, groups)
    out = run(params, x, cfg)
    for a in out:
        assert a.dtype == np.float32
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    for a, b in zip(out, run(p64, x.astype(np.float64), cfg), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_read_only_inputs_are_not_modified(rng: np.random.Generator, impl: str) -> None:
    params, x = make(rng, 2, 4, 2, 7, 6, 3, 2, groups=2)
    x = x.transpose(0, 1, 3, 2)  # (2, 4, 6, 7), not contiguous
    originals = {"x": x.copy(), "w": params["w"].copy(), "b": params["b"].copy()}
    for a in (x, params["w"], params["b"]):
        a.setflags(write=False)
    y, cache = conv2d_fwd(params, x, Conv2dCfg(2, ((0, 1), (1, 0)), impl, (2, 1), 2))
    dy = rng.standard_normal(y.shape)
    dy.setflags(write=False)
    dy_copy = dy.copy()
    first = conv2d_bwd(cache, dy)
    second = conv2d_bwd(cache, dy)  # backward twice from one cache: nothing was consumed
    np.testing.assert_array_equal(first[0], second[0])
    for key, value in originals.items():
        np.testing.assert_array_equal({"x": x, **params}[key], value)
    np.testing.assert_array_equal(dy, dy_copy)


@pytest.mark.parametrize("impl", IMPLS)
def test_param_grads_equal_the_backward_with_groups(rng: np.random.Generator, impl: str) -> None:
    params, x = make(rng, 2, 6, 4, 6, 6, 3, 3, groups=2)
    y, cache = conv2d_fwd(params, x, Conv2dCfg(1, "same", impl, 2, 2))
    dy = rng.standard_normal(y.shape)
    got, want = conv2d_param_grads(cache, dy), conv2d_bwd(cache, dy)[1]
    for key in ("w", "b"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12)
        assert got[key].shape == params[key].shape


# --- im2col / col2im with dilation --------------------------------------------------------

DILATED: list[tuple[int, int, int, int, int, int, tuple[int, int], Pad2d, tuple[int, int]]] = [
    (2, 2, 7, 8, 3, 2, (1, 1), ((1, 1), (0, 2)), (2, 3)),
    (1, 3, 9, 9, 2, 3, (2, 3), ((0, 1), (1, 0)), (3, 2)),  # the stride divides neither axis
]


@pytest.mark.parametrize(("n", "c", "h", "w", "kh", "kw", "stride", "pad", "dil"), DILATED)
def test_dilated_columns_match_windows_and_col2im_is_their_adjoint(
    rng: np.random.Generator,
    n: int,
    c: int,
    h: int,
    w: int,
    kh: int,
    kw: int,
    stride: tuple[int, int],
    pad: Pad2d,
    dil: tuple[int, int],
) -> None:
    x = rng.standard_normal((n, c, h, w))
    cols = im2col(x, kh, kw, stride, pad, dilation=dil)
    oh = conv_out_size(h, kh, stride[0], *pad[0], "H", dil[0])
    ow = conv_out_size(w, kw, stride[1], *pad[1], "W", dil[1])
    assert cols.shape == (c * kh * kw, oh * ow * n)
    xpad = np.pad(x, ((0, 0), (0, 0), pad[0], pad[1]))
    c6 = cols.reshape(c, kh, kw, oh, ow, n)
    for r in range(oh):
        for s in range(ow):
            rows = slice(r * stride[0], r * stride[0] + dil[0] * (kh - 1) + 1, dil[0])
            cs = slice(s * stride[1], s * stride[1] + dil[1] * (kw - 1) + 1, dil[1])
            np.testing.assert_array_equal(
                c6[:, :, :, r, s], xpad[:, :, rows, cs].transpose(1, 2, 3, 0)
            )
    c = rng.standard_normal(cols.shape)
    back = col2im(c, x.shape, kh, kw, stride, pad, dil)
    np.testing.assert_allclose(float(np.vdot(cols, c)), float(np.vdot(x, back)), rtol=1e-12)


def test_dilated_kernel_larger_than_the_input_names_both_sizes() -> None:
    msg = r"^dilated kernel H=7 \(3 taps, dilation 3\) is larger than the padded input H=6"
    with pytest.raises(ValueError, match=msg):
        conv_out_size(4, 3, 1, 1, 1, "H", 3)


# --- bad input ----------------------------------------------------------------------------


def test_groups_that_do_not_fit_the_channels(rng: np.random.Generator) -> None:
    params, x = make(rng, 1, 4, 4, 5, 5, 3, 3, groups=2)  # w: (4, 2, 3, 3)
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
    params, x = make(rng, 1, 1, 1, 5, 5, 2, 3)
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
