"""atomic_write: the whole new file, or the old one untouched and no temporary left."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fcnn.atomic
from fcnn.atomic import atomic_write


def test_writes_text_and_bytes(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "a.txt", "w") as f:
        f.write("héllo\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    with atomic_write(tmp_path / "b.bin") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(os.stat(tmp_path / "b.bin").st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("old")
    os.chmod(path, 0o600)
    with pytest.raises(RuntimeError), atomic_write(path, "w") as f:
        f.write("half of the new")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]
    with atomic_write(path, "w") as f:
        f.write("new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # an existing file keeps its mode


def test_bad_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "x", "a"):
        pass


def test_regression_kill_9_mid_write_left_temporary_files_forever(tmp_path: Path) -> None:
    """Issue 15: a process killed during a save leaves its ``*.tmp`` beside the target (4
    of 30 trials, 1.7 MB each). The next save of the same target removes it."""
    path = tmp_path / "model.npz"
    code = (
        "import os, signal, sys\nfrom fcnn.atomic import atomic_write\n"
        "with atomic_write(sys.argv[1]) as f:\n"
        "    f.write(b'x' * 2**20)\n    f.flush()\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", code, str(path)], timeout=60)
        assert done.returncode == -signal.SIGKILL
    # Each killed save removed the one before it: only the last one's is left.
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].stat().st_size == 2**20
    with atomic_write(path) as f:
        f.write(b"complete")
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_only_stale_temporaries_of_the_same_target_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as live:
        try:
            keep = [
                f".c.npz.{live.pid}.abcdefgh.tmp",  # a live writer of the same target
                f".c.npz.{os.getpid()}.abcdefgh.tmp",  # this process's own
                ".c.npz.bak.1.abcdefgh.tmp",  # another target's
                ".c.npz.bak.abcdefgh.tmp",
                ".c.npz.fresh_ab.tmp",  # unmarked (older fcnn), but recent
            ]
            old_unmarked = ".c.npz.old_abcd.tmp"
            for name in [*keep, old_unmarked]:
                (tmp_path / name).write_bytes(b"partial")
            hour_ago = time.time() - 3600
            os.utime(tmp_path / old_unmarked, (hour_ago, hour_ago))
            with atomic_write(path) as f:
                f.write(b"new")
            assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, "c.npz"])
        finally:
            live.kill()


def test_a_full_disk_is_reported_naming_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15: ENOSPC surfaced as ``[Errno 28] No space left on device`` with no file."""
    path = tmp_path / "model.npz"

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fcnn.atomic.os, "fsync", full)
    no_room = r"No space left on device \(nothing was written\): '.*model\.npz'"
    with pytest.raises(OSError, match=no_room) as info, atomic_write(path) as f:
        f.write(b"data")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []


def test_regression_a_full_disk_did_not_say_the_previous_file_was_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24: the full-disk error named the file but not what became of it."""
    path = tmp_path / "model.npz"
    path.write_bytes(b"the previous checkpoint")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fcnn.atomic.os, "fsync", full)
    with pytest.raises(OSError) as info, atomic_write(path) as f:
        f.write(b"half of the new one")
    assert str(info.value) == (
        f"[Errno 28] No space left on device (the previous file is kept unchanged): '{path}'"
    )
    assert path.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


@pytest.mark.parametrize(("code", "kind"), [(errno.EIO, OSError), (errno.EACCES, PermissionError)])
def test_other_write_errors_keep_their_type_and_name_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, kind: type[OSError]
) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("old")

    def broken(src: str, dst: str) -> None:
        raise OSError(code, os.strerror(code), src)

    monkeypatch.setattr(fcnn.atomic.os, "replace", broken)
    kept = r"\(the previous file is kept unchanged\): '.*metrics\.csv'"
    with pytest.raises(kind, match=kept), atomic_write(path, "w") as f:
        f.write("new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_an_error_about_another_file_is_left_as_it_is(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info, atomic_write(tmp_path / "out.txt", "w"):
        open(tmp_path / "missing.txt").close()
    assert info.value.filename == str(tmp_path / "missing.txt")


def test_a_folder_that_refuses_the_temporary_file_is_reported_naming_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_inodes(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / ".x.123.abc.tmp"))

    monkeypatch.setattr(fcnn.atomic.tempfile, "mkstemp", no_inodes)
    refused = r"\(nothing was written\): '.*new\.npz'$"
    with pytest.raises(OSError, match=refused), atomic_write(tmp_path / "new.npz"):
        pass
    assert list(tmp_path.iterdir()) == []
