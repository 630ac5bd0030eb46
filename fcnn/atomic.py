"""Atomic file writes: the whole new file, or the old one untouched.

    with atomic_write("runs/metrics.csv", "w") as f:
        f.write(text)

The data goes to a temporary file in the destination folder; only when the block
finishes without an exception is it flushed, fsynced and renamed over ``path``
(``os.replace``, atomic on POSIX and Windows), so a crash, an error or Ctrl-C
never leaves a half-written file under the final name. Checkpoints, metrics,
plots, ONNX files and benchmark results are all written this way.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["atomic_write"]


def _fsync_dir(folder: str) -> None:
    """Make the rename durable; not every platform can open a folder, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """A file object (``mode`` ``"wb"`` or ``"w"``, UTF-8) whose contents replace ``path``.

    The folder of ``path`` must exist. An existing file keeps its permission bits;
    a new one gets ``0o644``. On an exception the temporary file is removed and
    ``path`` is left as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    try:
        perms = os.stat(target).st_mode & 0o777
    except FileNotFoundError:
        perms = 0o644
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    try:
        encoding = "utf-8" if mode == "w" else None
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, perms)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
