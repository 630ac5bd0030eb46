"""atomic_write: the whole new file, or the old one untouched and no temporary left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

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
