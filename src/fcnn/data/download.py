"""Where datasets live and how they are fetched: mirrors, checks, atomic writes.

Folder (``data_home``), first that applies:

1. the ``data_dir`` argument (the ``--data-dir DIR`` option of ``train.py`` and
   ``inference_example.py``);
2. the environment variable ``FCNN_DATA_DIR``;
3. ``$XDG_CACHE_HOME/fcnn`` (when that variable holds an absolute path);
4. ``~/.cache/fcnn``.

Each loader keeps its files in a sub-folder (``mnist/``, ``cifar10/``) of that
folder, and also accepts them directly in it.

Fetching (``fetch``, ``fetch_all``) tries the mirrors of a file in order; an HTTP
error, a refused or reset connection, a timeout, a body larger than the size cap,
a body shorter than its ``Content-Length`` or content that fails verification all
move on to the next mirror. The body is streamed (``urllib``) into a temporary
file in the destination folder, verified, flushed, and only then renamed to its
final name (``os.replace``), so an interrupted or refused download never leaves a
file under the final name. When every mirror fails, one ``DatasetNotFoundError``
lists the folders searched, each missing file with its expected checksum, every
URL tried and why it failed, and how to point the library at a local copy.

Only ``http`` and ``https`` URLs are fetched; proxies come from the usual
environment variables (``urllib`` defaults). Nothing here prints: pass a
``progress(done_bytes, total_bytes_or_None)`` callback to show progress.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "DATA_DIR_ENV",
    "Checksum",
    "DatasetNotFoundError",
    "RemoteFile",
    "data_home",
    "fetch",
    "fetch_all",
    "file_digest",
    "missing_message",
]

DATA_DIR_ENV = "FCNN_DATA_DIR"
DEFAULT_TIMEOUT = 30.0  # seconds without progress on one socket operation
_CHUNK = 1 << 20
_USER_AGENT = "fcnn-dataset-fetcher/0.1 (Python urllib)"

Progress = Callable[[int, "int | None"], None]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are neither on disk nor obtainable from any mirror.

    The message lists the folders searched, each missing file with its expected
    checksum and the URLs tried (with the reason each failed), and suggests
    ``--data-dir`` / ``FCNN_DATA_DIR``.
    """


