"""fcnn.data.mnist: the IDX parser on small generated files, refusals, and the real MNIST.

The real-data tests read ../shared/data/mnist (next to the repository) and are
skipped when it is absent; downloads go to a local http.server on 127.0.0.1 only.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    HAVE_SHARED_MNIST,
    SHARED_MNIST,
    clear_proxies,
    closed_port_url,
    needs_shared_mnist,
    serving_folder,
)
from measure import peak_growth
from numpy.typing import NDArray

from fcnn.data.dataset import Dataset
from fcnn.data.download import DatasetNotFoundError
from fcnn.data.mnist import MNIST_FILES, load_mnist, load_mnist_uint8, parse_idx, read_idx

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

_CODES = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}


def make_idx(arr: NDArray[Any]) -> bytes:
    """IDX bytes for ``arr`` (any of the six IDX dtypes)."""
    dt = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    code = _CODES[dt.str.replace("|", "").replace("<", ">")]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(dt).tobytes()


# --- parse_idx / read_idx on generated data ------------------------------------------------


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", "<i4", ">f4", "<f8"])
def test_parse_idx_round_trip(dtype: str, rng: np.random.Generator) -> None:
    arr = (rng.standard_normal((3, 5, 2)) * 100).astype(dtype)
    got = parse_idx(make_idx(arr))
    assert got.shape == (3, 5, 2)
    assert got.dtype == arr.dtype.newbyteorder("=")
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, arr)
    got[0, 0, 0] = 1  # a writable copy, not a view of the bytes


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x00\x00", "shorter than a header"),
        (b"<!DOCTYPE html><html>", "not an IDX file"),
        (b"\x00\x00\x07\x01" + (3).to_bytes(4, "big") + b"abc", "not an IDX file"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x02" + (3).to_bytes(4, "big"), "truncated IDX header"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc", "truncated"),
        (b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + b"abc", "trailing bytes"),
    ],
)
def test_parse_idx_refuses(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        parse_idx(data, name="thing.idx")
    assert "thing.idx" in str(info.value)


def test_read_idx_raw_and_gz(tmp_path: Path, rng: np.random.Generator) -> None:
    arr = rng.integers(0, 256, size=(4, 6, 6)).astype(np.uint8)
    (tmp_path / "a-idx3-ubyte").write_bytes(make_idx(arr))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(make_idx(arr)))
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name, verify=False), arr)


def test_read_idx_refuses_html_saved_as_gz(tmp_path: Path) -> None:
    f = tmp_path / "t10k-labels-idx1-ubyte.gz"
    f.write_bytes(b"<!DOCTYPE html><html><body>404</body></html>")
    for verify in (True, False):
        with pytest.raises(ValueError, match="not a gzip file") as info:
            read_idx(f, verify=verify)
        assert str(f) in str(info.value)


def test_read_idx_refuses_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(make_idx(np.arange(1000, dtype=np.uint8).reshape(10, 100)))
    f = tmp_path / "x.gz"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip") as info:
        read_idx(f, verify=False)
    assert str(f) in str(info.value)


def test_decompression_is_bounded(tmp_path: Path) -> None:
    # 64 MB of zeros behind a valid header: only max_bytes + 1 bytes are ever inflated
    header = b"\x00\x00\x08\x01" + (64_000_000).to_bytes(4, "big")
    comp = gzip.compress(header + bytes(64_000_000), compresslevel=1)
    (tmp_path / "bomb.gz").write_bytes(comp)
    with pytest.raises(ValueError, match="more than 1000 bytes"):
        read_idx(tmp_path / "bomb.gz", verify=False, max_bytes=1000)
    # a "verified" name caps at the known size
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(comp)
    with pytest.raises(ValueError, match="more than 60008 bytes") as info:
        read_idx(tmp_path / "train-labels-idx1-ubyte.gz")
    assert "train-labels-idx1-ubyte.gz" in str(info.value)


def test_verify_refuses_wrong_dims_and_wrong_checksum(tmp_path: Path) -> None:
    f = tmp_path / "t10k-labels-idx1-ubyte"
    f.write_bytes(make_idx(np.zeros(9999, dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"expected IDX uint8 \(10000,\).*got uint8 \(9999,\)"):
        read_idx(f)
    f.write_bytes(make_idx(np.zeros((2, 4998), dtype=np.uint8)))  # the right size, 2-D
    with pytest.raises(ValueError, match=r"magic 0x00000802, expected 0x00000801"):
        read_idx(f)
    f.write_bytes(make_idx(np.zeros(10000, dtype=np.uint8)))  # right header, wrong content
    with pytest.raises(ValueError, match="SHA-256") as info:
        read_idx(f)
    assert str(f) in str(info.value)
    assert MNIST_FILES["t10k-labels-idx1-ubyte"].sha256 in str(info.value)
    np.testing.assert_array_equal(read_idx(f, verify=False), np.zeros(10000, np.uint8))


def test_regression_a_wrong_idx_magic_was_reported_as_an_absurd_byte_count(tmp_path: Path) -> None:
    """Issue 24: train labels whose magic says 4 dimensions (0x00000804) read the next
    twelve label bytes as sizes and were refused as 'needs 12961623889660273287322500020
    bytes'. The magic is checked first and named."""
    labels = np.resize(np.array([5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5], np.uint8), 60000)
    data = bytearray(make_idx(labels))
    data[3] = 4
    f = tmp_path / "train-labels-idx1-ubyte"
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError) as info:
        read_idx(f)
    assert str(info.value) == (
        f"{f}: not an IDX file of MNIST train-labels-idx1-ubyte (magic 0x00000804, "
        "expected 0x00000801)"
    )
    for read in (lambda: read_idx(f, verify=False), lambda: parse_idx(bytes(data), str(f))):
        with pytest.raises(
            ValueError,
            match=r"truncated, or not an IDX file: its header \(magic "
            r"0x00000804\) declares uint8 \(60000, 83887105, 151126275, "
            r"17040133\), more than the file's 60008 bytes$",
        ) as info:
            read()
        assert "12961623889660273287322500020" not in str(info.value)


