"""The draw-a-digit page served at ``GET /`` (issue 18), tested as a person uses it: in a
real headless Chromium driven by Playwright, against ``python -m fcnn.serve`` started on a
free loopback port with a small model trained here. Also: nothing the server sends needs
the network (the page and ``/docs`` reference no outside script or style).

The browser tests skip, saying why, without Playwright for Python (``pip install -e
".[dev]"``) or a Chromium (``apt-get install -y chromium``; ``.ci/run`` installs it).
Playwright's own browser download is never used: ``FCNN_CHROMIUM`` or ``chromium`` on
the PATH. Set ``FCNN_PAGE_SCREENSHOT=docs/draw_page.png`` to save docs/inference.md's picture
of the page after a digit is drawn.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import train_on_digits

pytest.importorskip("fastapi")
pytest.importorskip("fastapi_offline")
pytest.importorskip("python_multipart")
pytest.importorskip("PIL")

import fcnn
from fcnn.data.images import load_image
from fcnn.io import save_checkpoint
from fcnn.models import build_model, describe_model, load_trained
from fcnn.serve import create_app

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 28, 28)
CLASSES = [str(d) for d in range(10)]
TIMEOUT_MS = 20_000  # any one browser step


def _meta(shape: tuple[int, ...], loss: float, acc: float) -> dict[str, Any]:
    """What train.py stores, for a model trained 2 epochs whose test split scored
    ``loss`` and ``acc``."""
    return {
        "model": describe_model("small", 10),
        "input_shape": list(shape),
        "classes": CLASSES,
        "dataset": "digits-sample",
        "normalization": {"mean": [0.13] * shape[0], "std": [0.31] * shape[0]},
        "epoch": 2,
        "history": [{"epoch": 2, "test_loss": round(loss, 6), "test_acc": round(acc, 6)}],
    }


def _accuracy(path: Path) -> float:
    acc: float = load_trained(path).meta["history"][-1]["test_acc"]
    return acc


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model trained briefly on the embedded digits, as train.py would save it."""
    mean, std = np.array([0.13], np.float32), np.array([0.31], np.float32)
    run = train_on_digits("small", 2000, epochs=2, lr=3e-3, seed=5, stats=(mean, std))
    ds = fcnn.data.load_digits_sample()
    loss, acc = fcnn.evaluate(
        run.model, run.params, run.state, fcnn.data.normalize(ds.x_test, mean, std), ds.y_test
    )
    path = tmp_path_factory.mktemp("page") / "digits.npz"
    save_checkpoint(path, params=run.params, state=run.state, meta=_meta(SHAPE, loss, acc))
    return path


@pytest.fixture(scope="module")
def rgb_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build_model("small", 10)
    params, state, _ = fcnn.init(model, np.random.default_rng(0), (3, 28, 28))
    path = tmp_path_factory.mktemp("page-rgb") / "rgb.npz"
    save_checkpoint(path, params=params, state=state, meta=_meta((3, 28, 28), 2.3, 0.1))
    return path


# --- without a browser: what the server sends -------------------------------------------


@pytest.fixture(scope="module")
def client(checkpoint: Path) -> Iterator[Any]:
    if importlib.util.find_spec("httpx2") is None and importlib.util.find_spec("httpx") is None:
        pytest.skip("the test client needs httpx2 (or httpx)")
    from fastapi.testclient import TestClient

    with TestClient(create_app(checkpoint)) as c:
        yield c


_OUTSIDE = re.compile(
    r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//"""
    r"""|@import\s+(?:url\()?\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//""",
    re.IGNORECASE,
)


