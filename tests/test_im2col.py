"""im2col / col2im: column layout, exact adjointness, dtype, read-only and non-contiguous inputs."""

from __future__ import annotations

import numpy as np
import pytest

from fcnn.ops.im2col import col2im, im2col
from fcnn.ops.shapes import Pad2d, conv_out_size

# (N, C, H, W, KH, KW, stride, padding)
SHAPES: list[tuple[int, int, int, int, int, int, tuple[int, int], Pad2d]] = [
    (1, 1, 4, 4, 2, 2, (1, 1), ((0, 0), (0, 0))),
    (2, 3, 5, 5, 3, 3, (1, 1), ((1, 1), (1, 1))),
    (2, 2, 7, 9, 2, 3, (2, 3), ((1, 0), (2, 1))),  # non-square, asymmetric, non-divisible
    (1, 2, 6, 5, 3, 2, (3, 2), ((0, 2), (1, 0))),
    (2, 1, 3, 4, 3, 3, (1, 2), ((3, 0), (0, 4))),  # padding wider than the kernel
    (1, 2, 8, 8, 1, 1, (3, 3), ((0, 0), (0, 0))),  # 1x1 kernel, rows skipped by the stride
]


def _out(h: int, w: int, kh: int, kw: int, stride: tuple[int, int], pad: Pad2d) -> tuple[int, int]:
    return (
        conv_out_size(h, kh, stride[0], *pad[0], axis="H"),
        conv_out_size(w, kw, stride[1], *pad[1], axis="W"),
    )


@pytest.mark.parametrize(("n", "c", "h", "w", "kh", "kw", "stride", "pad"), SHAPES)
def test_im2col_columns_match_windows(
    rng: np.random.Generator,
    n: int,
    c: int,
    h: int,
    w: int,
    kh: int,
    kw: int,
    stride: tuple[int, int],
    pad: Pad2d,
) -> None:
    x = rng.standard_normal((n, c, h, w))
    cols = im2col(x, kh, kw, stride, pad)
    oh, ow = _out(h, w, kh, kw, stride, pad)
    assert cols.shape == (c * kh * kw, n * oh * ow)
    xpad = np.pad(x, ((0, 0), (0, 0), pad[0], pad[1]))
    c6 = cols.reshape(c, kh, kw, n, oh, ow)
    for r in range(oh):
        for s in range(ow):
            win = xpad[:, :, r * stride[0] : r * stride[0] + kh, s * stride[1] : s * stride[1] + kw]
            np.testing.assert_array_equal(c6[:, :, :, :, r, s], win.transpose(1, 2, 3, 0))


@pytest.mark.parametrize(("n", "c", "h", "w", "kh", "kw", "stride", "pad"), SHAPES)
def test_col2im_is_the_exact_adjoint_of_im2col(
    rng: np.random.Generator,
    n: int,
    c: int,
    h: int,
    w: int,
    kh: int,
    kw: int,
    stride: tuple[int, int],
    pad: Pad2d,
) -> None:
    x = rng.standard_normal((n, c, h, w))
    oh, ow = _out(h, w, kh, kw, stride, pad)
    cols = rng.standard_normal((c * kh * kw, n * oh * ow))
    lhs = float(np.vdot(im2col(x, kh, kw, stride, pad), cols))
    back = col2im(cols, x.shape, kh, kw, stride, pad)
    assert back.shape == x.shape
    rhs = float(np.vdot(x, back))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


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
