"""im2col / col2im and the batch-last layout: column order, exact adjointness, dtype, views."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conv_cases import Window, assert_col2im_is_the_adjoint, assert_columns_match_windows

from fcnn.ops.im2col import col2im, dy_matrix, im2col
from fcnn.ops.layout import batch_last, memory_flat, nchw_view, padded_batch_last
from fcnn.ops.shapes import Pad2d, conv_out_size, inside_input

# Window(N, C, H, W, KH, KW, stride, padding)
SHAPES = [
    Window(1, 1, 4, 4, 2, 2, (1, 1), ((0, 0), (0, 0))),
    Window(2, 3, 5, 5, 3, 3, (1, 1), ((1, 1), (1, 1))),
    Window(2, 2, 7, 9, 2, 3, (2, 3), ((1, 0), (2, 1))),  # non-square, asymmetric, non-divisible
    Window(1, 2, 6, 5, 3, 2, (3, 2), ((0, 2), (1, 0))),
    Window(2, 1, 3, 4, 3, 3, (1, 2), ((3, 0), (0, 4))),  # padding wider than the kernel
    Window(1, 2, 8, 8, 1, 1, (3, 3), ((0, 0), (0, 0))),  # 1x1 kernel, rows skipped by the stride
    # 1x1, one channel: the columns are x itself
    Window(2, 1, 4, 4, 1, 1, (1, 1), ((0, 0), (0, 0))),
]


@pytest.mark.parametrize("win", SHAPES, ids=str)
def test_im2col_columns_match_windows(rng: np.random.Generator, win: Window) -> None:
    x = rng.standard_normal(win.x_shape)
    assert_columns_match_windows(win, x, im2col(x, win.kh, win.kw, win.stride, win.pad))


@pytest.mark.parametrize("win", SHAPES, ids=str)
def test_col2im_is_the_exact_adjoint_of_im2col(rng: np.random.Generator, win: Window) -> None:
    x = rng.standard_normal(win.x_shape)
    assert_col2im_is_the_adjoint(win, x, rng.standard_normal(win.cols_shape))


@pytest.mark.parametrize("win", SHAPES, ids=str)
def test_col2im_matches_a_scatter_loop(rng: np.random.Generator, win: Window) -> None:
    n, c, h, w, kh, kw, stride = win.n, win.c, win.h, win.w, win.kh, win.kw, win.stride
    oh, ow = win.out()
    cols = rng.standard_normal(win.cols_shape)
    before = cols.copy()
    (top, bottom), (left, right) = win.pad
    ref = np.zeros((n, c, h + top + bottom, w + left + right))
    c6 = cols.reshape(c, kh, kw, oh, ow, n)
    for r in range(oh):
        for s in range(ow):
            rows = slice(r * stride[0], r * stride[0] + kh)
            cs = slice(s * stride[1], s * stride[1] + kw)
            ref[:, :, rows, cs] += c6[:, :, :, r, s, :].transpose(3, 0, 1, 2)
    back = col2im(cols, (n, c, h, w), kh, kw, stride, win.pad)
    np.testing.assert_allclose(back, ref[:, :, top : top + h, left : left + w], atol=1e-12)
    np.testing.assert_array_equal(cols, before)
    assert not np.shares_memory(back, cols)  # even when one offset's columns are all of x


def test_inside_input_matches_brute_force() -> None:
    for n in range(1, 7):
        for k in range(1, 4):
            for stride in range(1, 4):
                for lo in range(3):
                    for hi in range(3):
                        if n + lo + hi < k:
                            continue
                        out = conv_out_size(n, k, stride, lo, hi)
                        for offset in range(k):
                            windows, rows = inside_input(offset, stride, lo, n, out)
                            want = [o for o in range(out) if 0 <= offset + stride * o - lo < n]
                            assert list(range(out))[windows] == want
                            assert list(range(n))[rows] == [offset + stride * o - lo for o in want]


def test_col2im_gives_zero_to_rows_no_window_touches() -> None:
    # H = 6, KH = 3, stride 2: windows start at rows 0 and 2, so row 5 is never read.
    x_shape = (1, 1, 6, 6)
    cols = np.ones((9, 4))
    back = col2im(cols, x_shape, 3, 3, (2, 2), ((0, 0), (0, 0)))
    assert np.all(back[..., 5, :] == 0) and np.all(back[..., :, 5] == 0)
    assert back[0, 0, 2, 2] == 4.0  # the overlap of all four windows accumulates


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(rng: np.random.Generator, dtype: type[np.floating]) -> None:
    x = rng.standard_normal((2, 2, 5, 6)).astype(dtype)
    pad: Pad2d = ((1, 0), (0, 1))
    cols = im2col(x, 2, 3, (2, 1), pad)
    assert cols.dtype == dtype
    assert col2im(cols, x.shape, 2, 3, (2, 1), pad).dtype == dtype


def test_read_only_and_non_contiguous_inputs(rng: np.random.Generator) -> None:
    base = rng.standard_normal((2, 3, 7, 5))
    x = base.transpose(0, 1, 3, 2)[:, ::2]  # (2, 2, 5, 7), non-contiguous
    x.setflags(write=False)
    before = x.copy()
    pad: Pad2d = ((2, 1), (0, 1))
    cols = im2col(x, 3, 2, (2, 2), pad)
    np.testing.assert_array_equal(cols, im2col(np.ascontiguousarray(x), 3, 2, (2, 2), pad))
    cols.setflags(write=False)
    back = col2im(cols, x.shape, 3, 2, (2, 2), pad)
    assert back.shape == x.shape
    np.testing.assert_array_equal(x, before)


def test_col2im_rejects_wrong_column_shape() -> None:
    with pytest.raises(ValueError, match=r"col2im: cols must have shape \(9, 16\), got \(9, 15\)"):
        col2im(np.zeros((9, 15)), (1, 1, 6, 6), 3, 3, (1, 1), ((0, 0), (0, 0)))


# --- the batch-last layout --------------------------------------------------------------


def test_batch_last_is_a_view_of_batch_last_memory_and_a_copy_otherwise(
    rng: np.random.Generator,
) -> None:
    x = rng.standard_normal((3, 2, 4, 5))  # C-ordered NCHW
    a = batch_last(x)
    assert a.shape == (2, 4, 5, 3) and a.flags.c_contiguous
    assert not np.shares_memory(a, x)
    np.testing.assert_array_equal(a, x.transpose(1, 2, 3, 0))
    y = nchw_view(a)
    assert y.shape == x.shape and np.shares_memory(y, a)
    np.testing.assert_array_equal(y, x)
    assert np.shares_memory(batch_last(y), a)  # a chain of layers converts once


def test_padded_batch_last(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4, 5))
    x.setflags(write=False)
    pad: Pad2d = ((1, 0), (2, 1))
    got = padded_batch_last(x, pad, -np.inf)
    want = np.pad(x, ((0, 0), (0, 0), (1, 0), (2, 1)), constant_values=-np.inf)
    np.testing.assert_array_equal(got, want.transpose(1, 2, 3, 0))
    assert got.dtype == x.dtype
    # No padding and batch-last memory: a view, never written.
    bl = nchw_view(batch_last(x))
    assert np.shares_memory(padded_batch_last(bl, ((0, 0), (0, 0))), bl)


@pytest.mark.parametrize("batch_last_input", [False, True])
def test_im2col_and_col2im_take_any_memory_layout(
    rng: np.random.Generator, batch_last_input: bool
) -> None:
    x = rng.standard_normal((3, 2, 6, 5))
    xin = nchw_view(batch_last(x)) if batch_last_input else x
    pad: Pad2d = ((1, 1), (0, 2))
    cols = im2col(xin, 3, 2, (2, 1), pad)
    np.testing.assert_array_equal(cols, im2col(np.ascontiguousarray(x), 3, 2, (2, 1), pad))
    back = col2im(cols, x.shape, 3, 2, (2, 1), pad)
    # col2im hands back NCHW-shaped batch-last memory.
    assert back.shape == x.shape and np.shares_memory(batch_last(back), back)


def test_dy_matrix_is_in_column_order(rng: np.random.Generator) -> None:
    dy = rng.standard_normal((3, 4, 2, 5))  # (N, F, OH, OW)
    m = dy_matrix(dy)
    assert m.shape == (4, 2 * 5 * 3)
    np.testing.assert_array_equal(m.reshape(4, 2, 5, 3), dy.transpose(1, 2, 3, 0))
    bl = nchw_view(batch_last(dy))
    assert np.shares_memory(dy_matrix(bl), bl)  # free for batch-last gradients


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ones_row_appends_ones_after_the_same_columns(
    rng: np.random.Generator, dtype: type[np.floating]
) -> None:
    x = rng.standard_normal((2, 3, 5, 4)).astype(dtype)
    pad: Pad2d = ((1, 0), (2, 1))
    plain = im2col(x, 2, 3, (2, 1), pad)
    aug = im2col(x, 2, 3, (2, 1), pad, ones_row=True)
    assert aug.shape == (plain.shape[0] + 1, plain.shape[1]) and aug.dtype == dtype
    np.testing.assert_array_equal(aug[:-1], plain)
    np.testing.assert_array_equal(aug[-1], np.ones(plain.shape[1], dtype))


def test_memory_flat_views_dense_layouts_only(rng: np.random.Generator) -> None:
    a = rng.standard_normal((2, 3, 4, 5))
    for dense in (a, a.transpose(3, 0, 1, 2), a[:1]):
        flat = memory_flat(dense)
        assert flat is not None and flat.ndim == 1 and np.shares_memory(flat, dense)
        np.testing.assert_array_equal(np.sort(flat), np.sort(dense, axis=None))
    assert memory_flat(a[:, ::2]) is None
    assert memory_flat(a[:, :1]) is None  # gaps between the batch entries
    assert memory_flat(a[::-1]) is None
    zero_d = memory_flat(np.array(3.0))
    assert zero_d is not None and zero_d.tolist() == [3.0]


def _kernels_with_a_window(kh: int, kw: int) -> dict[str, Any]:
    """Each low-level kernel, called on a (1, 1, 4, 4) map with a (kh, kw) window, padding 0."""
    from fcnn.ops.conv_im2col import conv2d_im2col_fwd
    from fcnn.ops.conv_naive import conv2d_naive_fwd
    from fcnn.ops.conv_strided import conv2d_strided_fwd
    from fcnn.ops.pool import avg_pool2d_fwd, max_pool2d_fwd

    x = np.zeros((1, 1, 4, 4))
    w, b = np.zeros((1, 1, kh, kw)), np.zeros(1)
    pad: Pad2d = ((0, 0), (0, 0))
    return {
        "im2col": lambda: im2col(x, kh, kw, (1, 1), pad),
        "col2im": lambda: col2im(np.zeros((kh * kw, 16)), (1, 1, 4, 4), kh, kw, (1, 1), pad),
        "conv2d_im2col_fwd": lambda: conv2d_im2col_fwd(x, w, b, (1, 1), pad),
        "conv2d_naive_fwd": lambda: conv2d_naive_fwd(x, w, b, (1, 1), pad),
        "conv2d_strided_fwd": lambda: conv2d_strided_fwd(x, w, b, (1, 1), pad),
        "max_pool2d_fwd": lambda: max_pool2d_fwd(x, (kh, kw), (1, 1), pad),
        "avg_pool2d_fwd": lambda: avg_pool2d_fwd(x, (kh, kw), (1, 1), pad),
    }


@pytest.mark.parametrize("kernel", sorted(_kernels_with_a_window(1, 1)))
@pytest.mark.parametrize(("kh", "kw", "axis"), [(5, 1, "H"), (1, 6, "W")])
def test_kernels_reject_a_window_larger_than_the_padded_input(
    kernel: str, kh: int, kw: int, axis: str
) -> None:
    call = _kernels_with_a_window(kh, kw)[kernel]
    k = kh if axis == "H" else kw
    with pytest.raises(ValueError, match=rf"^kernel {axis}={k} is larger than the padded input"):
        call()