@pytest.mark.parametrize("path", ["/", "/page.css", "/docs"])
def test_nothing_served_loads_from_the_network(client: Any, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert _OUTSIDE.search(r.text) is None, _OUTSIDE.search(r.text)
    # Every script and stylesheet a page names is served here.
    for ref in re.findall(r"""<(?:script|link)\b[^>]*\b(?:src|href)="(/[^"]*)\"""", r.text):
        assert client.get(ref).status_code == 200, ref


def test_the_page_and_its_files(client: Any) -> None:
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<canvas id="pad"' in page.text and 'src="/page.js"' in page.text
    js = client.get("/page.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert "/predict/with-input" in js.text and "http" not in js.text.replace("http(s)", "")
    assert client.get("/page.css").headers["content-type"].startswith("text/css")
    docs = client.get("/docs").text
    assert "/static-offline-docs/swagger-ui-bundle.js" in docs


def test_predict_with_input_returns_the_prepared_image(client: Any, checkpoint: Path) -> None:
    from PIL import Image

    ink = np.full((90, 90), 255, np.uint8)
    ink[20:70, 40:46] = 0
    buf = io.BytesIO()
    Image.fromarray(ink, "L").save(buf, "PNG")
    r = client.post("/predict/with-input", files={"file": ("d.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    want_x = load_image(buf.getvalue(), SHAPE)
    np.testing.assert_allclose(np.asarray(body["input"], np.float32), want_x, atol=1e-7)
    plain = client.post("/predict", files={"file": ("d.png", buf.getvalue(), "image/png")})
    assert {k: v for k, v in body.items() if k != "input"} == plain.json()


def test_metadata_names_the_test_accuracy(client: Any, checkpoint: Path) -> None:
    assert 0.5 < _accuracy(checkpoint) < 1.0
    assert client.get("/metadata").json()["test_accuracy"] == _accuracy(checkpoint)


# --- in a real browser ---------------------------------------------------------------------


def _chromium() -> str | None:
    found = os.environ.get("FCNN_CHROMIUM") or shutil.which("chromium")
    return found if found and os.access(found, os.X_OK) else None


needs_browser = pytest.mark.skipif(
    importlib.util.find_spec("playwright") is None or _chromium() is None,
    reason="the page tests need Playwright for Python (pip install -e '.[dev]') and Debian's "
    "chromium (apt-get install -y chromium, or FCNN_CHROMIUM=/path/to/chromium)",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Server:
    """``python -m fcnn.serve`` on a free 127.0.0.1 port, in a child process."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "fcnn.serve", "--checkpoint", str(checkpoint)]
        argv += ["--port", str(self.port), "--log-level", "warning"]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if json.load(r) == {"status": "ok"}:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start: {self.stop()}")
            time.sleep(0.1)

    def stop(self) -> str:
        """Stop the server (killed if need be); what it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            output, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate(timeout=10)
        return output or ""


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start servers for a test: ``serve(checkpoint) -> Server``; all stopped afterwards."""
    started: list[Server] = []

    def start(checkpoint: Path) -> Server:
        started.append(Server(checkpoint))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def server(checkpoint: Path) -> Iterator[Server]:
    """One server for the tests that leave it running."""
    if importlib.util.find_spec("playwright") is None or _chromium() is None:
        pytest.skip("no browser to test with")
    shared = Server(checkpoint)
    try:
        yield shared
    finally:
        shared.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=_chromium(),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
            timeout=60_000,
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; any request that leaves 127.0.0.1 is aborted and recorded in
    ``page.outside`` (the tests assert it stays empty)."""
    context = browser.new_context(viewport={"width": 900, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=TIMEOUT_MS)
    tab = context.new_page()
    tab.outside = []
    tab.console_errors = []

    def guard(route: Any) -> None:
        url = route.request.url
        if url.startswith(("http://127.0.0.1:", "data:", "blob:")):
            route.continue_()
        else:
            tab.outside.append(url)
            route.abort()

    tab.route("**/*", guard)
    tab.on("pageerror", lambda err: tab.console_errors.append(str(err)))
    try:
        yield tab
    finally:
        context.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _open(page: Any, server: Server) -> None:
    page.goto(server.url + "/", wait_until="load")
    expect(page.locator("#model-info")).to_contain_text("test accuracy")


def _stroke(page: Any, points: list[tuple[float, float]]) -> None:
    """One mouse stroke through ``points``, given as fractions of the drawing area."""
    box = page.locator("#pad").bounding_box()

    def at(p: tuple[float, float]) -> tuple[float, float]:
        return box["x"] + p[0] * box["width"], box["y"] + p[1] * box["height"]

    page.mouse.move(*at(points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*at(p), steps=4)
    page.mouse.up()


def _one() -> list[tuple[float, float]]:
    return [(0.5, 0.15), (0.5, 0.5), (0.5, 0.85)]


def _zero() -> list[tuple[float, float]]:
    t = np.linspace(0.0, 2 * np.pi, 40)
    return [(0.5 + 0.24 * float(np.sin(a)), 0.5 - 0.33 * float(np.cos(a))) for a in t]


def _predicted(page: Any) -> str:
    """The prediction shown once the page has its answer (the message is cleared then)."""
    expect(page.locator("#message")).to_have_text("")
    expect(page.locator("#prediction")).not_to_have_text("–")
    text: str = page.locator("#prediction").text_content()
    return text


@needs_browser
def test_drawn_digits_are_predicted(page: Any, server: Server) -> None:
    _open(page, server)
    info = page.locator("#model-info").text_content()
    assert "Model small trained on digits-sample" in info
    assert f"test accuracy {100 * _accuracy(server.checkpoint):.2f}%" in info
    assert "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in info

    _stroke(page, _one())  # a prediction follows every stroke, with no button pressed
    assert _predicted(page) == "1"
    bars = page.locator("#bars li")
    assert bars.count() == 5 and bars.first.locator(".label").text_content() == "1"
    # The 28×28 image the model saw: a light vertical bar on black, centred.
    seen = page.evaluate(
        "() => { const c = document.getElementById('seen');"
        " return [c.width, c.height, Array.from(c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data)]; }"
    )
    assert seen[:2] == [28, 28]
    gray = np.asarray(seen[2], np.float64).reshape(28, 28, 4)[..., 0] / 255
    rows, cols = np.indices(gray.shape)
    centre = ((gray * rows).sum() / gray.sum(), (gray * cols).sum() / gray.sum())
    assert gray.max() > 0.9 and np.allclose(centre, 14.0, atol=1.0)  # centred as MNIST's
    assert gray[:, :8].max() < 0.05 and (gray > 0.5).any(axis=1).sum() >= 18  # tall, thin

    page.get_by_role("button", name="Clear").click()
    assert page.locator("#prediction").text_content() == "–"
    _stroke(page, _zero())
    assert _predicted(page) == "0"
    if os.environ.get("FCNN_PAGE_SCREENSHOT"):
        page.set_viewport_size({"width": 760, "height": 640})
        page.screenshot(path=os.environ["FCNN_PAGE_SCREENSHOT"], full_page=True)
    assert page.outside == [] and page.console_errors == []


@needs_browser
def test_an_empty_canvas_gets_a_clear_message(page: Any, server: Server) -> None:
    _open(page, server)
    page.keyboard.press("Tab")  # keyboard reachable: Tab to "Clear", then to "Classify"
    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.id")
    assert focused == "classify"
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # visible focus
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("The canvas is empty: draw a digit first.")
    assert page.locator("#prediction").text_content() == "–"
    assert page.outside == []


@needs_browser
def test_a_stopped_server_is_reported(page: Any, serve: Any, checkpoint: Path) -> None:
    server = serve(checkpoint)
    _open(page, server)
    server.stop()
    _stroke(page, _one())
    expect(page.locator("#message")).to_contain_text("Cannot reach the server")
    assert "Is python -m fcnn.serve still running?" in page.locator("#message").text_content()


@needs_browser
def test_a_server_error_is_shown(page: Any, server: Server) -> None:
    _open(page, server)

    def refuse(route: Any) -> None:
        route.fulfill(status=503, json={"detail": "not enough memory for this request"})

    page.route("**/predict/with-input", refuse)
    _stroke(page, _one())
    expect(page.locator("#message")).to_contain_text(
        "The server answered 503: not enough memory for this request"
    )


@needs_browser
def test_drawing_is_refused_for_colour_models(page: Any, serve: Any, rgb_checkpoint: Path) -> None:
    server = serve(rgb_checkpoint)
    _open(page, server)
    expect(page.locator("#message")).to_contain_text("Drawing is not supported for this model")
    assert page.get_by_role("button", name="Classify").is_disabled()


@needs_browser
def test_the_page_fits_a_phone(page: Any, server: Server) -> None:
    page.set_viewport_size({"width": 360, "height": 740})
    _open(page, server)
    wide = page.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= 360  # no sideways scrolling
    pad = page.locator("#pad").bounding_box()
    assert 240 <= pad["width"] <= 360 and abs(pad["width"] - pad["height"]) < 1.5
    for name in ("Clear", "Classify"):
        assert page.get_by_role("button", name=name).bounding_box()["height"] >= 44
    _stroke(page, _one())  # drawing still works at this size
    assert _predicted(page) == "1"


@needs_browser
def test_the_api_docs_render_offline(page: Any, server: Server) -> None:
    page.goto(server.url + "/docs", wait_until="load")
    page.locator(".swagger-ui .opblock").first.wait_for()
    assert page.locator(".swagger-ui .opblock").count() >= 5
    expect(page.locator("body")).to_contain_text("/predict/with-input")
    assert page.outside == [] and page.console_errors == []


def test_there_is_no_redoc_page_that_would_fetch_its_logo_from_a_cdn(server: Server) -> None:
    """ReDoc's bundle loads its logo from cdn.redoc.ly (seen by the guard at times), so the
    server offers /docs alone."""
    with urllib.request.urlopen(server.url + "/docs", timeout=10) as ok:
        assert ok.status == 200
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(server.url + "/redoc", timeout=10)
    assert missing.value.code == 404


@needs_browser
def test_the_guard_sees_requests_that_leave_the_machine(page: Any) -> None:
    """The `page.outside == []` assertions above can fail: a page that loads from
    elsewhere is caught (and the request aborted, so nothing leaves)."""
    page.set_content(
        '<img src="https://example.invalid/x.png"><script src="http://cdn.invalid/a.js"></script>'
    )
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while len(page.outside) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert sorted(page.outside) == ["http://cdn.invalid/a.js", "https://example.invalid/x.png"]
