"""Uploaded bytes looked at before any decoder sees them: which format they start like, and
whether a PNG's or a JPEG's structure is one an image of its size can have.

Pure functions on ``bytes`` (no Pillow, nothing allocated in proportion to the file),
raising ``InputError`` (an HTTP status and a one-line detail). What they refuse, and why
each bound holds for every real file:

- **PNG**: more than ``MAX_PNG_CHUNKS`` chunks plus one per image row (an encoder writes
  at most one data chunk per row; libpng keeps at most 1000 ancillary chunks). A file
  of 870k empty chunks costs Pillow seconds to walk; the header walk here stops at the
  bound.
- **JPEG**: a frame other than baseline, extended or progressive Huffman (arithmetic-
  coded and lossless JPEGs: 415); more than ``MAX_JPEG_SCANS`` scans (each scan is a
  pass over every block); and fewer coded bytes than the frame needs, at least one bit
  per 8×8 block of every component: such a file was cut short (libjpeg would fill the
  missing blocks with gray and report success when an end marker follows the cut).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "MAX_JPEG_SCANS",
    "MAX_PNG_CHUNKS",
    "SUPPORTED_FORMATS",
    "InputError",
    "check_jpeg",
    "check_png",
    "sniff",
]

# Uploads accepted by /predict, by Pillow format name.
SUPPORTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG")
MAX_PNG_CHUNKS = 1000
MAX_JPEG_SCANS = 100

# Leading bytes of image formats, to tell "unsupported format" (415) from "not an image" (400).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"qoif", "QOI"),
    (b"<svg", "SVG"),
)
# Start-of-frame markers of Huffman-coded JPEGs libjpeg decodes: baseline, extended, progressive.
_HUFFMAN_FRAMES = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive"}
_OTHER_FRAMES = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_SOS, _EOI = 0xDA, b"\xff\xd9"


class InputError(Exception):
    """A request the server refuses: ``status`` (an HTTP 4xx code) and a one-line ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def sniff(data: bytes) -> str | None:
    """The image format ``data`` starts like, or ``None``."""
    for magic, fmt in _SIGNATURES:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIF/AVIF"
    if len(data) >= 2 and data[0:1] == b"P" and data[1:2] in b"123456":
        return "PNM"
    return None


def check_png(data: bytes) -> None:
    """``InputError`` (413) when the PNG ``data`` has more chunks than an image of its
    height can need; a truncated or malformed chunk list is left to the decoder."""
    height = int.from_bytes(data[20:24], "big") if data[12:16] == b"IHDR" else 0
    bound = MAX_PNG_CHUNKS + height
    pos, count = 8, 0
    while pos + 8 <= len(data):
        count += 1
        if count > bound:
            raise InputError(
                413,
                f"the PNG image has more than {bound} chunks; an image {height} rows high "
                f"needs at most {MAX_PNG_CHUNKS} plus one per row",
            )
        if data[pos + 4 : pos + 8] == b"IEND":
            return
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")


class _Frame(NamedTuple):
    marker: int  # the start-of-frame marker's code (0xC0 baseline, ...)
    width: int
    height: int
    sampling: list[tuple[int, int]]  # (h, v) per component
    scan_start: int  # where the first scan's coded data begins


def _jpeg_frame(data: bytes) -> _Frame | None:
    """A JPEG's frame header, up to its first scan, or ``None`` when its headers are cut
    short or malformed (the decoder then says so)."""
    pos, frame = 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : pos + 2 + length]
        if (marker in _HUFFMAN_FRAMES or marker in _OTHER_FRAMES) and len(segment) >= 6:
            height, width = (int.from_bytes(segment[i : i + 2], "big") for i in (1, 3))
            sampling = [(b >> 4, b & 15) for b in segment[7 : 6 + 3 * segment[5] : 3]]
            frame = _Frame(marker, width, height, sampling, 0)
        if marker == _SOS:
            return frame._replace(scan_start=pos + 2 + length) if frame else None
        pos += 2 + length
    return None


def _coded_bytes(scan: bytes) -> int:
    """Entropy-coded data bytes in ``scan``: a marker (``FF`` and its code) not counted, a
    stuffed ``FF 00`` counted once (fill bytes, rare, count one less each: never more)."""
    markers = scan.count(b"\xff")
    return len(scan) - 2 * markers + scan.count(b"\xff\x00")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _min_coded_bytes(frame: _Frame) -> int:
    """At least one bit per 8×8 block of every component (its DC coefficient's code); a
    component sampled ``(h, v)`` covers ``ceil(width * h / hmax) × ceil(height * v / vmax)``."""
    hmax = max([h for h, _ in frame.sampling] + [1])
    vmax = max([v for _, v in frame.sampling] + [1])
    blocks = sum(
        _ceil_div(_ceil_div(frame.width * h, hmax), 8)
        * _ceil_div(_ceil_div(frame.height * v, vmax), 8)
        for h, v in frame.sampling
    )
    return blocks // 8


def check_jpeg(data: bytes) -> None:
    """``InputError`` for a JPEG ``data`` that is not Huffman-coded (415), has more than
    ``MAX_JPEG_SCANS`` scans (413), or holds fewer coded bytes than its frame needs (400)."""
    frame = _jpeg_frame(data)
    if frame is None:
        return
    if frame.marker not in _HUFFMAN_FRAMES:
        raise InputError(
            415,
            "unsupported JPEG coding (arithmetic or lossless); send a baseline or "
            "progressive JPEG, or a PNG",
        )
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise InputError(413, f"the JPEG image has {scans} scans, more than {MAX_JPEG_SCANS}")
    end = data.find(_EOI, frame.scan_start)
    coded = _coded_bytes(data[frame.scan_start : end if end >= 0 else len(data)])
    need = _min_coded_bytes(frame)
    if coded < need:
        raise InputError(
            400,
            f"the JPEG image is truncated: its header says {frame.width}×{frame.height}, "
            f"which takes at least {need} bytes of image data, but it holds {coded}",
        )
