"""Atomic file writes: the whole new file, or the old one untouched.

    with atomic_write("runs/metrics.csv", "w") as f:
        f.write(text)

The data goes to a temporary file in the destination folder; only when the block
finishes without an exception is it flushed, fsynced and renamed over ``path``
(``os.replace``, atomic on POSIX and Windows), so a crash, an error or Ctrl-C
never leaves a half-written file under the final name. Checkpoints, metrics,
plots, ONNX files and benchmark results are all written this way.

The temporary file is named ``.<name>.<pid>.<random>.tmp`` beside the target. A process
killed mid-write (``kill -9``, a power cut) cannot remove its own, so every write first
removes the temporary files of the same target whose process is gone (and unmarked ones
from older versions of fcnn once they are ten minutes old). An error while writing (a full
disk or quota, an I/O error, a folder that refuses the temporary file) is reported naming
the target and saying what became of it: ``[Errno 28] No space left on device (the
previous file is kept unchanged): 'runs/model.npz'``, or ``(nothing was written)`` when
there was no file before.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["atomic_write"]


# Temporary files without a pid (older fcnn) count as stale after this many seconds.
_UNMARKED_STALE_S = 600


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists; anything else: do not guess
        return True
    return True


def _remove_stale_temps(folder: str, name: str) -> None:
    """Remove ``.<name>.<pid>.<random>.tmp`` files in ``folder`` left by dead processes.

    Only the temporary files of this target; never one of a live process (another
    writer of the same file), nor this process's own. Errors are ignored: cleaning up
    is a courtesy, the write goes ahead regardless.
    """
    marked = re.compile(rf"\.{re.escape(name)}\.(\d+)\.[a-z0-9_]+\.tmp")
    unmarked = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.tmp")
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        found = marked.fullmatch(entry)
        path = os.path.join(folder, entry)
        with contextlib.suppress(OSError):
            if found:
                pid = int(found.group(1))
                if pid != os.getpid() and not _alive(pid):
                    os.unlink(path)
            elif unmarked.fullmatch(entry) and (
                time.time() - os.stat(path).st_mtime > _UNMARKED_STALE_S
            ):
                os.unlink(path)


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
    ``path`` is left as it was; an ``OSError`` of the write itself (a full disk, an I/O
    error) is re-raised with the same errno naming ``path`` and saying the previous
    file is kept unchanged (or that nothing was written). Stale temporary files of
    ``path`` (their process is gone) are removed first.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    try:
        perms: int | None = os.stat(target).st_mode & 0o777
    except FileNotFoundError:
        perms = None
    name = os.path.basename(target)
    _remove_stale_temps(folder, name)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.{os.getpid()}.", suffix=".tmp")
    except OSError as err:  # no room for even an empty file, a folder we cannot write
        raise _naming_target(err, target, kept=perms is not None) from err
    try:
        encoding = "utf-8" if mode == "w" else None
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644 if perms is None else perms)
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno and err.filename in (None, tmp, target):
            raise _naming_target(err, target, kept=perms is not None) from err
        raise
    _fsync_dir(folder)


def _naming_target(err: OSError, target: str, kept: bool) -> OSError:
    """``err`` (same errno, so the same ``OSError`` subclass) naming ``target`` instead of
    the temporary file, and saying what became of the file already there."""
    what = "the previous file is kept unchanged" if kept else "nothing was written"
    code = err.errno or 0
    return OSError(code, f"{err.strerror or os.strerror(code)} ({what})", target)
