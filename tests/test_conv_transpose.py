"""ConvTranspose2d (issue 23): conv2d's input gradient run forward. Gradient checks, the naive
reference, PyTorch, dtypes, read-only inputs, errors, the layer and its spec."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from conv_cases import (
    TransposeCase,
    assert_float32_in_float32_out,
    assert_gradcheck,
    assert_impls_agree,
    assert_matches_torch,
    assert_read_only_inputs_survive,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnn.layers.base import Context
from fcnn.layers.conv import Conv2d, Conv2dCfg, conv2d_bwd, conv2d_fwd
from fcnn.layers.conv_transpose import (
    ConvTranspose2d,
    ConvTranspose2dCache,
    ConvTranspose2dCfg,
    conv_transpose2d_bwd,
    conv_transpose2d_fwd,
)
from fcnn.ops.layout import batch_last

IMPLS = ["naive", "im2col"]

# (N, C, F, H, W, KH, KW, stride, padding, output_padding); comments say why each is here.
GRID = [
    TransposeCase(1, 1, 2, 3, 3, 3, 3, 1, 0, 0),  # the plain case: a "full" correlation
    TransposeCase(2, 3, 2, 4, 5, 3, 3, 2, 1, 1),  # the usual 2x upsampling (OH = 2H)
    TransposeCase(1, 2, 3, 3, 4, 2, 3, (3, 2), ((1, 0), (0, 2)), (2, 1)),  # asymmetric everything
    TransposeCase(2, 2, 1, 2, 3, 4, 4, 2, 2, 0),  # padding crops more than the stride adds
    # 1x1 kernel: the output padding is bias alone
    TransposeCase(1, 3, 2, 4, 3, 1, 1, 3, 0, (2, 1)),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", GRID, ids=str)
def test_gradcheck(rng: np.random.Generator, impl: str, case: TransposeCase) -> None:
    assert_gradcheck(case, rng, impl)


@pytest.mark.parametrize("case", GRID, ids=str)
def test_im2col_agrees_with_naive(rng: np.random.Generator, case: TransposeCase) -> None:
    assert_impls_agree(case, rng, IMPLS)


@st.composite
def transpose_cases(draw: st.DrawFn) -> TransposeCase:
    n, c, f = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    oph, opw = draw(st.integers(0, sh - 1)), draw(st.integers(0, sw - 1))
    # The output (H - 1)*sh + KH + oph - top - bottom must stay >= 1.
    room_h, room_w = (h - 1) * sh + kh + oph - 1, (w - 1) * sw + kw + opw - 1
    top = draw(st.integers(0, min(2, room_h)))
    bottom = draw(st.integers(0, min(2, room_h - top)))
    left = draw(st.integers(0, min(2, room_w)))
    right = draw(st.integers(0, min(2, room_w - left)))
    pad = ((top, bottom), (left, right))
    return TransposeCase(n, c, f, h, w, kh, kw, (sh, sw), pad, (oph, opw))


@settings(max_examples=80)
@given(transpose_cases(), st.integers(0, 2**32 - 1))
def test_im2col_agrees_with_naive_hypothesis(case: TransposeCase, seed: int) -> None:
    assert_impls_agree(case, np.random.default_rng(seed), IMPLS, dy_seed=seed)


@pytest.mark.parametrize("impl", IMPLS)
def test_forward_is_the_input_gradient_of_conv2d(rng: np.random.Generator, impl: str) -> None:
    """y - b is conv2d's dx for dy = x, and dx is conv2d's forward of dy: the two are adjoint."""
    case = TransposeCase(2, 3, 4, 4, 5, 3, 2, 2, ((1, 0), (0, 1)), (1, 0))
    params, x = case.make(rng)
    y, cache = conv_transpose2d_fwd(params, x, case.cfg(impl))
    conv_cfg = Conv2dCfg(2, ((1, 0), (0, 1)), impl)
    z = rng.standard_normal(y.shape)  # an input of the convolution from F to C channels
    conv_y, conv_cache = conv2d_fwd({"w": params["w"], "b": np.zeros(3)}, z, conv_cfg)
    assert conv_y.shape == x.shape
    conv_dx, _ = conv2d_bwd(conv_cache, x)
    np.testing.assert_allclose(y - params["b"][:, None, None], conv_dx, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, _ = conv_transpose2d_bwd(cache, dy)
    np.testing.assert_allclose(
        dx, conv2d_fwd({"w": params["w"], "b": np.zeros(3)}, dy, conv_cfg)[0]
    )
    # <conv(z), x> == <z, y - b>: the transposed convolution is the adjoint.
    np.testing.assert_allclose(np.vdot(conv_y, x), np.vdot(z, y - params["b"][:, None, None]))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", GRID, ids=str)
def test_matches_torch_forward_and_backward(
    rng: np.random.Generator, impl: str, case: TransposeCase
) -> None:
    torch = pytest.importorskip("torch")
    params, x = case.make(rng)

    def forward(tx: Any, tw: Any, tb: Any) -> Any:
        if isinstance(case.pad, int):
            return torch.nn.functional.conv_transpose2d(
                tx, tw, tb, stride=case.stride, padding=case.pad, output_padding=case.out_pad
            )
        # PyTorch pads symmetrically: crop the asymmetric rest from its output
        (top, bottom), (left, right) = case.pad
        full = torch.nn.functional.conv_transpose2d(
            tx, tw, tb, stride=case.stride, padding=0, output_padding=case.out_pad
        )
        return full[:, :, top : full.shape[2] - bottom, left : full.shape[3] - right]

    ours = case.run(params, x, impl)
    assert_matches_torch(torch, ours, params, x, forward, rtol=1e-10, atol=1e-12)


def test_output_size_and_the_round_trip_of_a_strided_convolution(rng: np.random.Generator) -> None:
    # Conv2d(3, stride 2, padding 1) maps 7 and 8 both to 4; output_padding picks which.
    for size, out_pad in ((7, 0), (8, 1)):
        _, _, down = Conv2d(2, 3, stride=2, padding=1).init(rng, (1, size, size), np.float64)
        up = ConvTranspose2d(1, 3, stride=2, padding=1, output_padding=out_pad)
        assert up.init(rng, down, np.float64)[2] == (1, size, size)
    # A 1x1 kernel at stride 3 spreads the 2x2 input 3 apart; the rest, the output padding
    # included, is the bias alone.
    case = TransposeCase(1, 1, 1, 2, 2, 1, 1, 3, 0, 2)
    params, x = case.make(rng)
    y, _ = conv_transpose2d_fwd(params, x, case.cfg("im2col"))
    assert y.shape == (1, 1, 6, 6)  # (2 - 1) * 3 + 1 + 2
    w, b = params["w"][0, 0, 0, 0], params["b"][0]
    want = np.full((6, 6), b)
    want[::3, ::3] = x[0, 0] * w + b
    np.testing.assert_allclose(y[0, 0], want, rtol=1e-15)


# --- dtypes, layouts, read-only inputs ----------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_float32_in_float32_out(rng: np.random.Generator, impl: str) -> None:
    case = TransposeCase(2, 3, 2, 4, 5, 3, 2, 2, ((1, 0), (0, 1)), 1)
    assert_float32_in_float32_out(case, rng, impl)


def test_im2col_output_is_batch_last(rng: np.random.Generator) -> None:
    case = TransposeCase(3, 2, 4, 4, 4, 3, 3, 2, 1, 1)
    params, x = case.make(rng)
    y, cache = conv_transpose2d_fwd(params, x, case.cfg("im2col"))
    assert np.shares_memory(batch_last(y), y)  # the next layer reads it without a copy
    dx, _ = conv_transpose2d_bwd(cache, np.ones_like(y))
    assert np.shares_memory(batch_last(dx), dx)


@pytest.mark.parametrize("impl", IMPLS)
def test_read_only_inputs_are_not_modified(rng: np.random.Generator, impl: str) -> None:
    case = TransposeCase(2, 3, 2, 5, 4, 2, 3, 2, ((0, 1), (1, 0)), 1)
    params, x = case.make(rng)
    x = x.transpose(0, 1, 3, 2)  # (2, 3, 4, 5), not contiguous
    assert_read_only_inputs_survive(case, rng, impl, params, x)


# --- bad input ------------------------------------------------------------------------------


def test_cfg_errors() -> None:
    msg = r"^ConvTranspose2dCfg.output_padding must be >= 0 and smaller than the stride \(2, 1\)"
    with pytest.raises(ValueError, match=msg):
        ConvTranspose2dCfg((2, 1), 0, (1, 1))
    with pytest.raises(ValueError, match=r"output_padding must be >= 0 .*got -1"):
        ConvTranspose2dCfg(2, 0, -1)
    with pytest.raises(
        ValueError, match=r"^ConvTranspose2dCfg.impl must be one of \['im2col', 'naive'\]"
    ):
        ConvTranspose2dCfg(impl="strided")
    with pytest.raises(ValueError, match=r"^ConvTranspose2dCfg.stride must be >= 1, got 0"):
        ConvTranspose2dCfg(0)
    with pytest.raises(ValueError, match=r"^ConvTranspose2dCfg.padding must be >= 0"):
        ConvTranspose2dCfg(1, -1)
    assert ConvTranspose2dCfg(2, 1, 1) == ConvTranspose2dCfg((2, 2), ((1, 1), (1, 1)), (1, 1))


def test_pair_errors(rng: np.random.Generator) -> None:
    params, x = TransposeCase(1, 2, 3, 4, 4, 3, 3).make(rng)
    with pytest.raises(
        ValueError, match=r"^conv_transpose2d: x has 3 channels \(C\) but w expects 2$"
    ):
        conv_transpose2d_fwd(params, rng.standard_normal((1, 3, 4, 4)), ConvTranspose2dCfg())
    with pytest.raises(ValueError, match=r"^conv_transpose2d: b must have shape \(F,\) = \(3,\)"):
        conv_transpose2d_fwd({**params, "b": np.zeros(2)}, x, ConvTranspose2dCfg())
    with pytest.raises(TypeError, match=r"^conv_transpose2d: cfg must be a ConvTranspose2dCfg"):
        conv_transpose2d_fwd(params, x, Conv2dCfg())  # type: ignore[arg-type]
    msg = r"^conv_transpose2d: output H = \(1 - 1\) \* 1 - 2 - 2 \+ 3 \+ 0 = -1 is less than 1"
    with pytest.raises(ValueError, match=msg):
        conv_transpose2d_fwd(params, x[:, :, :1], ConvTranspose2dCfg(1, 2))
    y, cache = conv_transpose2d_fwd(params, x, ConvTranspose2dCfg())
    with pytest.raises(
        ValueError, match=r"^conv_transpose2d: dy must have the shape of y \(1, 3, 6, 6\)"
    ):
        conv_transpose2d_bwd(cache, np.zeros((1, 3, 6, 5)))
    with pytest.raises(TypeError, match=r"^conv_transpose2d: dtypes must match, but y is float64"):
        conv_transpose2d_bwd(cache, np.zeros(y.shape, np.float32))


def test_layer_errors(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match=r"^conv_transpose2d: out_channels must be >= 1"):
        ConvTranspose2d(0, 3)
    with pytest.raises(ValueError, match=r"^conv_transpose2d: kernel_size must be >= 1"):
        ConvTranspose2d(2, (3, 0))
    with pytest.raises(ValueError, match=r"^conv_transpose2d: output W = .* is less than 1"):
        ConvTranspose2d(2, 1, padding=((0, 0), (1, 1))).init(rng, (1, 4, 1), np.float32)
    with pytest.raises(ValueError, match=r"^conv_transpose2d: input shape must be \(C, H, W\)"):
        ConvTranspose2d(2, 3).init(rng, (4, 4), np.float32)


# --- the layer and its spec ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_init_apply_backward(rng: np.random.Generator, dtype: Any) -> None:
    layer = ConvTranspose2d(4, (3, 2), stride=2, padding=((1, 0), (0, 1)), output_padding=(1, 0))
    assert layer.kind == "convtranspose"
    params, state, out_shape = layer.init(rng, (3, 5, 6), dtype)
    assert params["w"].shape == (3, 4, 3, 2) and params["w"].dtype == dtype
    assert np.all(params["b"] == 0) and params["b"].dtype == dtype and state == {}
    assert out_shape == (4, (5 - 1) * 2 - 1 + 3 + 1, (6 - 1) * 2 - 1 + 2 + 0)
    x = rng.standard_normal((2, 3, 5, 6)).astype(dtype)
    y, cache, _ = layer.apply(params, state, x, Context())
    assert (
        y.shape == (2, *out_shape) and y.dtype == dtype and isinstance(cache, ConvTranspose2dCache)
    )
    dx, grads = layer.backward(cache, rng.standard_normal(y.shape).astype(dtype))
    assert dx.shape == x.shape and set(grads) == {"w", "b"}
    # He-normal over the C*KH*KW/(sh*sw) terms an output sums on average.
    big, _, _ = ConvTranspose2d(64, 4, stride=2).init(
        np.random.default_rng(0), (32, 3, 3), np.float64
    )
    assert abs(big["w"].std() / np.sqrt(2.0 / (32 * 16 / 4)) - 1) < 0.05


def test_spec_is_exactly_the_constructor_arguments() -> None:
    layer = ConvTranspose2d(
        8, 4, stride=2, padding=1, output_padding=(1, 0), impl="naive", name="up"
    )
    assert layer.name == "up"
    assert layer.spec == {
        "type": "ConvTranspose2d",
        "out_channels": 8,
        "kernel_size": [4, 4],
        "stride": [2, 2],
        "padding": [[1, 1], [1, 1]],
        "output_padding": [1, 0],
        "impl": "naive",
    }
    assert json.loads(json.dumps(layer.spec)) == layer.spec
    fields = {k: v for k, v in layer.spec.items() if k != "type"}
    assert ConvTranspose2d(**fields).spec == layer.spec


def test_a_decoder_of_the_new_layers_gradchecks_end_to_end(rng: np.random.Generator) -> None:
    """Composed, issue 23's layers pass gradients through each other's batch-last outputs."""
    import fcnn
    from fcnn.gradcheck import check_layer

    model = fcnn.sequential(
        fcnn.Conv2d(4, 3, padding="same", dilation=2),
        fcnn.Gelu(),
        fcnn.Conv2d(4, 3, stride=2, padding=1, groups=4),
        fcnn.LeakyRelu(0.1),
        fcnn.ConvTranspose2d(3, 3, stride=2, padding=1, output_padding=1),
        fcnn.Gelu("tanh"),
        fcnn.ConvTranspose2d(2, 2, impl="naive"),
        fcnn.Sigmoid(),
        fcnn.Flatten(),
        fcnn.Dense(3),
        fcnn.Tanh(),
    )
    params, state, out_shape = fcnn.init(model, rng, (2, 8, 7), np.float64)
    assert out_shape == (3,)
    report = check_layer(model, params, state, rng.standard_normal((2, 2, 8, 7)), rng=rng)
    assert report.ok(1e-6), report
