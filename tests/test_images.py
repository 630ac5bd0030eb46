"""fcnn.data.images: resizing, MNIST-style preparation, and decoding files and bytes."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from measure import peak_growth
from numpy.typing import NDArray

from fcnn.data import load_digits_sample
from fcnn.data.images import (
    DEFAULT_MAX_PIXELS,
    MAX_ASPECT_RATIO,
    ImageShapeError,
    ImageTooLargeError,
    decode_image,
    load_image,
    prepare_gray,
    prepare_image,
    prepare_rgb,
    resize,
)

# --- helpers -------------------------------------------------------------------------------


def _digits(n: int) -> NDArray[np.float32]:
    """The first ``n`` embedded test digits, ``(n, 28, 28)`` light on dark."""
    return load_digits_sample().x_test[:n, 0]


def _bbox(x: NDArray[Any], threshold: float = 0.2) -> tuple[int, int]:
    """Height and width of the box around the pixels above ``threshold``."""
    rows = np.flatnonzero((x > threshold).any(axis=1))
    cols = np.flatnonzero((x > threshold).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def _centre_of_mass(x: NDArray[Any]) -> tuple[float, float]:
    mass = x.sum()
    return (
        float(x.sum(axis=1) @ np.arange(x.shape[0]) / mass),
        float(x.sum(axis=0) @ np.arange(x.shape[1]) / mass),
    )


def _png_bytes(pixels: NDArray[Any], mode: str | None = None, **save: Any) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


def _to_uint8(x: NDArray[Any]) -> NDArray[np.uint8]:
    return np.round(x * 255).astype(np.uint8)


# --- resize --------------------------------------------------------------------------------


def test_resize_same_size_is_identity(rng: np.random.Generator) -> None:
    x = rng.random((3, 17, 9)).astype(np.float32)
    np.testing.assert_array_equal(resize(x, (17, 9)), x)


@pytest.mark.parametrize("size", [(28, 28), (5, 40), (1, 1), (64, 3)])
def test_resize_shape_dtype_and_range(rng: np.random.Generator, size: tuple[int, int]) -> None:
    for dtype in (np.float32, np.float64):
        x: NDArray[np.floating[Any]] = rng.random((2, 3, 19, 23)).astype(dtype)
        y = resize(x, size)
        assert y.shape == (2, 3, *size) and y.dtype == dtype
        assert x.min() <= y.min() and y.max() <= x.max()


def test_resize_keeps_a_constant_image_constant() -> None:
    x = np.full((13, 31), 0.375, dtype=np.float32)
    np.testing.assert_allclose(resize(x, (28, 7)), 0.375, rtol=1e-6)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((37, 53), (28, 28)), ((10, 7), (28, 33)), ((3, 5000), (1, 20)), ((4000, 2), (20, 1))],
)
def test_resize_agrees_with_pillow_bilinear(
    rng: np.random.Generator, shape: tuple[int, int], size: tuple[int, int]
) -> None:
    Image = pytest.importorskip("PIL.Image")
    x = rng.random(shape).astype(np.float32)
    ref = np.asarray(Image.fromarray(x, "F").resize(size[::-1], Image.Resampling.BILINEAR))
    np.testing.assert_allclose(resize(x, size), ref, atol=1e-6)


def test_resize_of_a_16_million_pixel_strip_builds_no_dense_matrix() -> None:
    """Regression (issue 15): resizing 1 × 4,000,000 pixels to 20 columns built a dense
    20 × 4,000,000 float64 weight matrix (and temporaries of that size): 1.3 GB of peak
    memory for 16 MB of pixels. Now each output pixel's window is built and applied
    alone, so the peak grows by a few copies of the image at most."""
    setup = (
        "import numpy as np\n"
        "from fcnn.data.images import prepare_gray, resize\n"
        "x = np.zeros((1, 4_000_000), np.float32)\n"
        "x[0, ::1000] = 1.0\n"
    )
    grown = peak_growth(setup, "y = prepare_gray(x)\nz = resize(x.T.copy(), (20, 1))")
    pixels_bytes = 4_000_000 * 4
    assert grown < 8 * pixels_bytes, f"peak grew by {grown / 2**20:.0f} MiB"


@pytest.mark.parametrize("size", [(0, 3), (3,), (2.0, 3), (True, 3)])
def test_resize_rejects_bad_sizes(size: Any) -> None:
    with pytest.raises(ValueError, match="size must be two positive ints"):
        resize(np.zeros((4, 4)), size)


# --- prepare_gray ---------------------------------------------------------------------------


def test_mnist_digits_pass_through_nearly_unchanged() -> None:
    """MNIST is already light on dark, in a 20×20 box, centred by mass: nothing to do."""
    for digit in _digits(50):
        out = prepare_gray(digit)
        assert out.shape == (28, 28) and out.dtype == np.float32
        assert np.abs(out - digit).mean() < 0.02


def test_light_background_is_inverted() -> None:
    for digit in _digits(5):
        paper = (1.0 - digit).astype(np.float32)  # dark ink on white paper
        np.testing.assert_allclose(prepare_gray(paper), prepare_gray(digit), atol=1e-5)


def test_forced_inversion_overrides_the_border_rule() -> None:
    digit = _digits(1)[0]
    # Inverting a dark-background digit gives a light frame with no ink to find.
    assert prepare_gray(digit, invert=False).max() > 0.9
    np.testing.assert_array_equal(prepare_gray(digit, invert=True), np.zeros((28, 28)))
    np.testing.assert_allclose(
        prepare_gray((1.0 - digit).astype(np.float32), invert=True), prepare_gray(digit), atol=1e-5
    )


def test_grey_paper_is_levelled_to_black() -> None:
    """A photo of paper: background 0.8, ink 0.3; the output background is 0, the ink 1."""
    page = np.full((90, 60), 0.8, dtype=np.float32)
    page[20:70, 28:34] = 0.3  # a thick "1"
    out = prepare_gray(page)
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)
    assert _bbox(out) == (20, 2)  # 50 high, 6 wide -> 20 high, 2.4 -> 2 wide


@pytest.mark.parametrize(
    ("canvas", "ink", "expected_box"),
    [
        ((200, 100), (slice(50, 90), slice(40, 50)), (20, 5)),  # tall: height fills the box
        ((60, 120), (slice(10, 16), slice(20, 80)), (2, 20)),  # wide: width fills the box
        ((9, 9), (slice(4, 5), slice(4, 5)), (20, 20)),  # one dot grows into the box
    ],
)
def test_digit_is_fitted_into_the_box_keeping_aspect_and_centred(
    canvas: tuple[int, int], ink: tuple[slice, slice], expected_box: tuple[int, int]
) -> None:
    x = np.zeros(canvas, dtype=np.float32)
    x[ink] = 1.0
    out = prepare_gray(x)
    assert _bbox(out, 0.0) == expected_box
    com = _centre_of_mass(out)
    assert abs(com[0] - 14.0) <= 0.5 and abs(com[1] - 14.0) <= 0.5


@pytest.mark.parametrize("size", [(28, 28), (32, 20), (8, 8)])
def test_output_size_follows_the_request(size: tuple[int, int]) -> None:
    out = prepare_gray(_digits(1)[0], size)
    assert out.shape == size and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    h, w = _bbox(out, 0.0)
    assert h <= round(size[0] * 20 / 28) and w <= round(size[1] * 20 / 28)


def test_blank_image_gives_zeros() -> None:
    for value in (0.0, 0.5, 1.0):
        out = prepare_gray(np.full((40, 30), value, dtype=np.float32))
        np.testing.assert_array_equal(out, np.zeros((28, 28), np.float32))


def test_prepare_gray_reads_only_and_does_not_mutate() -> None:
    paper = (1.0 - _digits(1)[0]).astype(np.float64)
    before = paper.copy()
    paper.flags.writeable = False
    out = prepare_gray(paper)
    np.testing.assert_array_equal(paper, before)
    assert out.dtype == np.float32 and out.flags.writeable


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((28, 28), dtype=np.uint8), "floating-point"),
        (np.zeros((1, 28, 28), dtype=np.float32), "non-empty array"),
        (np.zeros((0, 28), dtype=np.float32), "non-empty array"),
        (np.full((4, 4), 1.5, dtype=np.float32), r"in \[0, 1\]"),
        (np.full((4, 4), np.nan, dtype=np.float32), "finite"),
    ],
)
def test_prepare_gray_rejects_bad_arrays(x: NDArray[Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        prepare_gray(x)


# --- prepare_rgb and prepare_image ------------------------------------------------------------


def test_prepare_rgb_resizes_whole_picture_without_inverting() -> None:
    x = np.ones((3, 40, 60), dtype=np.float64)  # white stays white
    x[1:, :20, :] = 0.0  # top half red
    out = prepare_rgb(x, (32, 32))
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, -4:, :], 1.0)
    red = np.broadcast_to(np.array([1.0, 0.0, 0.0])[:, None, None], (3, 12, 32))
    np.testing.assert_allclose(out[:, :12, :], red)


def test_prepare_image_dispatches_on_channels(rng: np.random.Generator) -> None:
    digit = _digits(1)[0]
    np.testing.assert_array_equal(
        prepare_image(digit[None], (1, 28, 28)), prepare_gray(digit)[None]
    )
    rgb = rng.random((3, 10, 12)).astype(np.float32)
    np.testing.assert_array_equal(prepare_image(rgb, (3, 8, 8)), prepare_rgb(rgb, (8, 8)))


def test_prepare_image_rejects_mismatches(rng: np.random.Generator) -> None:
    rgb = rng.random((3, 10, 12)).astype(np.float32)
    with pytest.raises(ValueError, match="3 channels"):
        prepare_image(rgb, (1, 28, 28))
    with pytest.raises(ValueError, match="grayscale"):
        prepare_image(rgb, (3, 28, 28), invert=True)
    with pytest.raises(ValueError, match="input_shape"):
        prepare_image(rgb, (2, 28, 28))


# --- decoding and loading ----------------------------------------------------------------------


@pytest.fixture
def pil() -> Any:
    return pytest.importorskip("PIL.Image")


def test_png_round_trip_from_path_and_bytes(pil: Any, tmp_path: Path) -> None:
    digit = _digits(1)[0]
    data = _png_bytes(_to_uint8(digit))
    path = tmp_path / "digit.png"
    path.write_bytes(data)
    # The embedded digits are uint8 / 255, so the PNG holds them exactly.
    np.testing.assert_array_equal(decode_image(path), digit[None])
    from_path = load_image(path, (1, 28, 28))
    assert from_path.shape == (1, 28, 28) and from_path.dtype == np.float32
    np.testing.assert_array_equal(from_path, prepare_gray(digit)[None])
    np.testing.assert_array_equal(load_image(str(path), (1, 28, 28)), from_path)
    np.testing.assert_array_equal(load_image(data, (1, 28, 28)), from_path)
    np.testing.assert_array_equal(load_image(bytearray(data), (1, 28, 28)), from_path)


def test_jpeg_of_dark_ink_on_paper_is_inverted(pil: Any, tmp_path: Path) -> None:
    digit = _digits(1)[0]
    paper = 1.0 - digit
    # A larger, non-square scan: 3× the size, paper margins added on the right.
    big = np.repeat(np.repeat(paper, 3, axis=0), 3, axis=1)
    big = np.concatenate([big, np.ones((84, 40))], axis=1)
    path = tmp_path / "scan.jpg"
    path.write_bytes(_png_bytes(_to_uint8(big), format="JPEG", quality=95))
    out = load_image(path, (1, 28, 28))
    assert out.shape == (1, 28, 28)
    assert np.abs(out[0] - digit).mean() < 0.05
    assert out[0, 0, 0] == 0.0 and out[0].max() > 0.95


def test_rgb_file_gives_luma_for_one_channel_and_rgb_for_three(pil: Any) -> None:
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red
    rgb[5:15, 10:20] = (0, 0, 255)  # a blue square
    data = _png_bytes(rgb)
    gray = decode_image(data, 1)
    assert gray.shape == (1, 20, 30)
    assert gray[0, 0, 0] == pytest.approx(76 / 255)  # ITU-R 601-2: round(0.299 * 255)
    colour = decode_image(data, 3)
    assert colour.shape == (3, 20, 30)
    np.testing.assert_array_equal(colour[:, 0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(colour[:, 10, 15], [0.0, 0.0, 1.0])
    out = load_image(data, (3, 32, 32))
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    assert out[0, 0, 0] == pytest.approx(1.0)  # colour pictures are never inverted


def test_transparent_canvas_counts_as_white_paper(pil: Any) -> None:
    rgba = np.zeros((56, 56, 4), dtype=np.uint8)  # transparent black everywhere
    rgba[10:46, 25:31, 3] = 255  # an opaque black stroke
    out = load_image(_png_bytes(rgba), (1, 28, 28))
    assert out[0, 0, 0] == 0.0 and out.max() == pytest.approx(1.0)
    assert _bbox(out[0]) == (20, 3)


def test_sixteen_bit_png_keeps_its_range(pil: Any) -> None:
    levels = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)
    out = decode_image(_png_bytes(levels))
    np.testing.assert_allclose(out[0, 0], levels[0] / 65535, atol=1e-6)


def test_exif_orientation_is_applied(pil: Any) -> None:
    pixels = np.zeros((6, 10), dtype=np.uint8)
    pixels[0, 0], pixels[1, 9] = 255, 128
    exif = pil.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    out = decode_image(_png_bytes(pixels, exif=exif))
    np.testing.assert_allclose(out[0], np.rot90(pixels, k=-1) / 255, atol=1e-7)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not a readable image"),
        (b"definitely not an image" * 10, "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image|cannot be decoded"),
    ],
)
def test_bad_bytes_raise_value_error(pil: Any, data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_image(data, (1, 28, 28))


def test_truncated_png_raises_value_error(pil: Any) -> None:
    data = _png_bytes(np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="cannot be decoded"):
        load_image(data[: len(data) // 2], (1, 28, 28))


def test_formats_outside_the_list_are_refused(pil: Any) -> None:
    tiff = _png_bytes(np.zeros((8, 8), np.uint8), format="TIFF")
    with pytest.raises(ValueError, match="supported formats: PNG, JPEG"):
        load_image(tiff, (1, 28, 28))
    assert decode_image(tiff, formats=("TIFF",)).shape == (1, 8, 8)


def test_too_many_pixels_is_refused(pil: Any) -> None:
    data = _png_bytes(np.zeros((64, 64), np.uint8))
    with pytest.raises(ImageTooLargeError, match="4096 pixels is more than the limit of 4095"):
        load_image(data, (1, 28, 28), max_pixels=4095)
    assert load_image(data, (1, 28, 28), max_pixels=4096).shape == (1, 28, 28)


@pytest.mark.parametrize("shape", [(1, 1001), (2001, 2)])
def test_a_strip_is_refused_from_the_header(pil: Any, shape: tuple[int, int]) -> None:
    """Regression (issue 15): a 16,000,000 × 1 PNG passed max_pixels and cost gigabytes.
    A strip more than MAX_ASPECT_RATIO times longer than wide is refused before decoding,
    even when its header lies about the data (the data here is 10 × 10)."""
    height, width = shape
    data = _with_png_size(_png_bytes(np.zeros((10, 10), np.uint8)), width, height)
    with pytest.raises(ImageShapeError, match=f"{width}×{height} is a strip"):
        decode_image(data)
    edge = _png_bytes(np.full((1, MAX_ASPECT_RATIO), 255, np.uint8))
    assert decode_image(edge).shape == (1, 1, MAX_ASPECT_RATIO)


def _with_png_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a PNG) with its header claiming ``width × height`` (CRC fixed up)."""
    ihdr = bytearray(data[12:29])  # chunk type + 13 bytes of IHDR data
    ihdr[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return data[:12] + bytes(ihdr) + crc + data[33:]


def test_decompression_bomb_is_refused_from_the_header(pil: Any) -> None:
    """8000×8000 claimed, 10×10 of data: refused by size before any pixel is decoded."""
    bomb = _with_png_size(_png_bytes(np.zeros((10, 10), np.uint8)), 8000, 8000)
    assert DEFAULT_MAX_PIXELS < 8000 * 8000
    with pytest.raises(ImageTooLargeError, match="8000×8000 = 64000000 pixels is more than"):
        load_image(bomb, (1, 28, 28))
    # With the limit raised, decoding starts and finds the data truncated: not too large.
    with pytest.raises(ValueError, match="cannot be decoded") as info:
        decode_image(bomb, max_pixels=8000 * 8000)
    assert not isinstance(info.value, ImageTooLargeError)


def test_pillows_own_bomb_limit_is_an_image_too_large_error(pil: Any) -> None:
    """Over twice Image.MAX_IMAGE_PIXELS Pillow refuses to open it, whatever max_pixels says."""
    bomb = _with_png_size(_png_bytes(np.zeros((10, 10), np.uint8)), 40_000, 40_000)
    assert 2 * pil.MAX_IMAGE_PIXELS < 40_000 * 40_000
    with pytest.raises(ImageTooLargeError, match="too many pixels"):
        decode_image(bomb, max_pixels=40_000 * 40_000)


def test_a_corrupt_header_is_a_plain_value_error(pil: Any) -> None:
    with pytest.raises(ValueError, match="header is corrupt or truncated") as info:
        decode_image(b"\x89PNG\r\n\x1a\n" + b"x" * 40)
    assert not isinstance(info.value, ImageTooLargeError)


def test_path_errors_stay_os_errors(pil: Any, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png", (1, 28, 28))
    with pytest.raises(TypeError, match="path or bytes"):
        load_image(np.zeros((28, 28)), (1, 28, 28))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": (2, 28, 28)}, "input_shape"),
        ({"input_shape": (28, 28)}, "input_shape"),
        ({"input_shape": (3, 32, 32), "invert": True}, "grayscale"),
        ({"input_shape": (1, 28, 28), "max_pixels": 0}, "max_pixels"),
    ],
)
def test_load_image_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    pytest.importorskip("PIL")
    with pytest.raises(ValueError, match=match):
        load_image(b"", **kwargs)


def test_missing_pillow_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes "from PIL import ..." fail
    with pytest.raises(ImportError, match=r'pip install "fcnn\[images\]"'):
        load_image(b"\x89PNG", (1, 28, 28))


def test_importing_fcnn_data_does_not_import_pillow() -> None:
    code = "import sys, fcnn, fcnn.data, fcnn.data.images; print('PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
