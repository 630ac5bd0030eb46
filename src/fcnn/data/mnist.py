"""MNIST (Y. LeCun, C. Cortes, C. J. C. Burges; CC BY-SA 3.0) from its four IDX files.

``load_mnist`` returns a ``Dataset``::

    x_train: (60000, 1, 28, 28) float32 in [0, 1]    y_train: (60000,) int64 in [0, 10)
    x_test:  (10000, 1, 28, 28) float32 in [0, 1]    y_test:  (10000,) int64 in [0, 10)

Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each either raw or
gzip-compressed (``.gz`` appended), each in ``<data_home>/mnist/`` or directly in
``<data_home>`` (see ``fcnn.data.download.data_home``). Missing files are
downloaded (``.gz``) into ``<data_home>/mnist/`` from ``MNIST_MIRRORS`` in order.

Verification is on the *decompressed* IDX payload, so recompressed copies are
accepted: its exact size, its header (magic number, dimensions) and its SHA-256.
The header is read and checked first (the magic number, then the size its dimensions
announce against the file's real size and the expected one), so a wrong file is named
as such before any data is read; decompression is bounded: at most the announced size
+ 1 bytes are ever inflated.
A file that fails any check (wrong magic or dimensions, truncated, wrong checksum,
an HTML page saved under a ``.gz`` name) raises ``ValueError`` naming the file;
nothing is half-used.

IDX format (big-endian): two zero bytes, a type code (0x08 uint8, 0x09 int8,
0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions
``D``, then ``D`` uint32 sizes, then the data in C order. ``parse_idx`` reads any
such payload; ``read_idx(path, verify=False)`` reads any IDX file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .dataset import Dataset, uint8_to_unit
from .download import (
    DEFAULT_TIMEOUT,
    Progress,
    RemoteFile,
    data_home,
    fetch_all,
)

__all__ = [
    "MNIST_CLASSES",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "IdxFile",
    "load_mnist",
    "load_mnist_uint8",
    "parse_idx",
    "read_idx",
]

MNIST_CLASSES = tuple(str(d) for d in range(10))

# Mirrors of the original .gz files, tried in order; a file's URL is mirror + name + ".gz".
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MAX_IDX_BYTES = 1 << 30  # default cap for unverified IDX files (1 GiB decompressed)


@dataclass(frozen=True)
class IdxFile:
    """A known IDX payload: its name (without ``.gz``), header and SHA-256 of the raw bytes.

    ``size`` (the raw payload in bytes) follows from the header: ``4 + 4 * len(shape)
    + prod(shape)`` for uint8 data.
    """

    name: str
    shape: tuple[int, ...]
    sha256: str
    gz_md5: str  # MD5 of the original .gz download (informational: copies may be recompressed)

    @property
    def size(self) -> int:
        return _idx_size(self.shape, np.dtype(np.uint8))

    @property
    def magic(self) -> int:
        """The first four bytes, big-endian: 0x0000, type 0x08 (uint8), the dimensions."""
        return 0x0800 | len(self.shape)

    def describe(self) -> str:
        return (
            f"IDX uint8 {self.shape}, {self.size} bytes decompressed, "
            f"sha256 of the decompressed file {self.sha256}"
        )


MNIST_FILES: dict[str, IdxFile] = {
    f.name: f
    for f in (
        IdxFile(
            "train-images-idx3-ubyte",
            (60000, 28, 28),
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ),
        IdxFile(
            "train-labels-idx1-ubyte",
            (60000,),
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "d53e105ee54ea40749a09fcbcd1e9432",
        ),
        IdxFile(
            "t10k-images-idx3-ubyte",
            (10000, 28, 28),
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "9fb629c4189551a2d022fa330f9573f3",
        ),
        IdxFile(
            "t10k-labels-idx1-ubyte",
            (10000,),
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    )
}

_GZIP_MAGIC = b"\x1f\x8b"
_NOTE = "Each file is also accepted uncompressed (the same name without .gz)."


def _idx_size(shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
    """Bytes of an IDX file with this header: magic, one uint32 per dimension, the data."""
    return 4 + 4 * len(shape) + math.prod(shape) * dtype.itemsize


def _idx_header(head: bytes, name: str) -> tuple[np.dtype[Any], int]:
    """The dtype and number of dimensions the magic number ``head[:4]`` announces."""
    if len(head) < 4:
        raise ValueError(f"{name}: not an IDX file: {len(head)} bytes, shorter than a header")
    if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{name}: not an IDX file: magic {head[:4].hex()} (expected 0000TTDD with type "
            f"TT in {sorted(f'{t:02x}' for t in _IDX_DTYPES)}); file starts with {head[:16]!r}"
        )
    if head[3] == 0:
        raise ValueError(f"{name}: IDX header announces 0 dimensions")
    return _IDX_DTYPES[head[2]], head[3]


def _dims(data: bytes, ndim: int, name: str) -> tuple[int, ...]:
    if len(data) < 4 + 4 * ndim:
        raise ValueError(
            f"{name}: truncated IDX header: {ndim} dimensions need {4 + 4 * ndim} bytes, "
            f"got {len(data)}"
        )
    return tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))


def _size_error(name: str, magic: bytes, dtype: np.dtype[Any], shape: Any, got: int) -> ValueError:
    """The file's ``got`` bytes are not what its header announces; the message gives the
    header's shape, never a byte count a wrong header can make absurd."""
    expected = _idx_size(shape, dtype)
    if got < expected:
        return ValueError(
            f"{name}: truncated, or not an IDX file: its header (magic 0x{magic.hex()}) "
            f"declares {dtype} {shape}, more than the file's {got} bytes"
        )
    return ValueError(
        f"{name}: trailing bytes: its IDX header {shape} ({dtype}) needs {expected} bytes, "
        f"got {got}"
    )


