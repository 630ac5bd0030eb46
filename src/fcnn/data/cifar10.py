"""CIFAR-10 (A. Krizhevsky, 2009) from its binary version, never the pickled one.

``load_cifar10`` returns a ``Dataset``::

    x_train: (50000, 3, 32, 32) float32 in [0, 1]    y_train: (50000,) int64 in [0, 10)
    x_test:  (10000, 3, 32, 32) float32 in [0, 1]    y_test:  (10000,) int64 in [0, 10)

Sources, looked for in ``<data_home>/cifar10/`` then ``<data_home>`` (see
``fcnn.data.download.data_home``), first found wins:

1. an extracted folder ``cifar-10-batches-bin/`` (checked for names and sizes
   only: there are no published per-file checksums);
2. the archive ``cifar-10-binary.tar.gz``, verified against its published MD5
   (``CIFAR10_MD5``) before it is read;
3. otherwise the archive is downloaded from ``CIFAR10_URLS`` (when ``download``).

Batch files ``data_batch_1.bin`` .. ``data_batch_5.bin`` (train, in that order) and
``test_batch.bin``: 10000 records of 3073 bytes each, a label byte (0..9) then
3072 pixel bytes: the 32x32 red plane, then green, then blue, rows in order.

The archive is read in memory with ``tarfile``, never extracted, and its member
names are not trusted: only regular-file members whose base name is exactly one
of the six batch names, under a relative path without ``..``, are read; links,
folders and every other member are ignored; a duplicate or a batch of the wrong
size is refused. Bad input raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from numpy.typing import NDArray

from .dataset import Dataset, uint8_to_unit
from .download import (
    DEFAULT_TIMEOUT,
    Checksum,
    Progress,
    RemoteFile,
    data_home,
    fetch_all,
)

__all__ = [
    "CIFAR10_ARCHIVE",
    "CIFAR10_CLASSES",
    "CIFAR10_FOLDER",
    "CIFAR10_MD5",
    "CIFAR10_URLS",
    "load_cifar10",
    "parse_cifar10_batch",
    "read_cifar10_archive",
    "read_cifar10_folder",
]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_URLS: tuple[str, ...] = ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"

TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCH = "test_batch.bin"
RECORDS_PER_BATCH = 10000
RECORD_BYTES = 1 + 3 * 32 * 32
_MAX_ARCHIVE_BYTES = 256 << 20  # the archive is about 163 MiB

CifarArrays = tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]


def parse_cifar10_batch(
    data: bytes, name: str = "<bytes>", records: int = RECORDS_PER_BATCH
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """One batch file's bytes -> ``images: (records, 3, 32, 32)`` and ``labels: (records,)``, uint8.

    Raises ``ValueError`` naming ``name`` when the length is not ``records * 3073`` or a
    label is above 9. The arrays are new and writable.
    """
    expected = records * RECORD_BYTES
    if len(data) != expected:
        raise ValueError(
            f"{name}: expected {expected} bytes ({records} records of {RECORD_BYTES}), "
            f"got {len(data)}"
        )
    table = np.frombuffer(data, dtype=np.uint8).reshape(records, RECORD_BYTES)
    labels = table[:, 0].copy()
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"{name}: label {int(labels.max())} out of range 0..9")
    images = table[:, 1:].reshape(records, 3, 32, 32).copy()
    return images, labels


def _assemble(batches: dict[str, bytes], source: str, records: int) -> CifarArrays:
    """Check all six batches are there and stack them: train (5 batches, in order), test."""
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if n not in batches]
    if missing:
        raise ValueError(f"{source}: missing batch file(s) {missing}")
    train = [parse_cifar10_batch(batches[n], f"{source}:{n}", records) for n in TRAIN_BATCHES]
    x_test, y_test = parse_cifar10_batch(batches[TEST_BATCH], f"{source}:{TEST_BATCH}", records)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test


def read_cifar10_archive(
    path: str | os.PathLike[str], *, records_per_batch: int = RECORDS_PER_BATCH
) -> CifarArrays:
    """The uint8 arrays ``x_train (5R, 3, 32, 32), y_train (5R,), x_test (R, 3, 32, 32),
    y_test (R,)`` (``R = records_per_batch``, 10000 for the real data) from the binary
    tar.gz, read in memory. No checksum: ``load_cifar10`` verifies the archive first.

    Raises ``ValueError`` naming the file for a corrupt archive, a missing, duplicate
    or wrongly sized batch.
    """
    p = Path(path)
    wanted = {*TRAIN_BATCHES, TEST_BATCH}
    size = records_per_batch * RECORD_BYTES
    batches: dict[str, bytes] = {}
    try:
        with tarfile.open(p, mode="r:gz") as tar:
            for member in tar:
                base = PurePosixPath(member.name).name
                if base not in wanted or not member.isreg() or not _safe_name(member.name):
                    continue  # links, folders, other files, absolute or ../ paths: ignored
                where = f"{p}:{member.name}"
                if base in batches:
                    raise ValueError(f"{where}: duplicate member for {base}; refused")
                if member.size != size:
                    raise ValueError(
                        f"{where}: expected {size} bytes ({records_per_batch} records of "
                        f"{RECORD_BYTES}), the archive says {member.size}"
                    )
                f = tar.extractfile(member)
                if f is None:  # pragma: no cover - regular members always have data
                    raise ValueError(f"{where}: no data")
                with f:
                    batches[base] = f.read(size + 1)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"{p}: corrupt or truncated archive: {e}") from e
    return _assemble(batches, str(p), records_per_batch)


def _safe_name(name: str) -> bool:
    """A relative member path with no ``..`` component."""
    pp = PurePosixPath(name)
    return not pp.is_absolute() and ".." not in pp.parts and "\\" not in name


def read_cifar10_folder(
    path: str | os.PathLike[str], *, records_per_batch: int = RECORDS_PER_BATCH
) -> CifarArrays:
    """Like ``read_cifar10_archive`` for an extracted ``cifar-10-batches-bin`` folder."""
    folder = Path(path)
    size = records_per_batch * RECORD_BYTES
    batches: dict[str, bytes] = {}
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        f = folder / name
        if not f.is_file():
            continue
        with open(f, "rb") as fh:
            batches[name] = fh.read(size + 1)  # a longer file is refused by its length
    return _assemble(batches, str(folder), records_per_batch)


def _locate(root: Path) -> tuple[str, Path] | None:
    """("folder", path) or ("archive", path) of the first CIFAR-10 copy found, else None."""
    for folder in (root / "cifar10", root):
        if (folder / CIFAR10_FOLDER).is_dir():
            return "folder", folder / CIFAR10_FOLDER
        if (folder / CIFAR10_ARCHIVE).is_file():
            return "archive", folder / CIFAR10_ARCHIVE
    if root.name == CIFAR10_FOLDER and root.is_dir():
        return "folder", root
    return None


def _fetch_archive(
    root: Path,
    checksum: Checksum,
    urls: Sequence[str],
    download: bool,
    timeout: float,
    progress: Progress | None,
) -> Path:
    """The archive downloaded into ``root/cifar10`` (``fetch_all``'s error when it cannot be)."""
    remote = RemoteFile(
        filename=CIFAR10_ARCHIVE,
        urls=tuple(urls),
        verify=checksum,
        expected=str(checksum),
        max_bytes=_MAX_ARCHIVE_BYTES,
    )
    searched = list(dict.fromkeys([root / "cifar10", root]))
    note = f"An extracted {CIFAR10_FOLDER}/ folder in one of these folders is also accepted."
    (path,) = fetch_all(
        [remote],
        root / "cifar10",
        dataset="CIFAR-10",
        searched=searched,
        note=note,
        download=download,
        timeout=timeout,
        progress=progress,
    )
    return path


def _read(found: tuple[str, Path], checksum: Checksum, records_per_batch: int) -> CifarArrays:
    """The arrays of ``_locate``'s copy; an archive is verified against ``checksum`` first."""
    kind, path = found
    if kind == "archive":
        try:  # a corrupt or altered archive is never read
            checksum(path)
        except ValueError as e:
            raise ValueError(f"{e}; delete the file to download it again") from e
        return read_cifar10_archive(path, records_per_batch=records_per_batch)
    return read_cifar10_folder(path, records_per_batch=records_per_batch)


def load_cifar10(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    urls: Sequence[str] = CIFAR10_URLS,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
    _records_per_batch: int = RECORDS_PER_BATCH,
    _md5: str = CIFAR10_MD5,
) -> Dataset:
    """CIFAR-10 as a ``Dataset`` (shapes in the module docstring).

    ``data_dir``: the root folder (default ``data_home()``); see the module docstring
    for where the data is looked for. ``download``: fetch the archive from ``urls`` (in
    order) into ``data_dir/cifar10`` when no copy is found; when False a missing copy
    raises ``DatasetNotFoundError``. ``timeout``: seconds a stalled connection is given;
    ``progress(done, total)`` is called while downloading. The ``_``-prefixed
    parameters exist for tests with small generated archives.
    """
    root = data_home(data_dir)
    checksum = Checksum("md5", _md5)
    found = _locate(root)
    if found is None:
        found = ("archive", _fetch_archive(root, checksum, urls, download, timeout, progress))
    x_train, y_train, x_test, y_test = _read(found, checksum, _records_per_batch)
    return Dataset(
        x_train=uint8_to_unit(x_train),
        y_train=y_train.astype(np.int64),
        x_test=uint8_to_unit(x_test),
        y_test=y_test.astype(np.int64),
        classes=CIFAR10_CLASSES,
        name="cifar10",
    )
