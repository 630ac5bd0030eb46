"""Hostile checkpoint files (issue 24): reading is bounded by the bytes really in the file.

The files come from ``benchmarks/checkpoint_probe.py`` (the same builders the probe
measures, smaller where a test must stay quick). Each regression test reproduces one
hole of issue 24 and failed before the fix; memory is measured in a fresh process
(``measure.peak_growth``), time never.
"""

from __future__ import annotations

import json
import struct
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import checkpoint_probe as probe
import numpy as np
import pytest
from measure import peak_growth

import fcnn.io as fio
from fcnn.io import CheckpointError, load_checkpoint, read_checkpoint_header, save_checkpoint
from fcnn.models import load_trained

MiB = 2**20
READERS = (read_checkpoint_header, load_checkpoint, load_trained)


def _growth(path: Path, call: str = "load_trained") -> int:
    """Bytes a fresh process's peak memory grows by while ``call`` refuses ``path``."""
    setup = (
        "from fcnn.io import CheckpointError, load_checkpoint\n"
        "from fcnn.models import load_trained\n"
    )
    action = f"try:\n    {call}({str(path)!r})\nexcept CheckpointError:\n    pass"
    return peak_growth(setup, action)


def _refused(path: Path, match: str, readers: Any = READERS) -> str:
    """Check every reader refuses ``path`` with one line matching ``match``; the message."""
    message = ""
    for read in readers:
        with pytest.raises(CheckpointError, match=match) as info:
            read(path)
        message = str(info.value)
        assert path.name in message and "\n" not in message and "()" not in message
    return message


# --- sizes that lie --------------------------------------------------------------------------


def test_regression_sizes_that_lie_made_every_loader_allocate_gigabytes(tmp_path: Path) -> None:
    """Issue 24: an 80 KB checkpoint whose zip headers claim a 2 GB member (the model its
    meta describes needs just that array) cost 5.9 GB and 20-30 s in load_trained, then
    'cannot be read as .npz ()'. The member's data must now lie in the file: refused from
    the zip's headers, in every loader, and the process barely grows."""
    path = probe.sizes_claim_huge(tmp_path)
    assert path.stat().st_size < 100_000
    _refused(
        path,
        r"entry 'params/dense1/w' claims 2048000128 bytes, but 128 lie between its header and "
        r"the next entry",
    )
    assert _growth(path) < 16 * MiB


def test_a_stored_member_whose_sizes_disagree_is_refused(tmp_path: Path) -> None:
    data = probe.npy(np.zeros(4, np.float32))
    entry = probe.stored("params/w.npy", data)
    entry.size = len(data) + 16  # stored, yet claims to inflate
    path = _with_header(tmp_path, [entry])
    _refused(path, r"'params/w' claims \d+ bytes stored in \d+", READERS[:2])


def test_a_deflated_member_claiming_more_than_deflate_can_make_is_refused(tmp_path: Path) -> None:
    entry = probe.deflated("params/w.npy", [probe.npy(np.zeros(2**16, np.float32))])
    entry.size = 1033 * (len(entry.data) + 1)
    path = _with_header(tmp_path, [entry])
    _refused(path, r"'params/w' claims \d+ bytes inflated from \d+, more than deflate", READERS[:2])