def parse_idx(data: bytes, name: str = "<bytes>") -> NDArray[Any]:
    """Decode one IDX payload into a new, writable array in native byte order.

    ``data``: the whole decompressed file. The result has the header's dimensions
    and dtype (uint8 for MNIST). Raises ``ValueError`` naming ``name`` on a bad
    magic number, an unknown type code, or a payload whose length is not exactly
    what the header announces (truncated or with trailing bytes).
    """
    dtype, ndim = _idx_header(data[:4], name)
    shape = _dims(data, ndim, name)
    if len(data) != _idx_size(shape, dtype):
        raise _size_error(name, data[:4], dtype, shape, len(data))
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=4 + 4 * ndim)
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def read_idx(
    path: str | os.PathLike[str], *, verify: bool = True, max_bytes: int = _MAX_IDX_BYTES
) -> NDArray[Any]:
    """Read an IDX file, raw or gzip-compressed (by a ``.gz`` name); see ``parse_idx``.

    ``verify=True`` (what ``load_mnist`` uses) requires the file to be one of the
    four MNIST files, recognised by its name (``.gz`` stripped), and checks the
    decompressed payload's size, header and SHA-256 against ``MNIST_FILES``; at
    most its size + 1 bytes are decompressed. ``verify=False`` reads any IDX file
    of at most ``max_bytes`` decompressed bytes (for small generated files).
    Raises ``ValueError`` naming the file on any failure.
    """
    p = Path(path)
    gz = p.name.endswith(".gz")
    if not verify:
        return parse_idx(_read_bounded(p, max_bytes, gz), str(p))
    base = p.name[:-3] if gz else p.name
    if base not in MNIST_FILES:
        raise ValueError(
            f"{p}: verify=True needs one of the MNIST files {sorted(MNIST_FILES)} "
            "(optionally .gz); pass verify=False to read another IDX file"
        )
    return _read_verified(p, MNIST_FILES[base], gz)


