"""Image files (PNG, JPEG, ...) as model inputs, prepared the way the training data was.

``load_image(source, input_shape)`` decodes a file or its bytes and returns one
sample ``(C, H, W)`` float32 in ``[0, 1]``, ready for ``Trained.predict_proba(x[None])``.
It is two steps, both public so that a server can run them separately::

    pixels = decode_image(data, channels=1, max_pixels=4_000_000)   # (C, H0, W0) float32
    x = prepare_image(pixels, (1, 28, 28))                           # (C, H, W)   float32

**Decoding** (``decode_image``; needs Pillow, ``pip install "fcnn[images]"``, imported
only when called). Only the formats in ``IMAGE_FORMATS`` are tried. The header is read
first and an image of more than ``max_pixels`` pixels is refused with an
``ImageTooLargeError`` (a ``ValueError``) before its pixel data is decompressed (a
guard against decompression bombs), as is a strip whose long side is more than
``MAX_ASPECT_RATIO`` times its short side (an ``ImageShapeError``). The EXIF
orientation of photos is applied; transparent pixels are composited onto white (a
drawing on a transparent canvas is dark ink on a light page); 16-bit images keep
their full range. ``C = 1`` gives luma
(ITU-R 601-2, as Pillow's ``"L"`` mode), ``C = 3`` RGB.

**Preparing** (pure NumPy, no Pillow):

- ``C = 1`` (``prepare_gray``), MNIST's convention. MNIST digits are light on a dark
  background, fitted into a 20×20 box (aspect ratio kept) and centred by their centre
  of mass in 28×28. So: when the background is light (the median of the one-pixel
  border is above 0.5) the image is inverted; the background level is mapped to 0 and
  the brightest pixel to 1 (a photo of paper is not black); the digit, the bounding box
  of the pixels above ``INK_THRESHOLD``, is resized to fit a box of ``DIGIT_BOX`` (20/28)
  of the output size keeping its aspect ratio, and pasted so that its centre of mass
  lies at row ``H / 2``, column ``W / 2`` (pixel indices; MNIST's training digits
  average (14.0, 14.0) in 28×28), so an MNIST digit comes back (nearly) unchanged.
  An image without contrast (less than ``MIN_CONTRAST`` between background and
  brightest pixel) comes back all zeros.
- ``C = 3`` (``prepare_rgb``): a plain resize of the whole picture to ``(H, W)``, as
  CIFAR-10's whole-scene images; no inversion.

**Checking** what reaches a model, one implementation for every door (the server,
``Trained.predict_proba``, ``inference_example.py``):

- ``check_unit_images(x, input_shape, where)``: raw images ``(N, C, H, W)`` with
  floating values in [0, 1], returned as float32 (float64, NumPy's default, is
  converted); uint8 bytes are refused with a pointer to ``fcnn.data.uint8_to_unit``,
  0-255 floats with a message saying to divide by 255.
- ``is_empty_image(x)`` / ``check_not_empty(x, where)``: a prepared input ``(C, H, W)``
  whose darkest and brightest pixels differ by less than ``MIN_CONTRAST`` shows
  nothing (a blank upload, an empty canvas); classifying it would still give a
  confident-looking class, so callers refuse it (``EmptyImageError``).

Resizing (``resize``) is antialiased linear interpolation, separable: along each axis,
output pixel ``i`` is a weighted mean of the input pixels within ``max(n_in / n_out, 1)``
input pixels of its centre, with triangle-filter weights normalised to sum to 1, so the
output stays in ``[0, 1]`` and an unchanged size is the identity::

    y = R_h @ x @ R_w.T        R_h: (H, H0), x: (..., H0, W0), R_w: (W, W0) -> y: (..., H, W)

Only each row's non-zero window of ``R_h`` and ``R_w`` is ever built and applied, so
resizing costs memory and time in proportion to the pixels, whatever the aspect ratio
(a 16,000,000 × 1 image needs no 20 × 16,000,000 matrix). Preparing a grayscale image
works on one float32 copy of it (and a one-byte mask), then only on the digit's box.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .dataset import uint8_to_unit

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DIGIT_BOX",
    "EMPTY_IMAGE_HINT",
    "IMAGE_FORMATS",
    "INK_THRESHOLD",
    "MAX_ASPECT_RATIO",
    "MIN_CONTRAST",
    "EmptyImageError",
    "ImageShapeError",
    "ImageSource",
    "ImageTooLargeError",
    "check_not_empty",
    "check_unit_images",
    "decode_image",
    "is_empty_image",
    "load_image",
    "prepare_gray",
    "prepare_image",
    "prepare_rgb",
    "resize",
]

ImageSource = str | os.PathLike[str] | bytes | bytearray

# 50 megapixels: any phone photo, yet a bounded amount of memory (200 MB as float32 gray).
DEFAULT_MAX_PIXELS = 50_000_000
# Longest side over shortest side. A thinner strip is no picture of anything, and Pillow
# keeps a pointer per row, so a 1 × 16,000,000 image would cost far more than its pixels.
MAX_ASPECT_RATIO = 1000
# Pillow plugins tried when decoding; others (EPS runs Ghostscript, ...) are never used.
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "PPM")
DIGIT_BOX = 20 / 28  # MNIST: a 20×20 box in a 28×28 image
INK_THRESHOLD = 0.2  # after levelling: brighter pixels belong to the digit
MIN_CONTRAST = 0.1  # brightest pixel minus background below this: nothing drawn

_PILLOW_HINT = 'reading image files needs Pillow: pip install "fcnn[images]"'
# What Pillow raises on corrupt or hostile data, besides its own error classes.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    MemoryError,
)

FloatArray = NDArray[np.floating[Any]]


class ImageTooLargeError(ValueError):
    """An image with more pixels than allowed, refused from its header before decompression."""


class ImageShapeError(ValueError):
    """An image whose sides differ by more than ``MAX_ASPECT_RATIO`` times, refused from its
    header before decompression."""


class EmptyImageError(ValueError):
    """A prepared image with nothing on it (``is_empty_image``): not classified."""


# What an empty image is told, after "<where>: " (the server and the page show it as is).
EMPTY_IMAGE_HINT = (
    "the image is empty: nothing in it stands out from the background, so there is "
    "nothing to classify; draw or photograph a digit"
)


# --- checks shared by every way into a model ------------------------------------------------


def _prefixed(where: str | None, text: str) -> str:
    return f"{where}: {text}" if where else text


def check_unit_images(
    x: Any, input_shape: Sequence[int], where: str | None = None
) -> NDArray[np.float32]:
    """Raw images ``x: (N, C, H, W)`` with ``(C, H, W) = input_shape`` and floating values
    in [0, 1], as float32 (a new array unless ``x`` already is one); else a clear error.

    Raises ``TypeError`` for a non-floating dtype (uint8 is pointed to
    ``fcnn.data.uint8_to_unit``), ``ValueError`` for another shape, NaN or infinite
    values, or values outside [0, 1] (0-255 floats are told to divide by 255). Messages
    start with ``where`` (an op name) when given. ``N = 0`` is allowed.
    """
    arr = np.asarray(x)
    expected = f"(N, {', '.join(map(str, input_shape))})"
    if arr.ndim != 4 or tuple(arr.shape[1:]) != tuple(input_shape):
        raise ValueError(
            _prefixed(where, f"expected images shaped {expected}, got an array shaped {arr.shape}")
        )
    _check_floating(arr, where)
    if arr.size:
        _check_unit_range(arr, where)
    return arr.astype(np.float32, copy=False)


def _check_floating(arr: NDArray[Any], where: str | None) -> None:
    """``TypeError`` unless ``arr`` holds floats; uint8 is pointed to ``uint8_to_unit``."""
    if arr.dtype == np.uint8:
        raise TypeError(
            _prefixed(
                where,
                "the images are uint8 (bytes 0-255); convert them with "
                "fcnn.data.uint8_to_unit(x), which gives float32 in [0, 1]",
            )
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            _prefixed(
                where,
                f"the images must have a floating dtype (raw intensities in [0, 1]), got "
                f"{arr.dtype}",
            )
        )


def _check_unit_range(arr: NDArray[Any], where: str | None) -> None:
    """``ValueError`` unless the non-empty ``arr`` is finite and within [0, 1]."""
    if not np.all(np.isfinite(arr)):
        raise ValueError(_prefixed(where, "the images hold NaN or infinite values"))
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        hint = ""
        if lo >= 0.0 and hi <= 255.0:
            hint = "; for 0-255 values divide by 255 (fcnn.data.uint8_to_unit converts uint8)"
        raise ValueError(
            _prefixed(
                where,
                "pixel values must be raw intensities in [0, 1] (the model's training "
                f"normalisation is applied to them for you); got values in [{lo:g}, {hi:g}]" + hint,
            )
        )


def is_empty_image(x: FloatArray) -> bool:
    """``True`` when a prepared input ``x: (C, H, W)`` (or any array) shows nothing: its
    darkest and brightest pixels differ by less than ``MIN_CONTRAST``.

    ``prepare_gray`` returns all zeros for an image without contrast, and a drawn digit
    always reaches near 1, so for grayscale this is "no digit was found".
    """
    return bool(x.size == 0 or float(x.max()) - float(x.min()) < MIN_CONTRAST)


def check_not_empty(x: FloatArray, where: str | None = None) -> None:
    """``EmptyImageError`` (a ``ValueError``) when ``is_empty_image(x)``; the message is
    ``EMPTY_IMAGE_HINT``, after ``where`` when given."""
    if is_empty_image(x):
        raise EmptyImageError(_prefixed(where, EMPTY_IMAGE_HINT))


# --- pure array steps ------------------------------------------------------------------------


def _check_pixels(where: str, x: Any, ndim: int, layout: str) -> None:
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{where}: expected a floating-point array {layout}, got {got}")
    if x.ndim != ndim or 0 in x.shape:
        raise ValueError(f"{where}: expected a non-empty array {layout}, got shape {x.shape}")
    if not np.all(np.isfinite(x)) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise ValueError(f"{where}: pixel values must be finite and in [0, 1]")


def _is_count(n: Any) -> bool:
    """``n`` is a positive int (a NumPy integer too, but not a bool)."""
    return isinstance(n, int | np.integer) and not isinstance(n, bool) and bool(n >= 1)


def _check_size(where: str, size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or not all(_is_count(s) for s in size):
        raise ValueError(f"{where}: size must be two positive ints (H, W), got {tuple(size)!r}")
    return int(size[0]), int(size[1])


def _resample_taps(n_in: int, n_out: int) -> Iterator[tuple[int, NDArray[np.float64]]]:
    """Per output pixel ``i < n_out``: ``(lo_i, w_i)``, the antialiased linear-interpolation
    weights ``w_i`` of input pixels ``lo_i .. lo_i + len(w_i) - 1``; each ``w_i`` sums to 1.

    Pixel ``j`` of the input covers ``[j, j + 1)``; output pixel ``i`` is centred at
    ``(i + 0.5) * n_in / n_out`` in input coordinates. The triangle filter's radius is
    one output pixel when shrinking (so every input pixel is averaged in) and one input
    pixel when enlarging (plain linear interpolation). Only the inputs within the radius
    are listed, one window at a time (each about ``2 * n_in / n_out + 2`` weights), never
    an ``(n_out, n_in)`` matrix (an image 16 million pixels wide would need gigabytes).
    """
    scale = n_in / n_out
    radius = max(scale, 1.0)
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo = max(0, int(np.floor(centre - radius - 0.5)))
        hi = min(n_in, int(np.ceil(centre + radius - 0.5)) + 1)
        positions = np.arange(lo, hi, dtype=np.float64) + 0.5
        weights = np.maximum(0.0, 1.0 - np.abs(positions - centre) / radius)
        # The nearest input pixel is at most 0.5 away and radius >= 1: the sum is positive.
        yield lo, weights / weights.sum()


def resize(x: FloatArray, size: Sequence[int]) -> FloatArray:
    """``x: (..., H0, W0)`` resized to ``(..., H, W)`` with ``size = (H, W)``; dtype kept.

    Antialiased linear interpolation (see the module docstring); a new array, and
    values stay within ``[x.min(), x.max()]``. Memory and time grow with the number
    of pixels of ``x`` (plus those of the output), whatever its aspect ratio.
    """
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"resize: expected a floating-point array, got {type(x).__name__}")
    if x.ndim < 2 or 0 in x.shape[-2:]:
        raise ValueError(f"resize: expected x of shape (..., H0, W0), got {x.shape}")
    h, w = _check_size("resize", size)
    # One axis at a time, the one that shrinks more first (so the second pass reads the
    # smaller intermediate); rows are resampled as the columns of the transposed view.
    if x.shape[-2] / h >= x.shape[-1] / w:
        rows = _resize_last_axis(x.swapaxes(-1, -2), h).swapaxes(-1, -2)
        out = _resize_last_axis(rows, w)
    else:
        cols = _resize_last_axis(x, w)
        out = _resize_last_axis(cols.swapaxes(-1, -2), h).swapaxes(-1, -2)
    return np.ascontiguousarray(out) if out is not x else out.copy()


def _resize_last_axis(x: FloatArray, n_out: int) -> FloatArray:
    """``x: (..., n_in)`` resampled to ``(..., n_out)``: one weighted window per output;
    ``x`` itself when ``n_in == n_out`` (the identity)."""
    if x.shape[-1] == n_out:
        return x
    out: FloatArray = np.empty((*x.shape[:-1], n_out), dtype=x.dtype)
    for i, (lo, weights) in enumerate(_resample_taps(x.shape[-1], n_out)):
        # float64 weights: sums accumulate in float64 (one window at a time), so a constant
        # image stays exactly constant after the cast back to x's dtype.
        out[..., i] = np.matmul(x[..., lo : lo + len(weights)], weights)
    return out


def _border(x: FloatArray) -> FloatArray:
    """The one-pixel frame of ``x: (H, W)`` as a flat array (corners counted twice)."""
    return np.concatenate([x[0, :], x[-1, :], x[:, 0], x[:, -1]])


def prepare_gray(
    gray: FloatArray, size: Sequence[int] = (28, 28), *, invert: bool | None = None
) -> NDArray[np.float32]:
    """A grayscale picture of a digit, ``gray: (H0, W0)`` in [0, 1], as MNIST draws it.

    Returns ``(H, W)`` float32 in [0, 1] with ``size = (H, W)``: light on dark, the
    digit fitted into ``round(DIGIT_BOX * H) × round(DIGIT_BOX * W)`` with its aspect
    ratio kept and centred by its centre of mass (details in the module docstring).
    ``invert``: ``None`` inverts when the border is light (median > 0.5), ``True`` /
    ``False`` force it. Raises ``ValueError`` for a non-float, empty or non-2-D array,
    or values outside [0, 1].
    """
    _check_pixels("prepare_gray", gray, 2, "(H0, W0)")
    h, w = _check_size("prepare_gray", size)
    # One copy, then only in-place steps: a huge image costs its float32 copy, not several.
    x = gray.astype(np.float32)  # a copy: nothing below writes into the argument
    background = float(np.median(_border(x), overwrite_input=True))  # a temporary: no copy
    if invert is None:
        invert = background > 0.5
    if invert:
        np.subtract(np.float32(1.0), x, out=x)
        background = 1.0 - background
    peak = float(x.max())
    canvas = np.zeros((h, w), dtype=np.float32)
    if peak - background < MIN_CONTRAST:
        return canvas
    x -= np.float32(background)
    x /= np.float32(peak - background)
    np.clip(x, 0.0, 1.0, out=x)

    ink = x > INK_THRESHOLD
    ink_rows = np.flatnonzero(ink.any(axis=1))
    ink_cols = np.flatnonzero(ink.any(axis=0))
    del ink
    digit = x[ink_rows[0] : ink_rows[-1] + 1, ink_cols[0] : ink_cols[-1] + 1]

    box_h, box_w = max(1, round(DIGIT_BOX * h)), max(1, round(DIGIT_BOX * w))
    scale = min(box_h / digit.shape[0], box_w / digit.shape[1])
    dh = min(box_h, max(1, round(digit.shape[0] * scale)))
    dw = min(box_w, max(1, round(digit.shape[1] * scale)))
    patch = resize(digit, (dh, dw))

    # Place the patch so its centre of mass is at the canvas centre, inside the canvas.
    mass = float(patch.sum())
    com_r = float(patch.sum(axis=1) @ np.arange(dh)) / mass
    com_c = float(patch.sum(axis=0) @ np.arange(dw)) / mass
    top = min(max(int(np.floor(h / 2 - com_r + 0.5)), 0), h - dh)
    left = min(max(int(np.floor(w / 2 - com_c + 0.5)), 0), w - dw)
    canvas[top : top + dh, left : left + dw] = patch
    return canvas


def prepare_rgb(rgb: FloatArray, size: Sequence[int] = (32, 32)) -> NDArray[np.float32]:
    """A colour picture ``rgb: (3, H0, W0)`` in [0, 1] resized to ``(3, H, W)`` float32.

    A plain resize of the whole picture (``size = (H, W)``), aspect ratio not kept,
    no inversion. Raises ``ValueError`` like ``prepare_gray``.
    """
    _check_pixels("prepare_rgb", rgb, 3, "(3, H0, W0)")
    if rgb.shape[0] != 3:
        raise ValueError(f"prepare_rgb: expected (3, H0, W0), got shape {rgb.shape}")
    # resize never writes into its argument, so float32 pixels need no copy.
    out = np.clip(resize(rgb.astype(np.float32, copy=False), size), 0.0, 1.0)
    return out.astype(np.float32, copy=False)


def _check_input_shape(where: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(_is_count(s) for s in shape) or shape[0] not in (1, 3):
        raise ValueError(
            f"{where}: input_shape must be (C, H, W) with C = 1 (grayscale) or 3 (RGB) "
            f"and positive H, W; got {shape!r}"
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


def prepare_image(
    pixels: FloatArray, input_shape: Sequence[int], *, invert: bool | None = None
) -> NDArray[np.float32]:
    """Decoded ``pixels: (C, H0, W0)`` in [0, 1] as one model input ``(C, H, W)`` float32.

    ``input_shape = (C, H, W)``: ``C = 1`` runs ``prepare_gray`` (with ``invert``),
    ``C = 3`` runs ``prepare_rgb`` (``invert`` must then be ``None``). Raises
    ``ValueError`` when the channels differ from ``C`` or the pixels are malformed.
    """
    c, h, w = _check_input_shape("prepare_image", input_shape)
    _check_pixels("prepare_image", pixels, 3, "(C, H0, W0)")
    if pixels.shape[0] != c:
        raise ValueError(
            f"prepare_image: pixels have {pixels.shape[0]} channels, input_shape {(c, h, w)} "
            f"wants {c}"
        )
    if c == 1:
        return prepare_gray(pixels[0], (h, w), invert=invert)[None]
    if invert is not None:
        raise ValueError("prepare_image: invert applies to grayscale (C = 1) inputs only")
    return prepare_rgb(pixels, (h, w))


# --- decoding (Pillow) --------------------------------------------------------------------


def _pillow() -> tuple[Any, Any]:
    """Pillow's ``Image`` and ``ImageOps`` modules, or an ``ImportError`` saying how to get them."""
    try:
        from PIL import Image, ImageOps
    except ImportError as err:
        raise ImportError(_PILLOW_HINT) from err
    return Image, ImageOps