def test_a_member_that_ends_before_its_declared_size_is_refused_without_allocating_it(
    tmp_path: Path,
) -> None:
    """The headers declare 512 MiB of float32 (a ratio deflate can reach, and within 16
    times the file, which a 40 MiB second member fills), the stream holds 2 MiB. Even when
    the model expects that array, reading takes memory only for the bytes that arrive:
    under an address-space limit 256 MiB above the process's size (NumPy's reader
    allocated the declared array first: a MemoryError)."""
    values = 2**27
    head = probe.npy_header((values,))
    noise = np.random.default_rng(0).bytes(2 * MiB)
    entry = probe.deflated("params/w.npy", [head, noise])
    entry.size = len(head) + 4 * values
    pad = probe.stored("params/pad.npy", probe.npy(np.zeros(40 * MiB, np.uint8)))
    path = _with_header(tmp_path, [entry, pad])
    w = SimpleNamespace(shape=(values,), dtype=np.dtype(np.float32))  # what init would make
    like = {"params": {"w": w, "pad": SimpleNamespace(shape=(40 * MiB,), dtype=np.dtype("u1"))}}
    with pytest.raises(CheckpointError, match=r"'params/w' holds only 2097152 of the 536870912"):
        load_checkpoint(path, expected=like)
    if not sys.platform.startswith("linux"):
        return
    setup = (
        "import resource, re, numpy as np\nfrom types import SimpleNamespace\n"
        "from fcnn.io import CheckpointError, load_checkpoint\n"
        "size = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read())[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + 256 * 2**20, size + 256 * 2**20))\n"
        f"like = {{'params': {{'w': SimpleNamespace(shape=({values},), dtype=np.dtype('f4')), "
        f"'pad': SimpleNamespace(shape=({40 * MiB},), dtype=np.dtype('u1'))}}}}\n"
    )
    call = f"load_checkpoint({str(path)!r}, expected=like)"
    action = f"try:\n    {call}\nexcept CheckpointError:\n    pass"
    assert peak_growth(setup, action) < 32 * MiB  # and no MemoryError in the child


def _with_header(tmp_path: Path, entries: list[probe.Entry], name: str = "c.npz") -> Path:
    """A zip of ``entries`` and a header whose params structure names them."""
    keys = {e.name[len("params/") : -len(".npy")]: None for e in entries}
    header = {"format": "fcnn-checkpoint", "format_version": 1, "fcnn_version": "0.2.0"}
    header |= {"trees": {"params": keys, "state": {}, "opt_state": None}, "meta": {}}
    meta = probe.npy(np.frombuffer(json.dumps(header).encode(), np.uint8))
    return probe.write(tmp_path / name, [*entries, probe.stored("__meta__.npy", meta)])


# --- decompression bombs -------------------------------------------------------------------


def test_regression_a_deflate_bomb_in_the_optimizer_state_was_inflated_by_load_trained(
    tmp_path: Path,
) -> None:
    """Issue 24: load_trained compares params and state with the model but read every
    member, so a deflated 2 GiB of zeros among the optimizer state (2 MB on disk) took
    2 GB and 10-20 s in every tool, then loaded. All members together may now take at
    most MAX_INFLATION times the file's size."""
    path = probe.deflate_bomb_in_opt_state(tmp_path, nbytes=64 * MiB)
    assert path.stat().st_size < 2 * MiB
    with pytest.raises(
        CheckpointError,
        match=r"its arrays would take \d+ bytes, more than 16 times the file's \d+",
    ):
        load_trained(path)
    assert _growth(path) < 16 * MiB


def test_regression_load_checkpoint_inflated_a_deflate_bomb_without_expected(
    tmp_path: Path,
) -> None:
    """Issue 24: without ``expected=`` every member was inflated, 2 GB from a 2 MB file."""
    path = probe.deflate_bomb(tmp_path, nbytes=64 * MiB)
    with pytest.raises(CheckpointError, match=r"its arrays would take \d+ bytes, more than 16"):
        load_checkpoint(path)
    assert _growth(path, "load_checkpoint") < 16 * MiB


def test_a_compressed_checkpoint_of_real_weights_still_loads(tmp_path: Path) -> None:
    """Foreign .npz files may be deflated (np.savez_compressed): read when they inflate
    as real weights do."""
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((64, 64)).astype(np.float32), "b": np.zeros(64)}
    path = tmp_path / "plain.npz"
    save_checkpoint(path, params=params, state={}, opt_state={"m": params}, meta={"a": 1})
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "z.npz", "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), zipfile.ZIP_DEFLATED)
    ckpt = load_checkpoint(tmp_path / "z.npz", expected={"params": params})
    np.testing.assert_array_equal(ckpt.params["w"], params["w"])
    assert ckpt.opt_state is not None and ckpt.opt_state["m"]["b"].shape == (64,)