def data_home(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The root folder for datasets (see the module docstring for the order). Not created."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore relative paths
        return Path(xdg) / "fcnn"
    return Path.home() / ".cache" / "fcnn"


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """Hex digest of a file's bytes with ``hashlib`` algorithm ``algorithm`` (streamed)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Checksum:
    """A verifier for a file's raw bytes: ``Checksum("md5", "c32a...")(path)``.

    Calling it raises ``ValueError`` naming the file, the expected and the actual
    digest when they differ. ``str()`` gives ``"md5 c32a..."`` for messages.
    """

    algorithm: str
    hexdigest: str

    def __post_init__(self) -> None:
        if self.algorithm not in hashlib.algorithms_available:
            raise ValueError(f"Checksum: unknown hash algorithm {self.algorithm!r}")

    def __call__(self, path: Path) -> None:
        got = file_digest(path, self.algorithm)
        if got != self.hexdigest.lower():
            raise ValueError(
                f"{path}: {self.algorithm} mismatch: expected {self.hexdigest.lower()}, got {got}"
            )

    def __str__(self) -> str:
        return f"{self.algorithm} {self.hexdigest.lower()}"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch.

    ``filename``: its name in the destination folder (a bare name, no folders).
    ``urls``: full URLs of its mirrors, tried in order.
    ``verify``: called on the downloaded file; raises ``ValueError`` (with the reason)
    when the content is not the expected one. A ``Checksum`` fits.
    ``expected``: a human description of what ``verify`` checks, shown in errors.
    ``max_bytes``: the size cap; a larger body is refused without being kept.
    """

    filename: str
    urls: tuple[str, ...]
    verify: Callable[[Path], None]
    expected: str
    max_bytes: int

    def __post_init__(self) -> None:
        name = self.filename
        if not name or Path(name).name != name or name in (".", "..") or "\\" in name:
            raise ValueError(f"RemoteFile: filename must be a bare file name, got {name!r}")
        if self.max_bytes < 1:
            raise ValueError(f"RemoteFile: max_bytes must be >= 1, got {self.max_bytes}")


def fetch(
    filename: str,
    urls: Sequence[str],
    verify: Callable[[Path], None],
    dest_dir: str | os.PathLike[str],
    *,
    max_bytes: int,
    expected: str | None = None,
    dataset: str = "dataset",
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
) -> Path:
    """Download ``filename`` from the first working mirror into ``dest_dir``; its path.

    When ``dest_dir / filename`` already exists it is returned as is: callers verify
    files on disk when they read them. ``verify`` raises ``ValueError`` on wrong
    content (a ``Checksum`` fits); ``expected`` describes it for the error message
    (defaults to ``str(verify)``). Raises ``DatasetNotFoundError`` when every mirror fails.
    """
    remote = RemoteFile(
        filename=filename,
        urls=tuple(urls),
        verify=verify,
        expected=expected if expected is not None else str(verify),
        max_bytes=max_bytes,
    )
    return fetch_all([remote], dest_dir, dataset=dataset, timeout=timeout, progress=progress)[0]


def fetch_all(
    remotes: Sequence[RemoteFile],
    dest_dir: str | os.PathLike[str],
    *,
    dataset: str = "dataset",
    searched: Sequence[Path] = (),
    note: str = "",
    download: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
) -> list[Path]:
    """Fetch every file not already in ``dest_dir``; their paths, in order.

    If a file fails on every mirror without any server answering (offline), the
    files after it are not tried. Raises one ``DatasetNotFoundError`` listing all
    the files that could not be obtained (``note``, if any, is added to it); files
    fetched before stay in place. ``download=False`` fetches nothing: the files not
    already in ``dest_dir`` are listed with their URLs in the error.
    """
    dest = Path(dest_dir)
    paths: list[Path] = []
    failures: list[tuple[RemoteFile, list[str]]] = []
    offline = False
    for remote in remotes:
        final = dest / remote.filename
        if final.exists():
            paths.append(final)
            continue
        if not download:
            failures.append((remote, []))
            continue
        if offline:
            failures.append((remote, ["not tried: the previous file could not reach any mirror"]))
            continue
        got, attempts, answered = _fetch_one(remote, dest, timeout, progress)
        if got is not None:
            paths.append(got)
        else:
            failures.append((remote, attempts))
            offline = not answered
    if failures:
        folders = list(dict.fromkeys([*searched, dest]))
        raise DatasetNotFoundError(
            missing_message(dataset, folders, failures, downloaded=download, note=note)
        )
    return paths


def missing_message(
    dataset: str,
    searched: Sequence[Path],
    missing: Sequence[tuple[RemoteFile, Sequence[str]]],
    *,
    downloaded: bool,
    note: str = "",
) -> str:
    """The text of a ``DatasetNotFoundError``: folders, files, checksums, URLs, the fix.

    ``missing`` pairs each file with the lines to show under it: the reasons each
    URL failed (``downloaded=True``), or nothing when downloading was off. ``note``
    is a line of dataset-specific advice.
    """
    folders = ", ".join(str(p) for p in dict.fromkeys(searched)) or "(none)"
    lines = [
        f"{dataset}: {len(missing)} file(s) not found in {folders}"
        + (" and could not be downloaded." if downloaded else " (downloading is disabled).")
    ]
    for remote, reasons in missing:
        lines.append(f"  {remote.filename}")
        lines.append(f"    expected: {remote.expected}")
        if downloaded:
            lines.extend(f"    tried: {r}" for r in reasons)
        else:
            lines.extend(f"    url: {u}" for u in remote.urls)
    if note:
        lines.append(note)
    lines.append(
        "Put these files in one of the folders above (or download them by hand from the "
        "URLs listed), or point the library at a folder that holds them: the command's "
        f"--data-dir DIR option, data_dir=DIR in Python, or the environment variable "
        f"{DATA_DIR_ENV}=DIR."
    )
    return "\n".join(lines)


def _fetch_one(
    remote: RemoteFile, dest: Path, timeout: float, progress: Progress | None
) -> tuple[Path | None, list[str], bool]:
    """Try each mirror; (final path or None, one line per attempt, whether any server answered)."""
    attempts: list[str] = []
    answered = False
    for url in remote.urls:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            attempts.append(f"{url} -> refused: only http and https URLs are fetched")
            continue
        try:
            dest.mkdir(parents=True, exist_ok=True)
            return _download(remote, url, dest, timeout, progress), attempts, True
        except urllib.error.HTTPError as e:
            answered = True
            attempts.append(f"{url} -> HTTP {e.code} {e.reason}")
        except _RefusedError as e:
            answered = True
            attempts.append(f"{url} -> {e}")
        except urllib.error.URLError as e:
            attempts.append(f"{url} -> connection failed: {e.reason}")
        except (OSError, http.client.HTTPException) as e:
            # timeouts, resets, short bodies (IncompleteRead), a folder we cannot write
            attempts.append(f"{url} -> {type(e).__name__}: {e}")
    return None, attempts, answered


class _RefusedError(Exception):
    """A server answered but the body was refused (too large, short, wrong content)."""


def _download(
    remote: RemoteFile, url: str, dest: Path, timeout: float, progress: Progress | None
) -> Path:
    """Stream ``url`` to a temporary file in ``dest``, verify it, rename it into place."""
    final = dest / remote.filename
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part", dir=dest)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            _stream(resp, out, remote.max_bytes, progress)
            out.flush()
            os.fsync(out.fileno())
        try:
            remote.verify(tmp)
        except ValueError as e:
            reason = str(e).replace(f"{tmp}: ", "").replace(str(tmp), "the download")
            raise _RefusedError(f"wrong content ({reason})") from e
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are public data, readable by all
        os.replace(tmp, final)
        return final
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _stream(
    resp: http.client.HTTPResponse, out: BinaryIO, max_bytes: int, progress: Progress | None
) -> None:
    """Copy ``resp``'s body to ``out``; ``_RefusedError`` for a body over ``max_bytes``
    (announced or not), one shorter than its ``Content-Length``, or a lost connection."""
    length_header = resp.headers.get("Content-Length")
    total = int(length_header) if length_header and length_header.isdigit() else None
    if total is not None and total > max_bytes:
        raise _RefusedError(f"refused: Content-Length {total} exceeds the cap of {max_bytes} bytes")
    done = 0
    last_report = 0.0
    while True:
        try:
            chunk = resp.read(_CHUNK)
        except (OSError, http.client.HTTPException) as e:
            detail = f"{type(e).__name__}: {e}"
            raise _RefusedError(f"connection lost after {done} bytes ({detail})") from e
        if not chunk:
            break
        done += len(chunk)
        if done > max_bytes:
            raise _RefusedError(f"refused: body over the cap of {max_bytes} bytes")
        out.write(chunk)
        now = time.monotonic()
        if progress is not None and now - last_report >= 0.1:
            progress(done, total)
            last_report = now
    if total is not None and done != total:
        raise _RefusedError(f"incomplete: got {done} of {total} bytes")
    if progress is not None:
        progress(done, total)
