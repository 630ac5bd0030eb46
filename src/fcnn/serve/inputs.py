"""Request bodies -> model inputs: pure functions of bytes, run on the worker threads.

Each returns a float32 array in [0, 1] or raises ``InputError`` (an HTTP 4xx status and a
one-line detail), and looks at the bytes before building anything from them, so what
cannot be an input of the model's shape is refused at the cost of a scan, not a parse:

- ``upload_file``: the multipart/form-data field ``file`` of a ``/predict`` body;
- ``image_to_input``: its bytes -> ``(C, H, W)``, after ``fcnn.serve.formats``' checks of
  the PNG or JPEG structure, decoded with ``max_pixels`` read from the header first;
- ``array_to_batch``: a ``/predict/array`` JSON body -> ``(N, C, H, W)``; ``scan_json``
  counts its brackets and commas on the raw bytes first, so a body of more values or
  arrays than ``max_batch`` images hold, or nested deeper than 4, is never parsed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..data.images import (
    EmptyImageError,
    ImageShapeError,
    ImageTooLargeError,
    check_not_empty,
    check_unit_images,
    decode_image,
    prepare_image,
)
from ..layers.base import Array
from .formats import SUPPORTED_FORMATS, InputError, check_jpeg, check_png, sniff

__all__ = [
    "array_to_batch",
    "check_json_type",
    "image_to_input",
    "scan_json",
    "upload_file",
]

_ASK_FOR_FILE = "upload the image as the multipart/form-data field 'file'"
_PIXEL_TYPES = (int, float)  # what json.loads gives for a JSON number
_NOTHING = object()
_BRACKETS = re.compile(rb"[\[\]]")


def upload_file(body: bytes, content_type: str | None) -> tuple[bytes, str | None]:
    """The field ``file`` of a multipart/form-data ``body``: its bytes and declared type."""
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        got = ctype.decode("latin-1") or "no content type"
        raise InputError(422, f"the request has no file: {got}; {_ASK_FOR_FILE}")
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    name, value = bytearray(), bytearray()

    def header_end() -> None:
        parts[-1][0][bytes(name).lower()] = bytes(value)
        name.clear()
        value.clear()

    callbacks: Any = {
        "on_part_begin": lambda: parts.append(({}, bytearray())),
        "on_header_field": lambda d, s, e: name.extend(d[s:e]),
        "on_header_value": lambda d, s, e: value.extend(d[s:e]),
        "on_header_end": header_end,
        "on_part_data": lambda d, s, e: parts[-1][1].extend(d[s:e]),
    }
    try:
        parser = MultipartParser(params[b"boundary"], callbacks)
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError) as err:
        raise InputError(400, f"the multipart body is malformed ({err}); {_ASK_FOR_FILE}") from err
    for headers, data in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition"))
        if disposition.get(b"name") == b"file":
            declared = headers.get(b"content-type")
            return bytes(data), declared.decode("latin-1") if declared else None
    raise InputError(422, f"the request has no field 'file'; {_ASK_FOR_FILE}")


def _format_of(data: bytes, content_type: str | None) -> str:
    """The supported format ``data`` is in, or the ``InputError`` that says why not."""
    if not data:
        raise InputError(400, "the uploaded file is empty")
    fmt = sniff(data)
    if fmt is None:
        declared = (content_type or "").split(";")[0].strip().lower()
        if declared.startswith("image/") and declared not in ("image/png", "image/jpeg"):
            raise InputError(415, f"unsupported image type {declared}; send a PNG or JPEG image")
        raise InputError(400, "the uploaded file is not an image; send a PNG or JPEG image")
    if fmt not in SUPPORTED_FORMATS:
        raise InputError(415, f"unsupported image format {fmt}; send a PNG or JPEG image")
    return fmt


def image_to_input(
    data: bytes, content_type: str | None, input_shape: Sequence[int], max_pixels: int
) -> Array:
    """An uploaded PNG or JPEG -> one model input ``(C, H, W)`` float32 in [0, 1]."""
    fmt = _format_of(data, content_type)
    check_png(data) if fmt == "PNG" else check_jpeg(data)
    try:  # decode_image refuses huge images from the header, before decompressing anything
        pixels = decode_image(data, input_shape[0], max_pixels=max_pixels, formats=[fmt])
    except ImageTooLargeError as err:
        raise InputError(413, f"the {fmt} image is too large: {err}") from err
    except ImageShapeError as err:
        raise InputError(422, f"the {fmt} image cannot be classified: {err}") from err
    except ValueError as err:
        raise InputError(400, f"the {fmt} image cannot be decoded: {err}") from err
    x = prepare_image(pixels, input_shape)
    try:
        check_not_empty(x)
    except EmptyImageError as err:
        raise InputError(422, str(err)) from err
    return x


def check_json_type(content_type: str | None) -> None:
    """``InputError`` (415) unless the body is declared JSON (or not declared)."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise InputError(415, f"send the images as application/json, not {ctype}")