def test_regression_overlapping_members_multiplied_the_file(tmp_path: Path) -> None:
    """Issue 24: members nested in one another (each a uint8 array holding the headers
    and data of the next ones) made a 4 MB file read as 1 GB, loaded by every tool.
    Members must now lie one after the other."""
    path = probe.overlapping_members(tmp_path, count=32, payload=MiB)
    _refused(path, r"entry 'opt_state/o0' claims \d+ bytes, but \d+ lie between its header")


def test_two_entries_at_one_place_are_refused(tmp_path: Path) -> None:
    path = _with_header(tmp_path, [probe.stored("params/w.npy", probe.npy(np.zeros(3)))])
    data = bytearray(path.read_bytes())
    cd_size, cd_offset = struct.unpack_from("<2L", data, len(data) - 10)
    first = bytes(data[cd_offset : cd_offset + 46 + len("params/w.npy")])
    twin = first.replace(b"params/w.npy", b"params/v.npy")  # refused by its place, first
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 3, 3, cd_size + len(twin), cd_offset, 0)
    path.write_bytes(bytes(data[: cd_offset + cd_size]) + twin + end)
    _refused(path, r"entry 'params/\w' claims \d+ bytes, but 0 lie", READERS[:2])


# --- many members, long messages -------------------------------------------------------------


def test_regression_100k_members_took_seconds_and_a_megabyte_message(tmp_path: Path) -> None:
    """Issue 24: 100,000 unexpected members took 7-12 s to refuse with a 1.6 MB message.
    The entries are counted from the zip's directory bytes before zipfile parses them
    (which alone takes seconds for 100k): refused in one short line."""
    path = probe.many_members(tmp_path, count=10_001)
    message = _refused(path, r"holds more than 10000 entries$")
    assert len(message) < 200


def test_an_end_record_that_understates_the_entries_does_not_help(tmp_path: Path) -> None:
    """The count is taken from the directory itself, not from the end record's field."""
    path = probe.many_members(tmp_path, count=fio.MAX_MEMBERS + 1)
    data = bytearray(path.read_bytes())
    at = data.rfind(b"PK\x05\x06")
    struct.pack_into("<2H", data, at + 8, 5, 5)
    locator = data.rfind(b"PK\x06\x06")
    struct.pack_into("<2Q", data, locator + 24, 5, 5)
    path.write_bytes(bytes(data))
    _refused(path, r"holds more than 10000 entries", READERS[:1])


def test_a_structure_disagreement_lists_a_few_names(tmp_path: Path) -> None:
    path = probe.many_members(tmp_path, count=2000)
    message = _refused(
        path,
        r"params entries disagree with the recorded structure: missing \[\], unexpected "
        r"\['params/x0', 'params/x1', 'params/x10', 'params/x100', 'params/x1000', "
        r"\.\.\. and 1995 more\]$",
    )
    assert len(message) < 300


def test_check_params_match_lists_a_few_of_many_problems() -> None:
    ref = {f"w{i}": np.zeros(2) for i in range(1000)}
    got = {f"v{i}": np.zeros(2) for i in range(1000)}
    with pytest.raises(CheckpointError) as info:
        fio.check_params_match(ref, got)
    message = str(info.value)
    assert "\n" not in message and len(message) < 200
    assert "missing in the file: w0, w1, w2, w3, w4, ... and 995 more" in message


# --- the header ------------------------------------------------------------------------------


def test_regression_a_header_of_empty_lists_was_accepted_at_hundreds_of_megabytes(
    tmp_path: Path,
) -> None:
    """Issue 24: 8 MiB of '[],' in the header (2.7 million empty lists, under the byte
    limit) was parsed whole: 400-650 MB and 5-15 s in every tool, then accepted. Values
    are now counted while parsing and the parser stops at MAX_META_ITEMS."""
    path = probe.header_of_empty_lists(tmp_path)
    assert path.stat().st_size < 9 * MiB
    _refused(path, r"__meta__ holds more than 250000 JSON values")
    assert _growth(path) < 64 * MiB


