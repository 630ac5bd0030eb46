"""fcnn.data.cifar10 on small generated archives in the binary format (4 records a batch).

Hostile archives (links, ../ and absolute paths, duplicates, wrong sizes) are built
with tarfile; downloads go to a local http.server on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import clear_proxies, closed_port_url, serving_folder
from numpy.typing import NDArray

from fcnn.data.cifar10 import (
    CIFAR10_CLASSES,
    CIFAR10_MD5,
    TEST_BATCH,
    TRAIN_BATCHES,
    load_cifar10,
    parse_cifar10_batch,
    read_cifar10_archive,
    read_cifar10_folder,
)
from fcnn.data.download import DatasetNotFoundError

R = 4  # records per generated batch
PREFIX = "cifar-10-batches-bin/"
Batch = tuple[NDArray[np.uint8], NDArray[np.uint8], bytes]
Member = tuple[tarfile.TarInfo, io.BytesIO | None]


def make_batch(rng: np.random.Generator, records: int = R) -> Batch:
    """Random images (records, 3, 32, 32), labels (records,) and the batch file's bytes."""
    images = rng.integers(0, 256, size=(records, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=records, dtype=np.uint8)
    data = b"".join(bytes([int(y)]) + x.tobytes() for x, y in zip(images, labels, strict=True))
    return images, labels, data


def _member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_archive(path: Path, members: list[Member]) -> str:
    """A .tar.gz of ``members`` (from ``_member``); returns its md5."""
    with tarfile.open(path, "w:gz") as tar:
        for info, f in members:
            tar.addfile(info, f)
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def batches(rng: np.random.Generator) -> dict[str, Batch]:
    return {n: make_batch(rng) for n in (*TRAIN_BATCHES, TEST_BATCH)}


def _good_members(batches: dict[str, Batch]) -> list[Member]:
    members = [_member(PREFIX.rstrip("/"), kind=tarfile.DIRTYPE)]
    members += [_member(PREFIX + "batches.meta.txt", b"airplane\nautomobile\n")]
    members += [_member(PREFIX + n, b[2]) for n, b in batches.items()]
    return members


def _expect(batches: dict[str, Batch]) -> tuple[NDArray[np.uint8], ...]:
    x_train = np.concatenate([batches[n][0] for n in TRAIN_BATCHES])
    y_train = np.concatenate([batches[n][1] for n in TRAIN_BATCHES])
    return x_train, y_train, batches[TEST_BATCH][0], batches[TEST_BATCH][1]


def _assert_same(got: tuple[NDArray[np.uint8], ...], want: tuple[NDArray[np.uint8], ...]) -> None:
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.uint8
        np.testing.assert_array_equal(g, w)


# --- the record format ----------------------------------------------------------------


def test_record_layout() -> None:
    # label, then the red plane, the green plane, the blue plane, each row by row
    record = bytes([7]) + bytes(range(256)) * 12
    x, y = parse_cifar10_batch(record, records=1)
    assert y.tolist() == [7] and x.shape == (1, 3, 32, 32)
    assert x[0, 0, 0, :3].tolist() == [0, 1, 2]  # red, row 0
    assert x[0, 0, 1, 0] == 32  # red, row 1 starts at byte 32
    assert x[0, 1, 0, 0] == (1024 % 256)  # green starts after 1024 red bytes
    x.flags.writeable = True  # a copy, not a view of the bytes


def test_batch_refusals() -> None:
    with pytest.raises(ValueError, match=r"b\.bin: expected 6146 bytes .* got 6145"):
        parse_cifar10_batch(bytes(6145), "b.bin", records=2)
    with pytest.raises(ValueError, match="label 10 out of range"):
        parse_cifar10_batch(bytes([10]) + bytes(3072), "b.bin", records=1)


# --- archives ---------------------------------------------------------------------------


def test_read_archive(tmp_path: Path, batches: dict[str, Batch]) -> None:
    write_archive(tmp_path / "a.tar.gz", _good_members(batches))
    got = read_cifar10_archive(tmp_path / "a.tar.gz", records_per_batch=R)
    assert got[0].shape == (5 * R, 3, 32, 32) and got[2].shape == (R, 3, 32, 32)
    _assert_same(got, _expect(batches))


def test_hostile_members_are_ignored(tmp_path: Path, batches: dict[str, Batch]) -> None:
    junk = bytes(R * 3073)  # the right size, all label 0 and black: must never be read
    hostile = [
        _member("../../data_batch_1.bin", junk),
        _member("/data_batch_2.bin", junk),
        _member(PREFIX + "../data_batch_3.bin", junk),
        _member("evil/data_batch_4.bin", kind=tarfile.SYMTYPE, link="/etc/passwd"),
        _member("data_batch_5.bin", kind=tarfile.LNKTYPE, link=PREFIX + "test_batch.bin"),
        _member("x/test_batch.bin", kind=tarfile.DIRTYPE),
        _member(PREFIX + "data_batch_1.bin.bak", junk),
        _member(PREFIX + "readme.html", b"<html></html>"),
    ]
    good = _good_members(batches)
    write_archive(tmp_path / "a.tar.gz", hostile[:4] + good + hostile[4:])
    got = read_cifar10_archive(tmp_path / "a.tar.gz", records_per_batch=R)
    _assert_same(got, _expect(batches))
    assert not (tmp_path / "data_batch_1.bin").exists()  # nothing extracted anywhere


def test_link_in_place_of_a_batch_is_missing(tmp_path: Path, batches: dict[str, Batch]) -> None:
    members = [m for m in _good_members(batches) if not m[0].name.endswith("data_batch_2.bin")]
    members.append(_member(PREFIX + "data_batch_2.bin", kind=tarfile.SYMTYPE, link="/etc/passwd"))
    write_archive(tmp_path / "a.tar.gz", members)
    with pytest.raises(ValueError, match=r"missing batch file\(s\) \['data_batch_2.bin'\]"):
        read_cifar10_archive(tmp_path / "a.tar.gz", records_per_batch=R)


def test_duplicate_member_is_refused(tmp_path: Path, batches: dict[str, Batch]) -> None:
    members = [*_good_members(batches), _member("other/test_batch.bin", batches[TEST_BATCH][2])]
    write_archive(tmp_path / "a.tar.gz", members)
    with pytest.raises(ValueError, match=r"duplicate member for test_batch\.bin") as info:
        read_cifar10_archive(tmp_path / "a.tar.gz", records_per_batch=R)
    assert "a.tar.gz" in str(info.value)


def test_wrong_size_member_is_refused(tmp_path: Path, batches: dict[str, Batch]) -> None:
    members = [m for m in _good_members(batches) if not m[0].name.endswith("data_batch_3.bin")]
    members.append(_member(PREFIX + "data_batch_3.bin", batches["data_batch_3.bin"][2][:-1]))
    write_archive(tmp_path / "a.tar.gz", members)
    with pytest.raises(ValueError, match=r"data_batch_3.bin: expected 12292 bytes"):
        read_cifar10_archive(tmp_path / "a.tar.gz", records_per_batch=R)
    # the real size is 10000 records: a small archive read as the real one is refused
    write_archive(tmp_path / "b.tar.gz", _good_members(batches))
    with pytest.raises(ValueError, match="expected 30730000 bytes"):
        read_cifar10_archive(tmp_path / "b.tar.gz")


@pytest.mark.parametrize("content", [b"<!DOCTYPE html><html></html>", b""])
def test_not_an_archive(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "cifar-10-binary.tar.gz"
    f.write_bytes(content)
    with pytest.raises(ValueError, match="corrupt or truncated archive") as info:
        read_cifar10_archive(f, records_per_batch=R)
    assert str(f) in str(info.value)


def test_truncated_archive(tmp_path: Path, batches: dict[str, Batch]) -> None:
    write_archive(tmp_path / "a.tar.gz", _good_members(batches))
    data = (tmp_path / "a.tar.gz").read_bytes()
    (tmp_path / "a.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"a\.tar\.gz"):
        read_cifar10_archive(tmp_path / "a.tar.gz", records_per_batch=R)


# --- extracted folder ---------------------------------------------------------------------


def test_read_folder(tmp_path: Path, batches: dict[str, Batch]) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for n, b in batches.items():
        (folder / n).write_bytes(b[2])
    _assert_same(read_cifar10_folder(folder, records_per_batch=R), _expect(batches))
    (folder / TEST_BATCH).write_bytes(batches[TEST_BATCH][2] + b"\x00")
    with pytest.raises(ValueError, match=r"test_batch\.bin: expected 12292 bytes"):
        read_cifar10_folder(folder, records_per_batch=R)
    (folder / TEST_BATCH).unlink()
    with pytest.raises(ValueError, match="missing batch"):
        read_cifar10_folder(folder, records_per_batch=R)


# --- load_cifar10 ---------------------------------------------------------------------------


def _check_dataset(ds: object, batches: dict[str, Batch]) -> None:
    from fcnn.data.dataset import Dataset

    assert isinstance(ds, Dataset)
    assert ds.name == "cifar10" and ds.classes == CIFAR10_CLASSES
    assert ds.x_train.shape == (5 * R, 3, 32, 32) and ds.x_test.shape == (R, 3, 32, 32)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    x_train, _, _, y_test = _expect(batches)
    np.testing.assert_array_equal(ds.x_train, x_train.astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert float(ds.x_train.min()) >= 0.0 and float(ds.x_train.max()) <= 1.0


def test_load_from_archive_and_folder(tmp_path: Path, batches: dict[str, Batch]) -> None:
    (tmp_path / "cifar10").mkdir()
    md5 = write_archive(tmp_path / "cifar10" / "cifar-10-binary.tar.gz", _good_members(batches))
    _check_dataset(load_cifar10(tmp_path, download=False, _records_per_batch=R, _md5=md5), batches)
    # the published checksum guards the archive: ours is refused before it is read
    with pytest.raises(ValueError, match=f"md5 mismatch: expected {CIFAR10_MD5}") as info:
        load_cifar10(tmp_path, download=False, _records_per_batch=R)
    assert "cifar-10-binary.tar.gz" in str(info.value)
    # an extracted folder directly in data_dir wins, with no checksum to check
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for n, b in batches.items():
        (folder / n).write_bytes(b[2])
    (tmp_path / "cifar10" / "cifar-10-binary.tar.gz").unlink()
    _check_dataset(load_cifar10(tmp_path, download=False, _records_per_batch=R), batches)


def test_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_cifar10(tmp_path, download=False)
    msg = str(info.value)
    assert str(tmp_path / "cifar10") in msg and "cifar-10-binary.tar.gz" in msg
    assert f"md5 {CIFAR10_MD5}" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in msg
    assert "cifar-10-batches-bin" in msg and "FCNN_DATA_DIR" in msg


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local http.server on 127.0.0.1 serving a fresh folder; (base URL, folder)."""
    root = tmp_path / "served"
    root.mkdir()
    with serving_folder(root) as url:
        yield url, root


def test_download(
    file_server: tuple[str, Path],
    tmp_path: Path,
    batches: dict[str, Batch],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_proxies(monkeypatch)
    base, root = file_server
    md5 = write_archive(root / "cifar-10-binary.tar.gz", _good_members(batches))
    (root / "bad").mkdir()
    (root / "bad" / "cifar-10-binary.tar.gz").write_bytes(b"<html>not it</html>")
    closed = closed_port_url("cifar-10-binary.tar.gz")
    urls = [f"{base}/gone.tar.gz", f"{base}/bad/cifar-10-binary.tar.gz", closed]
    data = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError) as info:
        load_cifar10(data, urls=urls, timeout=5, _records_per_batch=R, _md5=md5)
    msg = str(info.value)
    assert "HTTP 404" in msg and "md5 mismatch" in msg and "connection failed" in msg
    assert not (data / "cifar10" / "cifar-10-binary.tar.gz").exists()
    urls.append(f"{base}/cifar-10-binary.tar.gz")
    ds = load_cifar10(data, urls=urls, timeout=5, _records_per_batch=R, _md5=md5)
    _check_dataset(ds, batches)
    assert sorted(p.name for p in (data / "cifar10").iterdir()) == ["cifar-10-binary.tar.gz"]
