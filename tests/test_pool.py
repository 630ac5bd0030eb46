"""Max and average pooling: gradient checks, a naive reference, ties, overlap, dtypes, errors."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fcnn.ops.pool as ops_pool
from fcnn.gradcheck import check_pair
from fcnn.layers.base import Context
from fcnn.layers.pool import (
    AvgPool2d,
    AvgPool2dCache,
    MaxPool2d,
    MaxPool2dCache,
    Pool2dCfg,
    avg_pool2d_bwd,
    avg_pool2d_fwd,
    max_pool2d_bwd,
    max_pool2d_fwd,
)
from fcnn.ops.layout import batch_last, nchw_view
from fcnn.ops.shapes import Pad2d

Arr = np.ndarray[Any, Any]
PAIRS: dict[str, tuple[Any, Any]] = {
    "max": (max_pool2d_fwd, max_pool2d_bwd),
    "avg": (avg_pool2d_fwd, avg_pool2d_bwd),
}
KINDS = ["max", "avg"]


# --- the naive reference: loops over output pixels ---------------------------------------


def naive_pool(
    kind: str, x: Arr, dy: Arr, window: tuple[int, int], stride: tuple[int, int], pad: Pad2d
) -> tuple[Arr, Arr]:
    """y and dx by looping over every output pixel and every window cell (float64)."""
    n, c, h, w = x.shape
    kh, kw = window
    sh, sw = stride
    (top, bottom), (left, right) = pad
    oh = (h + top + bottom - kh) // sh + 1
    ow = (w + left + right - kw) // sw + 1
    y = np.zeros((n, c, oh, ow))
    dx = np.zeros(x.shape)
    for b in range(n):
        for ch in range(c):
            for r in range(oh):
                for q in range(ow):
                    cells = []  # (value, row, col or None for padding), row-major in the window
                    for i in range(kh):
                        for j in range(kw):
                            hr, wc = r * sh + i - top, q * sw + j - left
                            inside = 0 <= hr < h and 0 <= wc < w
                            cells.append((x[b, ch, hr, wc], hr, wc) if inside else None)
                    if kind == "max":
                        values = [-np.inf if cell is None else cell[0] for cell in cells]
                        first = int(np.argmax(values))  # argmax returns the first maximum
                        y[b, ch, r, q] = values[first]
                        winner = cells[first]
                        if winner is not None:
                            dx[b, ch, winner[1], winner[2]] += dy[b, ch, r, q]
                    else:
                        y[b, ch, r, q] = sum(cell[0] for cell in cells if cell) / (kh * kw)
                        for cell in cells:
                            if cell is not None:
                                dx[b, ch, cell[1], cell[2]] += dy[b, ch, r, q] / (kh * kw)
    return y, dx


def separated(rng: np.random.Generator, shape: tuple[int, ...], gap: float = 1e-2) -> Arr:
    """Distinct values at least ``gap`` apart in random order, so no window has a tie."""
    size = int(np.prod(shape))
    return ((rng.permutation(size) - size / 2) * gap).reshape(shape)


def run(kind: str, x: Arr, cfg: Pool2dCfg, dy_seed: int = 3) -> tuple[Arr, Arr, Arr]:
    """y, dy and dx through the pure pair with a random dy in x's dtype."""
    fwd, bwd = PAIRS[kind]
    y, cache = fwd({}, x, cfg)
    dy = np.random.default_rng(dy_seed).standard_normal(y.shape).astype(x.dtype)
    dx, grads = bwd(cache, dy)
    assert grads == {}
    return y, dy, dx


