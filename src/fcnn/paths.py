"""Checks that a path names a file to read or to write, made before any work is done.

The command lines (``train.py``, ``inference_example.py``, ``python -m fcnn.export``)
call these first, so a directory given where a file is expected, a missing input or
an unwritable folder is reported in one line, in the same words everywhere::

    check_readable_file("runs/", "checkpoint")
    # PathError: cannot read checkpoint runs/: it is a directory; give a file path
    check_writable_file("runs/model.onnx", make_folder=True)
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["PathError", "check_readable_file", "check_writable_file"]


class PathError(ValueError):
    """A path that cannot serve as the file asked for; the message says why, in one line."""


def _named(verb: str, what: str, path: str) -> str:
    """``"cannot read checkpoint runs/m.npz"``: the start of every message here."""
    return f"cannot {verb} {what + ' ' if what else ''}{path}"


def check_readable_file(path: str | os.PathLike[str], what: str = "") -> None:
    """``PathError`` unless ``path`` is an existing file that can be opened for reading.

    ``what`` (e.g. ``"checkpoint"``) names the file in the message.
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        raise PathError(f"{_named('read', what, p)}: it is a directory; give a file path")
    if not os.path.exists(p):
        raise PathError(f"{_named('read', what, p)}: no such file")
    try:
        with open(p, "rb"):
            pass
    except OSError as err:
        raise PathError(f"{_named('read', what, p)}: {err.strerror or err}") from None


def check_writable_file(
    path: str | os.PathLike[str], what: str = "", *, make_folder: bool = False
) -> None:
    """``PathError`` unless a file can be written at ``path`` (an existing file is fine).

    Refuses a directory; with ``make_folder`` creates the missing folders of ``path``,
    else a missing folder is an error. Writing is proven by creating and removing an
    empty temporary file beside ``path``, so permissions and read-only disks show now.
    """
    p = os.fspath(path)
    if not p:
        raise PathError(f"{_named('write', what, repr(p))}: the path is empty")
    if os.path.isdir(p):
        raise PathError(f"{_named('write', what, p)}: it is a directory; give a file path")
    folder = os.path.dirname(os.path.abspath(p))
    try:
        if make_folder:
            os.makedirs(folder, exist_ok=True)
        elif not os.path.isdir(folder):
            raise PathError(f"{_named('write', what, p)}: the folder {folder} does not exist")
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(p)}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise PathError(f"{_named('write', what, p)}: {err.strerror or err}") from None