def _expected(input_shape: Sequence[int]) -> str:
    return f"(N, {', '.join(map(str, input_shape))})"


def scan_json(body: bytes, input_shape: Sequence[int], max_batch: int) -> None:
    """Refuse, from its bytes alone, a JSON body that cannot be at most ``max_batch``
    images ``input_shape``: more ``[`` than their arrays (``1 + N (1 + C (1 + H))``) or
    more commas than their values (``N C H W - 1``), 413; nested deeper than 4, 422.
    Counting allocates nothing; the nesting is read from the brackets alone."""
    c, h, w = input_shape
    arrays, most_arrays = body.count(b"["), 1 + max_batch * (1 + c * (1 + h))
    values, most_values = body.count(b",") + 1, max_batch * c * h * w
    if arrays > most_arrays or values > most_values:
        what = f"{arrays} arrays" if arrays > most_arrays else f"more than {most_values} values"
        raise InputError(
            413,
            f"the JSON body holds {what}: more than {max_batch} images "
            f"{_expected(input_shape)} can have (the limit is {max_batch} images)",
        )
    depth = deepest = 0
    for bracket in _BRACKETS.findall(body):
        depth += 1 if bracket == b"[" else -1
        deepest = max(deepest, depth)
    if deepest > 4:
        raise InputError(
            422,
            f"expected a JSON array of images {_expected(input_shape)}, 4 levels of "
            f"nesting; got one nested {deepest} levels deep",
        )


def _parse_json(body: bytes, expected: str) -> list[Any]:
    """``body`` parsed: a non-empty JSON array, else an ``InputError``."""
    if not body:
        raise InputError(400, f"the body is empty; send a JSON array of images {expected}")
    try:
        obj = json.loads(body)
    except RecursionError as err:  # not reached after scan_json; kept as a last guard
        raise InputError(400, "the JSON body is nested too deeply") from err
    except ValueError as err:
        raise InputError(400, f"the body is not valid JSON ({err})") from err
    if not isinstance(obj, list) or not obj:
        got = "an empty array" if obj == [] else f"a JSON {type(obj).__name__}"
        raise InputError(422, f"expected a non-empty JSON array of images {expected}, got {got}")
    return obj


def array_to_batch(body: bytes, input_shape: Sequence[int], max_batch: int) -> Array:
    """A ``/predict/array`` JSON body -> images ``(N, C, H, W)`` float32 in [0, 1]."""
    expected = _expected(input_shape)
    scan_json(body, input_shape, max_batch)
    obj = _parse_json(body, expected)
    if len(obj) > max_batch:
        raise InputError(413, f"{len(obj)} images in one request; the limit is {max_batch}")
    try:
        arr = np.array(obj, dtype=np.float64)
    except (ValueError, TypeError, RecursionError, OverflowError, RuntimeError) as err:
        raise InputError(
            422,
            f"expected a JSON array of numbers shaped {expected}: the array is ragged or "
            f"holds non-numbers ({err})",
        ) from err
    # NumPy reads true as 1, "0.5" as 0.5 and null as NaN: only JSON numbers are pixels.
    pixels = np.array(obj, dtype=object).flat
    odd = next((v for v in pixels if type(v) not in _PIXEL_TYPES), _NOTHING)
    if odd is not _NOTHING:
        raise InputError(
            422,
            f"expected a JSON array of numbers shaped {expected}: it holds non-numbers "
            f"such as {json.dumps(odd)}",
        )
    try:  # the shape, finiteness and range checks Trained.predict_proba makes, same words
        return check_unit_images(arr, input_shape)
    except (TypeError, ValueError) as err:
        raise InputError(422, str(err)) from err