# (N, C, H, W, window, stride, padding); comments say why each case is here.
GRID: list[tuple[int, int, int, int, Any, Any, Any]] = [
    (2, 2, 4, 4, 2, None, 0),  # the plain 2x2 case, stride = window
    (1, 2, 6, 6, 3, None, 0),  # window 3, stride 3
    (1, 2, 5, 5, 2, 1, 0),  # overlapping windows (stride 1)
    (1, 1, 6, 5, 3, 1, 1),  # window 3, stride 1, symmetric padding
    (2, 1, 7, 6, 3, 2, 1),  # 7 + 2 - 3 = 6 even, 6 + 2 - 3 = 5 odd: stride 2 skips the last column
    (1, 2, 5, 7, 2, 2, 0),  # 5 - 2 = 3 odd: stride 2 leaves the last row untouched
    (1, 2, 7, 8, 3, 3, ((1, 0), (0, 1))),  # asymmetric padding, stride 3 divides neither axis
    (1, 1, 6, 7, (2, 3), (1, 2), ((1, 0), (1, 1))),  # non-square window and strides
    (2, 1, 5, 9, (3, 2), (2, 3), (1, 0)),  # padding rows only; 5 + 2 - 3 = 4, 9 - 2 = 7 (sw 3)
    (1, 2, 3, 3, 3, 1, 1),  # output as large as the input, every window touches padding
]
GRID_IDS = [f"case{i}" for i in range(len(GRID))]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n", "c", "h", "w", "window", "stride", "pad"), GRID, ids=GRID_IDS)
def test_gradcheck(
    rng: np.random.Generator,
    kind: str,
    n: int,
    c: int,
    h: int,
    w: int,
    window: Any,
    stride: Any,
    pad: Any,
) -> None:
    x = separated(rng, (n, c, h, w))
    fwd, bwd = PAIRS[kind]
    report = check_pair(fwd, bwd, {}, x, Pool2dCfg(window, stride, pad), rng=rng)
    assert report.ok(1e-6), report


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n", "c", "h", "w", "window", "stride", "pad"), GRID, ids=GRID_IDS)
def test_matches_naive_reference(
    rng: np.random.Generator,
    kind: str,
    n: int,
    c: int,
    h: int,
    w: int,
    window: Any,
    stride: Any,
    pad: Any,
) -> None:
    cfg = Pool2dCfg(window, stride, pad)
    x = rng.standard_normal((n, c, h, w))
    y, dy, dx = run(kind, x, cfg)
    y_ref, dx_ref = naive_pool(kind, x, dy, cfg.window, cfg.stride, cfg.padding)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=1e-12)