def test_an_idx_header_is_checked_against_the_file_size_before_its_data_is_read(
    tmp_path: Path,
) -> None:
    """A 64 MB raw file whose header announces 3 bytes is refused from its size on disk;
    the reading process barely grows (it read up to 1 GiB first)."""
    f = tmp_path / "big-idx1-ubyte"
    with open(f, "wb") as out:
        out.write(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big"))
        out.truncate(64 * 2**20)
    with pytest.raises(ValueError, match=r"trailing bytes: its IDX header \(3,\)"):
        read_idx(f, verify=False)
    setup = f"from fcnn.data.mnist import read_idx\npath = {str(f)!r}\n"
    action = "try:\n    read_idx(path, verify=False)\nexcept ValueError:\n    pass"
    assert peak_growth(setup, action) < 16 * 2**20


def test_verify_needs_a_known_name(tmp_path: Path) -> None:
    f = tmp_path / "labels.idx"
    f.write_bytes(make_idx(np.zeros(3, dtype=np.uint8)))
    with pytest.raises(ValueError, match="verify=False"):
        read_idx(f)


# --- load_mnist without the real data ------------------------------------------------------


def test_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(tmp_path, download=False)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "mnist") in msg
    for name, known in MNIST_FILES.items():
        assert f"{name}.gz" in msg and known.sha256 in msg
    assert "ossci-datasets.s3.amazonaws.com" in msg and "cvdf-datasets" in msg
    assert "--data-dir" in msg and "FCNN_DATA_DIR" in msg


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCNN_DATA_DIR", str(tmp_path / "from-env"))
    with pytest.raises(DatasetNotFoundError, match="from-env"):
        load_mnist(download=False)