def test_the_header_item_limit_counts_every_value_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every value at any depth counts once (the outermost object not): the test header
    holds 10 values besides its list."""
    monkeypatch.setattr(fio, "MAX_META_ITEMS", 50)
    for k, ok in ((40, True), (41, False)):
        header = {"format": "fcnn-checkpoint", "format_version": 1, "fcnn_version": "0.2.0"}
        header |= {"trees": {"params": {"w": None}, "state": {}, "opt_state": None}}
        header["meta"] = {"x": [[]] * k}
        meta = probe.npy(np.frombuffer(json.dumps(header).encode(), np.uint8))
        entries = [probe.stored("params/w.npy", probe.npy(np.zeros(2)))]
        path = probe.write(tmp_path / "m.npz", [*entries, probe.stored("__meta__.npy", meta)])
        if ok:
            assert load_checkpoint(path).meta == {"x": [[]] * k}
        else:
            _refused(path, "holds more than 50 JSON values", READERS[:2])


# --- other damage ----------------------------------------------------------------------------


def test_a_truncated_deflate_stream_is_refused(tmp_path: Path) -> None:
    path = probe.truncated_member(tmp_path)
    _refused(path, r"entry 'params/dense1/w' is corrupt \(Bad CRC-32 for file")


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    path = probe.duplicate_names(tmp_path)
    _refused(path, r"entry 'params/conv1/w' appears twice")


@pytest.mark.parametrize(
    ("method", "flags", "match"),
    [(zipfile.ZIP_BZIP2, 0, "uses compression method 12"), (0, 1, "is encrypted")],
)
def test_other_methods_and_encryption_are_refused(
    tmp_path: Path, method: int, flags: int, match: str
) -> None:
    path = _with_header(tmp_path, [probe.stored("params/w.npy", probe.npy(np.zeros(3)))])
    data = bytearray(path.read_bytes())
    cd = data.find(b"PK\x01\x02")
    struct.pack_into("<2H", data, cd + 8, flags, method)
    path.write_bytes(bytes(data))
    _refused(path, rf"'params/w' {match}", READERS[:2])


def test_files_zipfile_reads_still_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A zip64 end record, a comment after the end record, bytes before the first entry."""
    params = {"w": np.arange(6.0).reshape(2, 3), "f": np.asfortranarray(np.ones((3, 2)))}
    path = tmp_path / "c.npz"
    with monkeypatch.context() as m:
        m.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # zipfile then writes zip64 records
        save_checkpoint(path, params=params, state={})
    assert b"PK\x06\x06" in path.read_bytes()
    assert load_checkpoint(path).params["f"].flags.f_contiguous
    with zipfile.ZipFile(path, "a") as z:
        z.comment = b"a comment"
    (tmp_path / "p.npz").write_bytes(b"#!/bin/sh\nexit 0\n" + path.read_bytes())
    for name in ("c.npz", "p.npz"):
        got = load_checkpoint(tmp_path / name).params
        np.testing.assert_array_equal(got["w"], params["w"])
        np.testing.assert_array_equal(got["f"], params["f"])
        assert read_checkpoint_header(tmp_path / name).members["params/w"].shape == (2, 3)


def test_stored_bytes_add_up_to_at_most_the_file(tmp_path: Path) -> None:
    """What load_trained relies on to bound its init: ``stored_bytes`` is checked."""
    path = probe.deflate_bomb(tmp_path, nbytes=16 * MiB)
    members = read_checkpoint_header(path).members
    assert sum(m.stored_bytes for m in members.values()) <= path.stat().st_size
    assert members["params/dense1/w"].shape == (16 * MiB // 512, 128)


def test_the_probe_builds_every_file_and_runs_a_loader(tmp_path: Path) -> None:
    """benchmarks/checkpoint_probe.py measures in a fresh process (structure only)."""
    path = probe.duplicate_names(tmp_path)
    row = probe.run_one("read_checkpoint_header", path, timeout=60, as_limit_mb=None)
    assert row["outcome"] == "refused" and "appears twice" in row["message"]
    assert row["peak_mib"] > 0 and row["chars"] == len(row["message"])
    assert set(probe.HOSTILE) >= {"sizes-claim-huge", "deflate-bomb", "many-members"}