@st.composite
def pool_cases(draw: st.DrawFn) -> tuple[tuple[int, ...], Pool2dCfg, int, bool]:
    """A random shape, window, stride and legal padding whose output is at least 1x1."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pads = [draw(st.integers(0, k // 2)) for k in (kh, kh, kw, kw)]
    h = draw(st.integers(max(1, kh - pads[0] - pads[1]), 8))
    w = draw(st.integers(max(1, kw - pads[2] - pads[3]), 8))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    cfg = Pool2dCfg((kh, kw), (sh, sw), ((pads[0], pads[1]), (pads[2], pads[3])))
    return (n, c, h, w), cfg, draw(st.integers(0, 2**32 - 1)), draw(st.booleans())


@settings(max_examples=150)
@given(case=pool_cases(), kind=st.sampled_from(KINDS))
def test_matches_naive_reference_random(
    case: tuple[tuple[int, ...], Pool2dCfg, int, bool], kind: str
) -> None:
    shape, cfg, seed, ties = case
    gen = np.random.default_rng(seed)
    # With ``ties`` the values are tiny integers, so most windows hold equal maxima.
    x = gen.integers(0, 3, shape).astype(np.float64) if ties else gen.standard_normal(shape)
    y, dy, dx = run(kind, x, cfg, dy_seed=seed)
    y_ref, dx_ref = naive_pool(kind, x, dy, cfg.window, cfg.stride, cfg.padding)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=1e-12)


# --- ties, overlap and untouched rows, by hand ------------------------------------------


def test_max_all_equal_window_sends_gradient_to_first_element_only() -> None:
    x = np.full((1, 1, 2, 2), 5.0)
    _, cache = max_pool2d_fwd({}, x, Pool2dCfg(2))
    dx, _ = max_pool2d_bwd(cache, np.array([[[[7.0]]]]))
    np.testing.assert_array_equal(dx, [[[[7.0, 0.0], [0.0, 0.0]]]])


def test_max_all_equal_overlapping_windows_each_pick_their_own_first() -> None:
    # Stride 1 on a constant 3x3: window (r, q) starts at (r, q), its first cell.
    x = np.zeros((1, 1, 3, 3))
    _, cache = max_pool2d_fwd({}, x, Pool2dCfg(2, 1))
    dy = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    dx, _ = max_pool2d_bwd(cache, dy)
    np.testing.assert_array_equal(dx[0, 0], [[1, 2, 0], [3, 4, 0], [0, 0, 0]])


def test_max_tie_with_padding_never_routes_to_padding() -> None:
    # All values are -1e300; padding is -inf, so the first real cell wins every window.
    x = np.full((1, 1, 2, 2), -1e300)
    y, cache = max_pool2d_fwd({}, x, Pool2dCfg(2, 2, 1))
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), -1e300))
    dx, _ = max_pool2d_bwd(cache, np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(dx, np.ones((1, 1, 2, 2)))


def test_max_overlapping_windows_accumulate() -> None:
    # The centre 9 is the maximum of all four 2x2 windows: it collects every dy.
    x = np.array([[1.0, 2.0, 3.0], [4.0, 9.0, 5.0], [6.0, 7.0, 8.0]]).reshape(1, 1, 3, 3)
    y, cache = max_pool2d_fwd({}, x, Pool2dCfg(2, 1))
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), 9.0))
    dx, _ = max_pool2d_bwd(cache, np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    np.testing.assert_array_equal(dx[0, 0], [[0, 0, 0], [0, 10, 0], [0, 0, 0]])


def test_avg_overlapping_windows_accumulate() -> None:
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    y, cache = avg_pool2d_fwd({}, x, Pool2dCfg(2, 1))
    np.testing.assert_array_equal(y[0, 0], [[2.0, 3.0], [5.0, 6.0]])
    dx, _ = avg_pool2d_bwd(cache, np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(dx[0, 0], np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4)


def test_avg_divides_by_the_full_window_including_padding() -> None:
    x = np.ones((1, 1, 2, 2))
    y, _ = avg_pool2d_fwd({}, x, Pool2dCfg(2, 2, 1))
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), 0.25))


@pytest.mark.parametrize("kind", KINDS)
def test_rows_no_window_touches_get_zero_gradient(rng: np.random.Generator, kind: str) -> None:
    x = separated(rng, (1, 2, 5, 7))
    _, _, dx = run(kind, x, Pool2dCfg(2, 2))
    assert np.all(dx[:, :, 4, :] == 0) and np.all(dx[:, :, :, 6] == 0)
    assert np.all(dx[:, :, :4, :6].reshape(2, -1).any(axis=1))


def test_max_without_padding_matches_reshape_max(rng: np.random.Generator) -> None:
    x = rng.standard_normal((3, 2, 6, 8))
    y, _ = max_pool2d_fwd({}, x, Pool2dCfg(2))
    np.testing.assert_array_equal(y, x.reshape(3, 2, 3, 2, 4, 2).max(axis=(3, 5)))


# --- dtypes, views, read-only inputs ----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_in_dtype_out(rng: np.random.Generator, kind: str, dtype: Any) -> None:
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    y, _, dx = run(kind, x, Pool2dCfg(3, 2, 1))
    assert y.dtype == dtype and dx.dtype == dtype and dx.shape == x.shape
    y64, _, dx64 = run(kind, x.astype(np.float64), Pool2dCfg(3, 2, 1))
    np.testing.assert_allclose(y, y64, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, dx64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_read_only_and_non_contiguous_inputs(rng: np.random.Generator, kind: str) -> None:
    base = rng.standard_normal((3, 6, 4, 14))
    x = base.transpose(0, 2, 1, 3)[:, :, :, ::2]  # (3, 4, 6, 7), neither C- nor F-contiguous
    assert not x.flags.c_contiguous and not x.flags.f_contiguous
    x.flags.writeable = False
    before = x.copy()
    cfg = Pool2dCfg(3, 2, ((1, 0), (1, 1)))
    fwd, bwd = PAIRS[kind]
    y, cache = fwd({}, x, cfg)
    dy = rng.standard_normal(y.shape)[:, :, ::-1]  # a reversed (negative-stride) view
    dy = np.ascontiguousarray(dy)[:, :, ::-1]
    dy.flags.writeable = False
    dy_before = dy.copy()
    dx, _ = bwd(cache, dy)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(dy, dy_before)
    y_ref, dx_ref = naive_pool(kind, before, dy_before, cfg.window, cfg.stride, cfg.padding)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=1e-12)


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "err", "match"),
    [
        ((0,), ValueError, r"Pool2dCfg.window must be >= 1, got 0"),
        (((2, 0),), ValueError, r"Pool2dCfg.window must be >= 1"),
        ((2, 0), ValueError, r"Pool2dCfg.stride must be >= 1, got 0"),
        ((2, (1, -1)), ValueError, r"Pool2dCfg.stride must be >= 1"),
        ((2, 2, 2), ValueError, r"Pool2dCfg.padding must be at most half the window.*got 2"),
        ((3, 1, ((0, 0), (2, 0))), ValueError, r"Pool2dCfg.padding must be at most half"),
        (((1, 4), 1, (1, 0)), ValueError, r"Pool2dCfg.padding must be at most half"),
        ((2, 1, -1), ValueError, r"Pool2dCfg.padding must be >= 0"),
        ((2.5,), TypeError, r"Pool2dCfg.window must be an int"),
        (((2, 2, 2),), ValueError, r"Pool2dCfg.window must be an int or a pair"),
    ],
)
def test_cfg_rejects(args: tuple[Any, ...], err: type[Exception], match: str) -> None:
    with pytest.raises(err, match=match):
        Pool2dCfg(*args)


def test_cfg_is_canonical_and_frozen() -> None:
    cfg = Pool2dCfg(3, padding=1)
    assert cfg == Pool2dCfg((3, 3), (3, 3), ((1, 1), (1, 1)))
    assert cfg.window == (3, 3) and cfg.stride == (3, 3) and cfg.padding == ((1, 1), (1, 1))
    assert Pool2dCfg((2, 3), 1, (1, 0)).padding == ((1, 1), (0, 0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.window = (2, 2)  # type: ignore[misc]


@pytest.mark.parametrize("kind", KINDS)
def test_forward_rejects_bad_input(rng: np.random.Generator, kind: str) -> None:
    fwd, _ = PAIRS[kind]
    op = f"{kind}_pool2d"
    x = rng.standard_normal((1, 2, 4, 4))
    cfg = Pool2dCfg(2)
    with pytest.raises(ValueError, match=rf"^{op}: x must have rank 4 \(N, C, H, W\), got shape"):
        fwd({}, x[0], cfg)
    with pytest.raises(ValueError, match=rf"^{op}: x must have rank 4"):
        fwd({}, x[None], cfg)
    with pytest.raises(TypeError, match=rf"^{op}: x must have a floating dtype, got int64"):
        fwd({}, np.ones((1, 2, 4, 4), dtype=np.int64), cfg)
    with pytest.raises(TypeError, match=rf"^{op}: x must have a floating dtype, got object"):
        fwd({}, x.astype(object), cfg)
    with pytest.raises(TypeError, match=rf"^{op}: x must be an array, got list"):
        fwd({}, x.tolist(), cfg)
    with pytest.raises(ValueError, match=rf"^{op}: kernel H=5 is larger than the padded input H=4"):
        fwd({}, x, Pool2dCfg(5, 1))
    with pytest.raises(ValueError, match=rf"^{op}: kernel W=7 is larger than the padded input W=6"):
        fwd({}, x, Pool2dCfg((1, 7), 1, (0, 1)))
    with pytest.raises(ValueError, match=rf"^{op}: params must have keys \[\], got \['w'\]"):
        fwd({"w": np.ones(1)}, x, cfg)
    with pytest.raises(TypeError, match=rf"^{op}: params must be a dict"):
        fwd(None, x, cfg)
    with pytest.raises(TypeError, match=rf"^{op}: cfg must be a Pool2dCfg, got int"):
        fwd({}, x, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_rejects_bad_dy(rng: np.random.Generator, kind: str) -> None:
    fwd, bwd = PAIRS[kind]
    op = f"{kind}_pool2d"
    y, cache = fwd({}, rng.standard_normal((1, 2, 4, 4)), Pool2dCfg(2))
    with pytest.raises(ValueError, match=rf"^{op}: dy must have the shape of y \(1, 2, 2, 2\)"):
        bwd(cache, np.ones((1, 2, 2, 3)))
    with pytest.raises(
        TypeError, match=rf"^{op}: dtypes must match, but y is float64, dy is float32"
    ):
        bwd(cache, np.ones(y.shape, dtype=np.float32))
    with pytest.raises(TypeError, match=rf"^{op}: dy must have a floating dtype"):
        bwd(cache, np.ones(y.shape, dtype=np.int32))


# --- the layers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctor", "kind", "type_name"),
    [(MaxPool2d, "maxpool", "MaxPool2d"), (AvgPool2d, "avgpool", "AvgPool2d")],
)
def test_constructor(rng: np.random.Generator, ctor: Any, kind: str, type_name: str) -> None:
    layer = ctor((3, 2), padding=((1, 0), (1, 1)), name="p")
    assert layer.kind == kind and layer.name == "p"
    params, state, out = layer.init(rng, (4, 7, 6), np.float32)
    # OH = (7 + 1 + 0 - 3) // 3 + 1 = 2; OW = (6 + 1 + 1 - 2) // 2 + 1 = 4
    assert params == {} and state == {} and out == (4, 2, 4)
    spec = json.loads(json.dumps(layer.spec))
    assert spec == {
        "type": type_name,
        "window": [3, 2],
        "stride": [3, 2],
        "padding": [[1, 0], [1, 1]],
    }
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    y, cache, state2 = layer.apply(params, state, x, Context())
    assert y.shape == (2, *out) and y.dtype == np.float32 and state2 == {}
    assert isinstance(cache, MaxPool2dCache if kind == "maxpool" else AvgPool2dCache)
    dx, grads = layer.backward(cache, np.ones_like(y))
    assert dx.shape == x.shape and grads == {}


@pytest.mark.parametrize("ctor", [MaxPool2d, AvgPool2d])
def test_constructor_rejects(rng: np.random.Generator, ctor: Any) -> None:
    name = {MaxPool2d: "max_pool2d", AvgPool2d: "avg_pool2d"}[ctor]  # the op's one name
    with pytest.raises(ValueError, match=r"Pool2dCfg.window must be >= 1"):
        ctor(0)
    with pytest.raises(ValueError, match=r"Pool2dCfg.stride must be >= 1"):
        ctor(2, 0)
    with pytest.raises(ValueError, match=r"Pool2dCfg.padding must be at most half"):
        ctor(2, padding=2)
    layer = ctor(2)
    with pytest.raises(ValueError, match=rf"^{name}: input shape must be \(C, H, W\)"):
        layer.init(rng, (1, 4, 4, 4), np.float64)
    with pytest.raises(
        ValueError, match=rf"^{name}: kernel H=2 is larger than the padded input H=1"
    ):
        layer.init(rng, (1, 1, 4), np.float64)
    with pytest.raises(TypeError, match=rf"^{name}: dtype must be a floating dtype"):
        layer.init(rng, (1, 4, 4), np.int32)


def test_ops_do_not_import_layers() -> None:
    """The kernels in fcnn.ops are the bottom layer: they must not import fcnn.layers."""
    source = Path(ops_pool.__file__).read_text()
    imported = [
        node.module or ""
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom)
    ]
    assert not [m for m in imported if "layers" in m], imported


@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch(rng: np.random.Generator, kind: str) -> None:
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 7, 8))
    y, dy, dx = run(kind, x, Pool2dCfg((3, 2), (2, 3), (1, 1)))
    tx = torch.tensor(x, requires_grad=True)
    pool = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
    ty = pool(tx, (3, 2), (2, 3), (1, 1))
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), atol=1e-12)


# --- the disjoint-window fast path and the batch-last layout -----------------------------

# (N, C, H, W, window, stride): windows that share no cell, with and without an exact tiling.
DISJOINT: list[tuple[int, int, int, int, Any, Any]] = [
    (2, 3, 6, 8, 2, 2),  # the common 2x2 stride 2, tiles x exactly (no zero fill)
    (1, 2, 7, 5, 2, 2),  # odd sizes: the last row and column belong to no window
    (2, 1, 9, 9, 3, 3),
    (1, 2, 8, 9, 2, 3),  # stride > window: gaps between windows
    (2, 2, 6, 7, (2, 3), (2, 3)),  # non-square
    (1, 2, 5, 8, (1, 2), (1, 2)),  # one row per window
    (1, 1, 5, 5, 1, 1),  # 1x1 windows: dx == dy
]


@pytest.mark.parametrize(("n", "c", "h", "w", "window", "stride"), DISJOINT)
@pytest.mark.parametrize("ties", [False, True])
def test_max_disjoint_fast_path_matches_general_path(
    rng: np.random.Generator,
    n: int,
    c: int,
    h: int,
    w: int,
    window: Any,
    stride: Any,
    ties: bool,
) -> None:
    cfg = Pool2dCfg(window, stride)
    # With ``ties`` most windows hold several equal maxima (zeros, as after a ReLU).
    x = np.maximum(rng.integers(-3, 2, (n, c, h, w)), 0.0) if ties else rng.standard_normal(
        (n, c, h, w)
    )
    y = ops_pool.max_pool2d_fwd(x, cfg.window, cfg.stride, cfg.padding)
    dy = rng.standard_normal(y.shape)
    for a in (x, y, dy):
        a.setflags(write=False)  # read-only inputs work; nothing is written into them
    fast = ops_pool._max_pool2d_bwd_disjoint(dy, x, y, cfg.window, cfg.stride)
    general = ops_pool._max_pool2d_bwd_general(dy, x, y, cfg.window, cfg.stride, cfg.padding)
    np.testing.assert_array_equal(fast, general)
    _, dx_ref = naive_pool("max", x, dy, cfg.window, cfg.stride, cfg.padding)
    np.testing.assert_array_equal(fast, dx_ref)


def test_max_disjoint_ties_go_to_exactly_one_element(rng: np.random.Generator) -> None:
    # All-zero 2x2 windows, as after a ReLU: each window's gradient lands on its first cell.
    x = np.zeros((2, 3, 4, 6), dtype=np.float32)
    x[0, 0, 2:, 2:4] = [[0.0, 5.0], [5.0, 5.0]]  # one window with a tied positive maximum
    _, cache = max_pool2d_fwd({}, x, Pool2dCfg(2))
    dy = rng.uniform(1.0, 2.0, (2, 3, 2, 3)).astype(np.float32)
    dx, _ = max_pool2d_bwd(cache, dy)
    assert dx.dtype == np.float32
    blocks = dx.reshape(2, 3, 2, 2, 3, 2)
    assert np.all(np.count_nonzero(blocks, axis=(3, 5)) == 1)  # exactly one cell per window
    np.testing.assert_array_equal(blocks.sum(axis=(3, 5)), dy)
    np.testing.assert_array_equal(dx[0, 0, 2:, :2], [[dy[0, 0, 1, 0], 0], [0, 0]])
    np.testing.assert_array_equal(dx[0, 0, 2:, 2:4], [[0, dy[0, 0, 1, 1]], [0, 0]])


def test_max_nan_window_sends_its_gradient_to_its_first_nan_cell() -> None:
    # NaN propagates through the maximum; its window's gradient goes to the first NaN
    # cell in row-major order, on the fast (disjoint) and the general path alike.
    x = np.array([[[[1.0, np.nan, 3.0, 4.0], [np.nan, 0.0, 1.0, 0.5]]]])
    _, cache = max_pool2d_fwd({}, x, Pool2dCfg(2))
    dx, _ = max_pool2d_bwd(cache, np.array([[[[10.0, 20.0]]]]))
    np.testing.assert_array_equal(dx, [[[[0, 10.0, 0, 20.0], [0, 0, 0, 0]]]])
    # Disjoint but not tiling x (stride 3 skips a column): the same rule.
    x3 = np.array([[[[1.0, 2.0, 9.0, 3.0, 4.0], [2.0, np.nan, 9.0, 1.0, 0.5]]]])
    _, cache = max_pool2d_fwd({}, x3, Pool2dCfg(2, stride=(2, 3)))
    dx3, _ = max_pool2d_bwd(cache, np.array([[[[10.0, 20.0]]]]))
    np.testing.assert_array_equal(dx3, [[[[0, 0, 0, 0, 20.0], [0, 10.0, 0, 0, 0]]]])
    # Padded windows take the general path: the same rule.
    _, cache = max_pool2d_fwd({}, x, Pool2dCfg(2, padding=((0, 0), (1, 1))))
    dxp, _ = max_pool2d_bwd(cache, np.array([[[[1.0, 2.0, 3.0]]]]))
    np.testing.assert_array_equal(dxp, [[[[0, 2.0, 0, 3.0], [1.0, 0, 0, 0]]]])


@pytest.mark.parametrize(
    ("window", "stride"), [((2, 2), (2, 2)), ((3, 2), (3, 2)), ((2, 2), (3, 2))]
)
def test_max_backward_paths_agree_on_nan_windows(
    rng: np.random.Generator, window: tuple[int, int], stride: tuple[int, int]
) -> None:
    """Regression: the fast path sent a NaN window's gradient to its last cell, the
    general path dropped it."""
    x = rng.standard_normal((3, 2, 7, 8))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = ops_pool.max_pool2d_fwd(x, window, stride, ((0, 0), (0, 0)))
    assert np.isnan(y).any()
    dy = rng.standard_normal(y.shape)
    fast = ops_pool._max_pool2d_bwd_disjoint(dy, x, y, window, stride)
    general = ops_pool._max_pool2d_bwd_general(dy, x, y, window, stride, ((0, 0), (0, 0)))
    np.testing.assert_array_equal(fast, general)
    # Every window's gradient lands on exactly one cell: the total is kept.
    np.testing.assert_allclose(fast.sum(), dy.sum())


def test_max_disjoint_path_is_taken_only_without_overlap_or_padding(
    monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator
) -> None:
    calls: list[str] = []
    real = ops_pool._max_pool2d_bwd_disjoint

    def spy(*args: Any) -> Any:
        calls.append("fast")
        return real(*args)

    monkeypatch.setattr(ops_pool, "_max_pool2d_bwd_disjoint", spy)
    x = rng.standard_normal((1, 1, 7, 6))
    for cfg, fast in [
        (Pool2dCfg(2), True),
        (Pool2dCfg((3, 2)), True),
        (Pool2dCfg(2, 3), True),  # gaps between windows
        (Pool2dCfg(2, 1), False),  # overlapping
        (Pool2dCfg(2, 2, 1), False),  # padded
    ]:
        calls.clear()
        y, cache = max_pool2d_fwd({}, x, cfg)
        max_pool2d_bwd(cache, np.ones_like(y))
        assert calls == (["fast"] if fast else []), cfg


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cfg", [Pool2dCfg(2), Pool2dCfg(3, 2, 1)], ids=["2x2", "3x3s2p1"])
def test_outputs_are_batch_last_and_inputs_may_be_either_layout(
    rng: np.random.Generator, kind: str, cfg: Pool2dCfg
) -> None:
    fwd, bwd = PAIRS[kind]
    x = rng.standard_normal((3, 2, 7, 6))
    x_bl = nchw_view(batch_last(x))  # NCHW shape, (C, H, W, N) memory
    y, cache = fwd({}, x, cfg)
    y_bl, cache_bl = fwd({}, x_bl, cfg)
    np.testing.assert_array_equal(y, y_bl)
    assert np.shares_memory(batch_last(y), y)  # y's memory is batch-last: no copy to get it
    dy = rng.standard_normal(y.shape)
    dx, _ = bwd(cache, dy)
    dx_bl, _ = bwd(cache_bl, nchw_view(batch_last(dy)))
    np.testing.assert_array_equal(dx, dx_bl)
    assert np.shares_memory(batch_last(dx), dx)