def test_a_bad_file_is_refused_not_half_used(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, known in MNIST_FILES.items():
        (folder / name).write_bytes(make_idx(np.zeros(known.shape, dtype=np.uint8)))
    with pytest.raises(ValueError, match="SHA-256") as info:
        load_mnist(tmp_path, download=False)
    assert str(folder / "train-images-idx3-ubyte") in str(info.value)


def test_regression_files_split_across_the_two_folders_were_reported_missing(
    tmp_path: Path,
) -> None:
    """One file in data_dir/mnist, three in data_dir: all four are found (and then read)."""
    (tmp_path / "mnist").mkdir()
    for i, (name, known) in enumerate(MNIST_FILES.items()):
        folder = tmp_path / "mnist" if i == 0 else tmp_path
        (folder / name).write_bytes(make_idx(np.zeros(known.shape, dtype=np.uint8)))
    with pytest.raises(ValueError, match="SHA-256") as info:  # not DatasetNotFoundError
        load_mnist(tmp_path, download=False)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte") in str(info.value)


# --- the real files --------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    if not HAVE_SHARED_MNIST:
        pytest.skip(f"{SHARED_MNIST} not present")
    return load_mnist(SHARED_MNIST, download=False)


def _check_real(ds: Dataset) -> None:
    assert ds.name == "mnist"
    assert ds.classes == tuple("0123456789")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == TRAIN_COUNTS
    assert np.bincount(ds.y_test).tolist() == TEST_COUNTS


@needs_shared_mnist
def test_real_mnist(mnist: Dataset) -> None:
    _check_real(mnist)
    for x in (mnist.x_train, mnist.x_test):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # the well-known first training label and the mean intensity of the training set
    assert int(mnist.y_train[0]) == 5
    assert abs(float(mnist.x_train.mean(dtype=np.float64)) - 0.1307) < 1e-3


@needs_shared_mnist
def test_raw_and_gz_files_mixed_in_the_parent_folder(tmp_path: Path) -> None:
    # labels uncompressed, images as .gz, directly in data_dir (no mnist/ sub-folder)
    for name in MNIST_FILES:
        src = SHARED_MNIST / f"{name}.gz"
        if "labels" in name:
            (tmp_path / name).write_bytes(gzip.decompress(src.read_bytes()))
        else:
            (tmp_path / f"{name}.gz").symlink_to(src)
    x_train, _, _, y_test = load_mnist_uint8(tmp_path, download=False)
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert np.bincount(y_test).tolist() == TEST_COUNTS


@pytest.fixture
def mnist_server() -> Iterator[str]:
    """A local http.server serving ../shared/data/mnist at /mnist/ on 127.0.0.1."""
    with serving_folder(SHARED_MNIST.parent) as url:
        yield url


@needs_shared_mnist
def test_download_from_mirrors(
    mnist_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxies(monkeypatch)
    closed = closed_port_url("mnist/")  # the first mirror refuses the connection
    mirrors = [f"{mnist_server}/nowhere/", closed, f"{mnist_server}/mnist"]
    ds = load_mnist(tmp_path, mirrors=mirrors, timeout=5)
    _check_real(ds)
    got = sorted(p.name for p in (tmp_path / "mnist").iterdir())
    assert got == sorted(f"{n}.gz" for n in MNIST_FILES)  # no temporary files left
    for name in MNIST_FILES:
        a, b = tmp_path / "mnist" / f"{name}.gz", SHARED_MNIST / f"{name}.gz"
        assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


@needs_shared_mnist
def test_corrupt_download_is_refused(tmp_path: Path) -> None:
    # the real train labels cut short, as a dropped download saved by another tool would be
    src = gzip.decompress((SHARED_MNIST / "train-labels-idx1-ubyte.gz").read_bytes())
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in MNIST_FILES:
        (folder / f"{name}.gz").symlink_to(SHARED_MNIST / f"{name}.gz")
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    (folder / "train-labels-idx1-ubyte").write_bytes(src[:-100])
    with pytest.raises(ValueError, match="truncated") as info:
        load_mnist(tmp_path, download=False)
    assert "train-labels-idx1-ubyte" in str(info.value)
    shutil.rmtree(folder)


@needs_shared_mnist
def test_files_split_across_mnist_folder_and_data_dir(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    for i, name in enumerate(MNIST_FILES):
        folder = tmp_path / "mnist" if i % 2 else tmp_path
        (folder / f"{name}.gz").symlink_to(SHARED_MNIST / f"{name}.gz")
    ds = load_mnist(tmp_path, download=False)
    _check_real(ds)


@needs_shared_mnist
def test_missing_files_are_downloaded_into_the_mnist_folder(
    mnist_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when the files already there sit directly in data_dir."""
    clear_proxies(monkeypatch)
    (tmp_path / "train-labels-idx1-ubyte.gz").symlink_to(
        SHARED_MNIST / "train-labels-idx1-ubyte.gz"
    )
    _check_real(load_mnist(tmp_path, mirrors=[f"{mnist_server}/mnist"], timeout=5))
    got = sorted(p.name for p in (tmp_path / "mnist").iterdir())
    assert got == sorted(f"{n}.gz" for n in MNIST_FILES if "train-labels" not in n)