def _to_array(im: Image.Image, channels: int, image_mod: Any) -> NDArray[np.float32]:
    """A decoded Pillow image as ``(channels, H0, W0)`` float32 in [0, 1]."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them.
        full = 1.0 if im.mode == "F" else 65535.0
        gray = np.clip(np.asarray(im, dtype=np.float64) / full, 0.0, 1.0).astype(np.float32)
        return np.repeat(gray[None], channels, axis=0)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        white = image_mod.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = image_mod.alpha_composite(white, rgba).convert("RGB")
    if im.mode != "L" or channels == 3:
        im = im.convert("RGB")  # every decoded mode converts to RGB, not all of them to L
    if channels == 1:
        im = im.convert("L")
    scaled = uint8_to_unit(np.asarray(im, dtype=np.uint8))
    out: NDArray[np.float32] = (
        scaled[None] if channels == 1 else np.ascontiguousarray(scaled.transpose(2, 0, 1))
    )
    return out


def decode_image(
    source: ImageSource,
    channels: int = 1,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: Sequence[str] = IMAGE_FORMATS,
) -> NDArray[np.float32]:
    """Decode an image file (a path) or its bytes into ``(channels, H0, W0)`` float32 in [0, 1].

    ``channels``: 1 (luma) or 3 (RGB). Raises ``ImageTooLargeError`` (a ``ValueError``)
    when the image has more than ``max_pixels`` pixels or more than Pillow's own
    decompression-bomb limit (checked from the header, before the pixel data is
    decompressed); ``ImageShapeError`` (a ``ValueError``) when one side is more than
    ``MAX_ASPECT_RATIO`` times the other (from the header too); ``ValueError`` when the
    data is not an image in one of ``formats`` or is corrupt or truncated;
    ``FileNotFoundError`` (an ``OSError``) when a path cannot be opened; ``ImportError``
    when Pillow is not installed.
    """
    if channels not in (1, 3):
        raise ValueError(f"decode_image: channels must be 1 or 3, got {channels!r}")
    if not _is_count(max_pixels):
        raise ValueError(f"decode_image: max_pixels must be a positive int, got {max_pixels!r}")
    image_mod, ops_mod = _pillow()
    where, stream = _open_source(source)
    with stream:
        try:
            im = image_mod.open(stream, formats=list(formats))
        except image_mod.UnidentifiedImageError as err:
            raise ValueError(
                f"{where}: not a readable image (supported formats: {', '.join(formats)})"
            ) from err
        except image_mod.DecompressionBombError as err:
            raise ImageTooLargeError(f"{where}: too many pixels ({err})") from err
        except _DECODE_ERRORS as err:
            raise ValueError(f"{where}: its header is corrupt or truncated ({err})") from err
        with im:
            width, height = im.size
            _check_header_size(where, width, height, max_pixels)
            try:
                im.load()
                oriented = ops_mod.exif_transpose(im)
                return _to_array(oriented, channels, image_mod)
            except image_mod.DecompressionBombError as err:
                raise ImageTooLargeError(f"{where}: too many pixels ({err})") from err
            except _DECODE_ERRORS as err:
                raise ValueError(f"{where}: cannot be decoded ({err})") from err


def _open_source(source: ImageSource) -> tuple[str, Any]:
    """``(how to name it in messages, a binary stream)`` for a path or bytes."""
    if isinstance(source, bytes | bytearray):
        return f"image data ({len(source)} bytes)", io.BytesIO(bytes(source))
    if isinstance(source, str | os.PathLike):
        # The caller closes it; OSError (a missing file) propagates as is.
        return f"image {os.fspath(source)!r}", open(source, "rb")
    raise TypeError(f"decode_image: source must be a path or bytes, got {type(source).__name__}")


def _check_header_size(where: str, width: int, height: int, max_pixels: int) -> None:
    """Refuse, from the header's size, too many pixels, none, or a thin strip."""
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{where}: {width}×{height} = {width * height} pixels is more than the "
            f"limit of {max_pixels}"
        )
    if width * height == 0:
        raise ValueError(f"{where}: the image is empty ({width}×{height})")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageShapeError(
            f"{where}: {width}×{height} is a strip, not a picture: one side is more "
            f"than {MAX_ASPECT_RATIO} times the other"
        )


def load_image(
    source: ImageSource,
    input_shape: Sequence[int],
    *,
    invert: bool | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> NDArray[np.float32]:
    """An image file (a path) or its bytes as one model input ``(C, H, W)`` float32 in [0, 1].

    ``input_shape = (C, H, W)`` with ``C = 1`` (grayscale, MNIST's convention: light
    backgrounds are inverted unless ``invert`` says otherwise, the digit is fitted into
    a 20/28 box and centred) or ``C = 3`` (RGB, resized whole). ``decode_image`` then
    ``prepare_image``; raises what they raise: ``ValueError`` for undecodable data,
    ``ImageTooLargeError`` (a ``ValueError``) for more than ``max_pixels`` pixels,
    ``OSError`` for an unreadable path, ``ImportError`` without Pillow
    (``pip install "fcnn[images]"``).
    """
    c, h, w = _check_input_shape("load_image", input_shape)
    if c == 3 and invert is not None:  # prepare_image says so too, but only after decoding
        raise ValueError("load_image: invert applies to grayscale (C = 1) inputs only")
    pixels = decode_image(source, c, max_pixels=max_pixels)
    return prepare_image(pixels, (c, h, w), invert=invert)