def _read_verified(path: Path, known: IdxFile, gz: bool) -> NDArray[np.uint8]:
    """Read ``path`` and check it is exactly ``known`` (magic, size, header, SHA-256)."""
    data = _read_bounded(path, known.size, gz, known)
    arr = parse_idx(data, str(path))
    if arr.dtype != np.uint8 or arr.shape != known.shape:
        raise ValueError(
            f"{path}: expected IDX uint8 {known.shape} ({known.name}), got {arr.dtype} {arr.shape}"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != known.sha256:
        raise ValueError(
            f"{path}: SHA-256 of the decompressed content is {digest}, expected "
            f"{known.sha256}: not the original MNIST {known.name} (corrupt or altered)"
        )
    return arr


def _read_bounded(path: Path, max_bytes: int, gz: bool, known: IdxFile | None = None) -> bytes:
    """The decompressed file (see ``_read_idx``); ``ValueError`` naming it when it is not
    the IDX file ``known`` (when given), holds more than ``max_bytes`` or is corrupt."""
    try:
        with open(path, "rb") as f:
            if not gz:
                return _read_idx(f, str(path), max_bytes, known, os.fstat(f.fileno()).st_size)
            head = f.read(16)
            if head[:2] != _GZIP_MAGIC:
                raise ValueError(
                    f"{path}: not a gzip file (starts with {head!r}); an HTML error page "
                    "saved under this name? Delete it and download again"
                )
            f.seek(0)
            with gzip.GzipFile(fileobj=f, mode="rb") as g:
                return _read_idx(g, str(path), max_bytes, known, None)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip data: {e}") from e


def _read_idx(
    src: io.BufferedIOBase, name: str, max_bytes: int, known: IdxFile | None, real_size: int | None
) -> bytes:
    """An IDX file's bytes, its header checked before its data is read: the magic number
    against ``known``'s, the size the dimensions announce against the file's
    ``real_size`` (uncompressed files) and ``max_bytes``. Then at most the announced size
    + 1 bytes are read (decompressed), so trailing bytes are seen and nothing more."""
    head = src.read(4)
    if known is not None and head != known.magic.to_bytes(4, "big"):
        raise ValueError(
            f"{name}: not an IDX file of MNIST {known.name} (magic 0x{head.hex()}, expected "
            f"0x{known.magic:08x})"
        )
    dtype, ndim = _idx_header(head, name)
    head += src.read(4 * ndim)
    shape = _dims(head, ndim, name)
    size = _idx_size(shape, dtype)
    if real_size is not None and real_size != size:
        raise _size_error(name, head[:4], dtype, shape, real_size)
    if size > max_bytes:
        raise ValueError(
            f"{name}: more than {max_bytes} bytes (decompressed): its IDX header declares "
            f"{dtype} {shape}; refused"
        )
    return head + src.read(size - len(head) + 1)


def _locate(root: Path, name: str) -> Path | None:
    """The file ``name`` (raw, else ``.gz``) in ``root/mnist``, else in ``root``; else None.

    Each file is looked up on its own, so the four may be split across the two folders.
    """
    for folder in (root / "mnist", root):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def load_mnist_uint8(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """The verified raw arrays: ``x_train (60000, 28, 28)``, ``y_train (60000,)``,
    ``x_test (10000, 28, 28)``, ``y_test (10000,)``, all uint8.

    See ``load_mnist`` for the arguments. Each file is looked for in ``data_dir/mnist``,
    then in ``data_dir`` (the four may be split between them); in one folder the
    uncompressed name is preferred to the ``.gz`` one. Missing files are downloaded
    into ``data_dir/mnist``. Raises ``DatasetNotFoundError``
    when files are missing and cannot be downloaded, ``ValueError`` for a bad file.
    """
    root = data_home(data_dir)
    names = list(MNIST_FILES)
    searched = [root / "mnist", root]
    found = {n: path for n in names if (path := _locate(root, n)) is not None}
    missing = [n for n in names if n not in found]
    if missing:
        remotes = [
            RemoteFile(
                filename=f"{n}.gz",
                urls=tuple(m.rstrip("/") + f"/{n}.gz" for m in mirrors),
                verify=_download_check(MNIST_FILES[n]),
                expected=MNIST_FILES[n].describe(),
                max_bytes=MNIST_FILES[n].size + (1 << 20),  # gzip never grows it by 1 MiB
            )
            for n in missing
        ]
        paths = fetch_all(
            remotes,
            root / "mnist",
            dataset="MNIST",
            searched=searched,
            note=_NOTE,
            download=download,
            timeout=timeout,
            progress=progress,
        )
        found.update(zip(missing, paths, strict=True))
    # verified byte for byte (SHA-256), so the labels are the known 0..9
    x_train, y_train, x_test, y_test = (read_idx(found[n], verify=True) for n in names)
    return x_train, y_train, x_test, y_test


def _download_check(known: IdxFile) -> Callable[[Path], None]:
    """A verifier for a downloaded ``.gz`` (its temporary name does not say which file it is)."""

    def check(path: Path) -> None:
        _read_verified(path, known, gz=True)

    return check


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
) -> Dataset:
    """MNIST as a ``Dataset`` (shapes in the module docstring); always verified.

    ``data_dir``: the root folder (default ``data_home()``: ``FCNN_DATA_DIR``, then
    the cache); files are looked for in ``data_dir/mnist`` then ``data_dir``.
    ``download``: fetch missing files from ``mirrors`` (base URLs, tried in order)
    into ``data_dir/mnist``; when False a missing file raises ``DatasetNotFoundError``.
    ``timeout``: seconds a stalled connection is given; ``progress(done, total)``
    is called while downloading.
    """
    x_train, y_train, x_test, y_test = load_mnist_uint8(
        data_dir, download, mirrors=mirrors, timeout=timeout, progress=progress
    )
    return Dataset(
        x_train=uint8_to_unit(x_train)[:, None],
        y_train=y_train.astype(np.int64),
        x_test=uint8_to_unit(x_test)[:, None],
        y_test=y_test.astype(np.int64),
        classes=MNIST_CLASSES,
        name="mnist",
    )
