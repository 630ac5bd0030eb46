"""fcnn.data.download: data folder resolution, mirrors, atomic writes, refusals, error text.

Every download goes to a local ``http.server`` on 127.0.0.1 run in a thread; an
"offline" mirror is a port on 127.0.0.1 that was just closed. No other host is contacted.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import clear_proxies, closed_port_url, serving

from fcnn.data.download import (
    Checksum,
    DatasetNotFoundError,
    RemoteFile,
    data_home,
    fetch,
    fetch_all,
)

PAYLOAD = bytes(range(256)) * 40  # 10240 bytes
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
HTML = b"<!DOCTYPE html><html><body>Please sign in</body></html>"

Route = Callable[[BaseHTTPRequestHandler], None]


def _send(body: bytes, content_type: str = "application/octet-stream") -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return route


def _cut(h: BaseHTTPRequestHandler) -> None:
    """Announce the whole payload, send half of it, then drop the connection."""
    h.send_response(200)
    h.send_header("Content-Length", str(len(PAYLOAD)))
    h.end_headers()
    h.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
    h.wfile.flush()
    h.close_connection = True


def _no_length(h: BaseHTTPRequestHandler) -> None:
    """HTTP/1.0 body ended by closing the connection, so no size is known in advance."""
    h.send_response(200)
    h.end_headers()
    h.wfile.write(PAYLOAD)


def _stalled(release: threading.Event, sent: list[bool]) -> Route:
    """Hold the response until ``release`` is set (10 s at most), then send the payload.

    ``sent`` records that the body went out. A client that honours a short timeout has
    given up before that; one that ignores it (no timeout, or fetch's 30 s default)
    gets the payload after the 10 s bound and the download succeeds.
    """

    def route(h: BaseHTTPRequestHandler) -> None:
        release.wait(timeout=10.0)
        sent.append(True)
        _send(PAYLOAD)(h)

    return route


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        server.hits.append(self.path)
        route = server.routes.get(self.path)
        try:
            if route is None:
                self.send_error(404, "Not Found")
            else:
                route(self)
        except OSError:  # the client gave up (timeout tests): nothing to do
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    with serving(srv):
        yield srv


@pytest.fixture
def closed_url() -> str:
    """A URL on 127.0.0.1 whose port nothing listens on: connection refused, at once."""
    return closed_port_url("file.bin")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_proxies(monkeypatch)


def _fetch(urls: list[str], dest: Path, **kw: object) -> Path:
    return fetch(
        "file.bin",
        urls,
        Checksum("sha256", PAYLOAD_SHA),
        dest,
        max_bytes=kw.pop("max_bytes", 1 << 20),  # type: ignore[arg-type]
        timeout=kw.pop("timeout", 5.0),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


# --- data_home -------------------------------------------------------------------


def test_data_home_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FCNN_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert data_home() == tmp_path / "home" / ".cache" / "fcnn"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert data_home() == tmp_path / "home" / ".cache" / "fcnn"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_home() == tmp_path / "xdg" / "fcnn"
    monkeypatch.setenv("FCNN_DATA_DIR", str(tmp_path / "env"))
    assert data_home() == tmp_path / "env"
    assert data_home(tmp_path / "arg") == tmp_path / "arg"
    assert data_home("~/x") == tmp_path / "home" / "x"
    assert not (tmp_path / "env").exists()  # resolving never creates anything


# --- mirrors and atomic writes -----------------------------------------------------


def test_falls_through_404_and_refused_to_a_working_mirror(
    server: _Server, closed_url: str, tmp_path: Path
) -> None:
    server.routes["/good/file.bin"] = _send(PAYLOAD)
    urls = [f"{server.url}/gone/file.bin", closed_url, f"{server.url}/good/file.bin"]
    path = _fetch(urls, tmp_path / "dest")
    assert path == tmp_path / "dest" / "file.bin"
    assert path.read_bytes() == PAYLOAD
    assert server.hits == ["/gone/file.bin", "/good/file.bin"]
    assert _leftovers(tmp_path / "dest") == ["file.bin"]


def test_existing_file_is_returned_without_network(closed_url: str, tmp_path: Path) -> None:
    (tmp_path / "file.bin").write_bytes(b"already here")
    assert _fetch([closed_url], tmp_path).read_bytes() == b"already here"


def test_cut_connection_leaves_no_file_under_the_final_name(
    server: _Server, tmp_path: Path
) -> None:
    server.routes["/cut/file.bin"] = _cut
    with pytest.raises(DatasetNotFoundError, match=r"incomplete|connection lost") as info:
        _fetch([f"{server.url}/cut/file.bin"], tmp_path)
    assert "file.bin" in str(info.value)
    assert _leftovers(tmp_path) == []  # neither file.bin nor a .part


def test_cut_connection_falls_through_to_next_mirror(server: _Server, tmp_path: Path) -> None:
    server.routes["/cut/file.bin"] = _cut
    server.routes["/good/file.bin"] = _send(PAYLOAD)
    path = _fetch([f"{server.url}/cut/file.bin", f"{server.url}/good/file.bin"], tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == ["file.bin"]


def test_wrong_content_is_refused(server: _Server, tmp_path: Path) -> None:
    server.routes["/html/file.bin"] = _send(HTML, "text/html")
    with pytest.raises(DatasetNotFoundError) as info:
        _fetch([f"{server.url}/html/file.bin"], tmp_path)
    msg = str(info.value)
    assert "wrong content" in msg and "sha256 mismatch" in msg
    assert hashlib.sha256(HTML).hexdigest() in msg
    assert _leftovers(tmp_path) == []


def test_size_cap_with_content_length(server: _Server, tmp_path: Path) -> None:
    server.routes["/file.bin"] = _send(PAYLOAD)
    with pytest.raises(DatasetNotFoundError, match="exceeds the cap of 1000 bytes"):
        _fetch([f"{server.url}/file.bin"], tmp_path, max_bytes=1000)
    assert _leftovers(tmp_path) == []


def test_size_cap_without_content_length(server: _Server, tmp_path: Path) -> None:
    server.routes["/file.bin"] = _no_length
    with pytest.raises(DatasetNotFoundError, match="over the cap of 1000 bytes"):
        _fetch([f"{server.url}/file.bin"], tmp_path, max_bytes=1000)
    assert _leftovers(tmp_path) == []
    # within the cap, a body without Content-Length is fine
    assert _fetch([f"{server.url}/file.bin"], tmp_path).read_bytes() == PAYLOAD


def test_stalled_server_times_out(server: _Server, tmp_path: Path) -> None:
    release = threading.Event()
    sent: list[bool] = []
    server.routes["/file.bin"] = _stalled(release, sent)
    try:
        with pytest.raises(DatasetNotFoundError, match="timed out"):
            _fetch([f"{server.url}/file.bin"], tmp_path, timeout=0.2)
        assert sent == []  # the client gave up while the server still held the response
    finally:
        release.set()
    assert _leftovers(tmp_path) == []


def test_only_http_urls_are_fetched(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(PAYLOAD)
    with pytest.raises(DatasetNotFoundError, match="only http and https"):
        _fetch([secret.as_uri()], tmp_path / "dest")
    assert _leftovers(tmp_path / "dest") == []


def test_progress_reports_the_end(server: _Server, tmp_path: Path) -> None:
    server.routes["/file.bin"] = _send(PAYLOAD)
    seen: list[tuple[int, int | None]] = []
    _fetch([f"{server.url}/file.bin"], tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))


# --- the error when nothing works ----------------------------------------------------


def test_offline_error_lists_folder_files_checksums_urls_and_the_fix(
    closed_url: str, tmp_path: Path
) -> None:
    urls = [closed_url, closed_url.replace("file.bin", "mirror2/file.bin")]
    with pytest.raises(DatasetNotFoundError) as info:
        _fetch(urls, tmp_path / "data", dataset="Toy")
    err = info.value
    assert isinstance(err, FileNotFoundError)
    msg = str(err)
    assert msg.startswith("Toy:")
    assert str(tmp_path / "data") in msg
    assert "file.bin" in msg
    assert f"sha256 {PAYLOAD_SHA}" in msg
    for u in urls:
        assert u in msg
    assert "connection failed" in msg
    assert "--data-dir" in msg and "FCNN_DATA_DIR" in msg


def test_fetch_all_stops_trying_when_offline(closed_url: str, tmp_path: Path) -> None:
    check = Checksum("sha256", PAYLOAD_SHA)
    remotes = [RemoteFile(f"f{i}.bin", (closed_url,), check, str(check), 1 << 20) for i in range(3)]
    with pytest.raises(DatasetNotFoundError) as info:
        fetch_all(remotes, tmp_path, dataset="Toy", searched=[tmp_path / "elsewhere"], timeout=5)
    msg = str(info.value)
    assert "3 file(s)" in msg
    assert msg.count("not tried") == 2
    assert str(tmp_path / "elsewhere") in msg and str(tmp_path) in msg


def test_fetch_all_keeps_going_after_a_404(server: _Server, tmp_path: Path) -> None:
    server.routes["/b.bin"] = _send(PAYLOAD)
    check = Checksum("sha256", PAYLOAD_SHA)
    remotes = [
        RemoteFile(n, (f"{server.url}/{n}",), check, str(check), 1 << 20)
        for n in ("a.bin", "b.bin")
    ]
    with pytest.raises(DatasetNotFoundError) as info:
        fetch_all(remotes, tmp_path, timeout=5)
    assert "1 file(s)" in str(info.value) and "HTTP 404" in str(info.value)
    assert _leftovers(tmp_path) == ["b.bin"]  # what was fetched stays


def test_fetch_all_without_download_lists_the_missing_and_asks_no_server(
    server: _Server, tmp_path: Path
) -> None:
    """download=False: files already there are fine, the rest are named with their URLs."""
    server.routes["/b.bin"] = _send(PAYLOAD)
    check = Checksum("sha256", PAYLOAD_SHA)
    remotes = [
        RemoteFile(n, (f"{server.url}/{n}",), check, str(check), 1 << 20)
        for n in ("a.bin", "b.bin")
    ]
    (tmp_path / "a.bin").write_bytes(PAYLOAD)
    assert fetch_all(remotes[:1], tmp_path, download=False) == [tmp_path / "a.bin"]
    with pytest.raises(DatasetNotFoundError) as info:
        fetch_all(remotes, tmp_path, dataset="Toy", download=False)
    msg = str(info.value)
    assert "Toy: 1 file(s) not found" in msg and "(downloading is disabled)" in msg
    assert f"url: {server.url}/b.bin" in msg and "tried:" not in msg
    assert server.hits == [] and _leftovers(tmp_path) == ["a.bin"]


# --- small pieces ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a/b.bin", "../x", "..", ".", "a\\b"])
def test_remote_file_needs_a_bare_name(name: str) -> None:
    check = Checksum("md5", "0" * 32)
    with pytest.raises(ValueError, match="bare file name"):
        RemoteFile(name, ("http://127.0.0.1/x",), check, "x", 10)


def test_checksum(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(PAYLOAD)
    Checksum("sha256", PAYLOAD_SHA.upper())(f)
    with pytest.raises(ValueError, match=r"md5 mismatch: expected 0{32}, got"):
        Checksum("md5", "0" * 32)(f)
    with pytest.raises(ValueError, match="unknown hash algorithm"):
        Checksum("nope", "00")
