"""The inference server through FastAPI's test client: endpoints, bad input, concurrency.

Skipped without the ``serve`` extra (FastAPI, python-multipart, Pillow) and an
HTTP client for the test client (httpx2, or httpx for older Starlette).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import struct
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import train_on_digits

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("PIL")
if importlib.util.find_spec("httpx2") is None and importlib.util.find_spec("httpx") is None:
    pytest.skip("the test client needs httpx2 (or httpx)", allow_module_level=True)
try:
    from fastapi.testclient import TestClient
except (ImportError, RuntimeError) as err:  # Starlette raises RuntimeError without its client
    pytest.skip(f"no test client: {err}", allow_module_level=True)

from PIL import Image

import fcnn
from fcnn.data.images import load_image
from fcnn.io import CheckpointError, save_checkpoint
from fcnn.models import Trained, describe_model
from fcnn.run import RunRecord
from fcnn.serve import ServeLimits, create_app, main

SHAPE = (1, 28, 28)
CLASSES = tuple(str(i) for i in range(10))
LIMITS = ServeLimits(
    max_image_bytes=100_000, max_json_bytes=300_000, max_pixels=1_000_000, max_batch=8
)


def _meta() -> dict[str, Any]:
    return {
        "model": describe_model("small", 10),
        "input_shape": list(SHAPE),
        "classes": list(CLASSES),
        "dataset": "digits-sample",
        "normalization": {"mean": [0.13], "std": [0.31]},
        "epoch": 2,
    }


@pytest.fixture(scope="module")
def trained() -> Trained:
    """The small model, briefly trained on embedded digits so its answers differ by input."""
    mean, std = np.array([0.13], np.float32), np.array([0.31], np.float32)
    # about 88% right on the test digits
    run = train_on_digits("small", 512, epochs=2, lr=3e-3, seed=11, stats=(mean, std))
    meta = _meta()
    record = RunRecord.from_meta(meta)
    return Trained(run.model, run.params, run.state, SHAPE, CLASSES, mean, std, meta, record)


@pytest.fixture(scope="module")
def client(trained: Trained) -> Iterator[TestClient]:
    with TestClient(create_app(trained, LIMITS)) as c:
        yield c


def _digit_png(index: int = 0, size: int = 56, fmt: str = "PNG", mode: str = "L") -> bytes:
    """An embedded test digit drawn dark on light, enlarged, encoded as ``fmt``."""
    ds = fcnn.data.load_digits_sample()
    pixels = np.round((1.0 - ds.x_test[index, 0]) * 255).astype(np.uint8)
    im = Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.BILINEAR).convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width × height`` grayscale pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _upload(data: bytes, name: str = "digit.png", ctype: str = "image/png") -> dict[str, Any]:
    return {"files": {"file": (name, data, ctype)}}


def _check_prediction(body: dict[str, Any], want: np.ndarray) -> None:
    probs = np.asarray(body["probabilities"])
    assert probs.shape == (len(CLASSES),)
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(probs, want, rtol=1e-6, atol=1e-7)
    assert body["index"] == int(np.argmax(want))
    assert body["label"] == CLASSES[body["index"]]
    assert body["probability"] == pytest.approx(float(want.max()), rel=1e-6)


# --- endpoints -------------------------------------------------------------------------------


def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_metadata(client: TestClient) -> None:
    r = client.get("/metadata")
    assert r.status_code == 200
    body = r.json()
    assert body["fcnn_version"] == fcnn.__version__
    assert body["model"] == describe_model("small", 10)
    assert body["classes"] == list(CLASSES)
    assert body["input_shape"] == list(SHAPE)
    assert body["normalization"]["mean"] == pytest.approx([0.13])
    assert body["dataset"] == "digits-sample" and body["epoch"] == 2
    assert body["limits"]["max_batch"] == LIMITS.max_batch


def test_openapi_page(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()
    schema = client.get("/openapi.json").json()
    assert {"/health", "/metadata", "/predict", "/predict/array"} <= set(schema["paths"])
    array_body = schema["paths"]["/predict/array"]["post"]["requestBody"]
    assert "application/json" in array_body["content"]
    assert "multipart/form-data" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    # Issue 18: / is the draw-a-digit page now (tests/test_page.py), no longer a redirect.
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    ("fmt", "mode", "ctype"),
    [("PNG", "L", "image/png"), ("PNG", "RGBA", "image/png"), ("JPEG", "RGB", "image/jpeg")],
)
def test_predict_image_same_as_model(
    client: TestClient, trained: Trained, fmt: str, mode: str, ctype: str
) -> None:
    data = _digit_png(3, fmt=fmt, mode=mode)
    r = client.post("/predict", **_upload(data, f"d.{fmt.lower()}", ctype))
    assert r.status_code == 200, r.text
    want = trained.predict_proba(load_image(data, SHAPE)[None])[0]
    _check_prediction(r.json(), want)


def test_predict_image_reads_the_digit(client: TestClient) -> None:
    """Light-background uploads are inverted MNIST-style: most digits come out right."""
    ds = fcnn.data.load_digits_sample()
    right = sum(
        client.post("/predict", **_upload(_digit_png(i))).json()["index"] == ds.y_test[i]
        for i in range(20)
    )
    assert right >= 12  # about 16 in practice


def test_predict_array_same_as_model(client: TestClient, trained: Trained) -> None:
    x = np.random.default_rng(4).random((5, *SHAPE), dtype=np.float32)
    r = client.post("/predict/array", json=x.tolist())
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 5
    want = trained.predict_proba(x)
    for body, w in zip(preds, want, strict=True):
        _check_prediction(body, w)


def test_batch_is_one_forward_pass(trained: Trained) -> None:
    calls: list[int] = []
    inner = trained.model.apply

    def counting_apply(params: Any, state: Any, x: Any, ctx: Any) -> Any:
        calls.append(len(x))
        return inner(params, state, x, ctx)

    counted = dataclasses.replace(
        trained, model=dataclasses.replace(trained.model, apply=counting_apply)
    )
    c = TestClient(create_app(counted, LIMITS))
    x = np.random.default_rng(5).random((LIMITS.max_batch, *SHAPE), dtype=np.float32)
    assert c.post("/predict/array", json=x.tolist()).status_code == 200
    assert calls == [LIMITS.max_batch]


def test_app_from_checkpoint_loads_once(
    tmp_path: Path, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.npz"
    save_checkpoint(path, params=trained.params, state=trained.state, meta=_meta())
    import fcnn.serve.app as serve

    loads: list[str] = []
    real = serve.load_trained

    def counting_load(p: Any) -> Trained:
        loads.append(str(p))
        return real(p)

    monkeypatch.setattr(serve, "load_trained", counting_load)
    c = TestClient(create_app(path))
    x = np.random.default_rng(6).random((2, *SHAPE), dtype=np.float32)
    for _ in range(3):
        r = c.post("/predict/array", json=x.tolist())
        assert r.status_code == 200
    assert loads == [str(path)]
    _check_prediction(r.json()["predictions"][1], trained.predict_proba(x)[1])


def test_app_from_bad_checkpoint_raises(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        create_app(bad)
    with pytest.raises(OSError):
        create_app(tmp_path / "missing.npz")


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(ServeLimits)])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=f"ServeLimits.{field}"):
        ServeLimits(**{field: 0})


# --- bad input -------------------------------------------------------------------------------


def _chunks(total: int, size: int = 16_384) -> Iterator[bytes]:
    """A body sent chunked, without a Content-Length."""
    for start in range(0, total, size):
        yield b"0" * min(size, total - start)


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buf, "GIF")
    return buf.getvalue()


def _big_black_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (1500, 1000), 0).save(buf, "PNG")  # 1.5 megapixels in a few kB
    return buf.getvalue()


def _json(body: bytes | str) -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": "application/json"}}


def _array(shape: tuple[int, ...], value: float = 0.5) -> str:
    return str(np.full(shape, value).tolist())


# (id, path, request kwargs, status, part of the message)
BAD: list[tuple[str, str, Any, int, str]] = [
    ("text-file", "/predict", _upload(b"hello, world", "a.txt", "text/plain"), 400, "not an image"),
    ("empty-file", "/predict", _upload(b""), 400, "empty"),
    ("gif", "/predict", _upload(_gif(), "a.gif", "image/gif"), 415, "unsupported image format GIF"),
    (
        "unknown-bytes-declared-webp",
        "/predict",
        _upload(b"\x00\x01garbage", "a.webp", "image/webp"),
        415,
        "unsupported image type image/webp",
    ),
    ("png-bad-header", "/predict", _upload(b"\x89PNG\r\n\x1a\n" + b"x" * 40), 400, "corrupt"),
    ("png-truncated", "/predict", _upload(_digit_png()[:60]), 400, "cannot be decoded"),
    (
        "jpeg-truncated-header",
        "/predict",
        _upload(_digit_png(fmt="JPEG")[:300], "a.jpg", "image/jpeg"),
        400,
        "header is corrupt or truncated",
    ),
    (
        "jpeg-truncated-data",
        "/predict",
        _upload(_digit_png(fmt="JPEG")[:-200], "a.jpg", "image/jpeg"),
        400,
        "cannot be decoded",
    ),
    ("too-many-pixels", "/predict", _upload(_big_black_png()), 413, "more than the limit"),
    ("decompression-bomb", "/predict", _upload(_png_bomb(40_000, 40_000)), 413, "pixels"),
    (
        "upload-over-limit",
        "/predict",
        _upload(b"\x89PNG\r\n\x1a\n" + b"0" * 200_000),
        413,
        "larger than the limit",
    ),
    (
        "upload-over-limit-chunked",
        "/predict",
        {
            "content": _chunks(400_000),
            "headers": {"content-type": "multipart/form-data; boundary=xyz"},
        },
        413,
        "larger than the limit",
    ),
    ("no-file-field", "/predict", {"data": {"other": "1"}}, 422, "file"),
    ("json-to-predict", "/predict", {"json": [1, 2]}, 422, "file"),
    (
        "raw-image-body",
        "/predict",
        {"content": _digit_png(), "headers": {"content-type": "image/png"}},
        422,
        "multipart/form-data field 'file'",
    ),
    ("not-json", "/predict/array", _json(b"[0.5, "), 400, "not valid JSON"),
    ("empty-body", "/predict/array", _json(b""), 400, "empty"),
    ("json-object", "/predict/array", _json(b'{"images": []}'), 422, "got a JSON dict"),
    ("empty-array", "/predict/array", _json(b"[]"), 422, "empty array"),
    ("wrong-shape", "/predict/array", _json(_array((2, 1, 28, 27))), 422, "(2, 1, 28, 27)"),
    ("one-image-no-batch-axis", "/predict/array", _json(_array(SHAPE)), 422, "(1, 28, 28)"),
    ("ragged", "/predict/array", _json(b"[[[[0.5, 0.5], [0.5]]]]"), 422, "ragged"),
    ("strings", "/predict/array", _json(b'[[[["a"]]]]'), 422, "non-numbers"),
    ("nan", "/predict/array", _json(_array((1, *SHAPE), np.nan).replace("nan", "NaN")), 422, "NaN"),
    (
        "infinity",
        "/predict/array",
        _json(_array((1, *SHAPE)).replace("0.5", "Infinity", 1)),
        422,
        "infinite",
    ),
    (
        "overflow",
        "/predict/array",
        _json(_array((1, *SHAPE)).replace("0.5", "1e999", 1)),
        422,
        "infinite",
    ),
    ("null", "/predict/array", _json(_array((1, *SHAPE)).replace("0.5", "null", 1)), 422, "null"),
    # Issue 15: NumPy read these as 1.0, 0.0 and 0.5.
    ("true", "/predict/array", _json(_array((1, *SHAPE)).replace("0.5", "true", 1)), 422, "true"),
    (
        "false",
        "/predict/array",
        _json(_array((1, *SHAPE)).replace("0.5", "false", 1)),
        422,
        "false",
    ),
    (
        "str-num",
        "/predict/array",
        _json(_array((1, *SHAPE)).replace("0.5", '"0.5"', 1)),
        422,
        '"0.5"',
    ),
    ("strip", "/predict", _upload(_png_bomb(20_000, 1)), 422, "20000×1 is a strip"),
    ("out-of-range", "/predict/array", _json(_array((1, *SHAPE), 255.0)), 422, "[0, 1]"),
    ("too-many-images", "/predict/array", _json(_array((9, 1, 1, 1))), 413, "limit is 8"),
    # Issue 24: refused from a count of its brackets, before parsing (was 400 "nested").
    ("deep-nesting", "/predict/array", _json(b"[" * 100_000 + b"]" * 100_000), 413, "arrays"),
    (
        "wrong-content-type",
        "/predict/array",
        {"content": b"[]", "headers": {"content-type": "text/csv"}},
        415,
        "application/json",
    ),
    (
        "json-over-limit",
        "/predict/array",
        _json(b"[" + b"0," * 200_000 + b"0]"),
        413,
        "larger than the limit",
    ),
    (
        "json-over-limit-chunked",
        "/predict/array",
        {"content": _chunks(400_000), "headers": {"content-type": "application/json"}},
        413,
        "larger than the limit",
    ),
]


def _send(client: TestClient, path: str, kwargs: Any) -> Any:
    # Generators are single-use: make a fresh one for each send.
    if "content" in kwargs and not isinstance(kwargs["content"], bytes | str):
        kwargs = {**kwargs, "content": _chunks(400_000)}
    return client.post(path, **kwargs)


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_input_is_a_clear_4xx(
    client: TestClient, path: str, kwargs: Any, status: int, message: str
) -> None:
    r = _send(client, path, kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and message in detail, detail


def test_regression_upload_header_was_parsed_twice(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve.py read the size with Pillow itself before decode_image read it again."""
    opened: list[int] = []
    inner = Image.open

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(1)
        return inner(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    r = client.post("/predict", **_upload(_digit_png()))
    assert r.status_code == 200, r.text
    assert len(opened) == 1


def test_server_keeps_serving_after_every_bad_input(client: TestClient, trained: Trained) -> None:
    good = _digit_png(1)
    want = trained.predict_proba(load_image(good, SHAPE)[None])[0]
    for name, path, kwargs, status, _ in BAD:
        r = _send(client, path, kwargs)
        assert r.status_code == status, (name, r.status_code, r.text)
        ok = client.post("/predict", **_upload(good))
        assert ok.status_code == 200, (name, ok.text)
        _check_prediction(ok.json(), want)
    assert client.get("/health").status_code == 200


def test_invalid_content_length_header(client: TestClient) -> None:
    from starlette.types import Message

    from fcnn.serve.body import BodyGuard, ByteBudget

    sent: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never reached
        raise AssertionError("the body limit should have answered")

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    import anyio

    limiter = BodyGuard(app, ServeLimits(max_json_bytes=100), ByteBudget(1000))
    for value, status in ((b"abc", 400), (b"-1", 400), (b"101", 413)):
        sent.clear()
        scope = {"type": "http", "path": "/predict/array", "headers": [(b"content-length", value)]}
        anyio.run(limiter, scope, receive, send)
        assert sent[0]["status"] == status


# --- concurrency -----------------------------------------------------------------------------


def test_concurrent_requests_get_their_own_answers(client: TestClient, trained: Trained) -> None:
    rng = np.random.default_rng(7)
    xs = rng.random((12, 1, *SHAPE), dtype=np.float32)
    images = [_digit_png(i) for i in range(4)]
    want_arrays = [trained.predict_proba(x)[0] for x in xs]
    want_images = [trained.predict_proba(load_image(d, SHAPE)[None])[0] for d in images]
    barrier = threading.Barrier(8)

    def ask_array(i: int) -> tuple[str, int, Any]:
        barrier.wait(timeout=30) if i < 8 else None
        r = client.post("/predict/array", json=xs[i].tolist())
        return "array", i, r

    def ask_image(i: int) -> tuple[str, int, Any]:
        r = client.post("/predict", **_upload(images[i]))
        return "image", i, r

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(ask_array, i) for i in range(len(xs))]
        futures += [pool.submit(ask_image, i) for i in range(len(images))]
        results = [f.result(timeout=60) for f in futures]
    for kind, i, r in results:
        assert r.status_code == 200, r.text
        if kind == "array":
            _check_prediction(r.json()["predictions"][0], want_arrays[i])
        else:
            _check_prediction(r.json(), want_images[i])


# --- command line ----------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path: Path, trained: Trained) -> Path:
    path = tmp_path / "m.npz"
    save_checkpoint(path, params=trained.params, state=trained.state, meta=_meta())
    return path


def test_main_loads_then_runs_uvicorn(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    import fcnn.runtime
    from fcnn.serve.guards import GuardedH11Protocol

    runs: list[dict[str, Any]] = []
    tuned: list[bool] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append({"app": app, **kw}))
    monkeypatch.setattr(fcnn.runtime, "tune_allocator", lambda: tuned.append(True))
    assert main(["--checkpoint", str(checkpoint)]) == 0
    assert runs[0]["host"] == "127.0.0.1" and runs[0]["port"] == 8000
    # The server keeps glibc's default trim threshold (issue 15: raised, it kept every
    # worker thread's freed image buffers), and guards its connections.
    assert tuned == []
    assert runs[0]["timeout_keep_alive"] == 5 and 8 <= runs[0]["backlog"] <= 128
    assert runs[0]["http"].func is GuardedH11Protocol
    c = TestClient(runs[0]["app"])
    assert c.get("/metadata").json()["classes"] == list(CLASSES)

    argv = [
        "--checkpoint",
        str(checkpoint),
        "--host",
        "0.0.0.0",
        "--port",
        "9001",
        "--max-batch",
        "2",
    ]
    assert main(argv) == 0
    assert runs[1]["host"] == "0.0.0.0" and runs[1]["port"] == 9001
    c = TestClient(runs[1]["app"])
    r = c.post("/predict/array", **_json(_array((3, *SHAPE))))
    assert r.status_code == 413


def test_main_bad_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("uvicorn")
    assert main(["--checkpoint", str(tmp_path / "missing.npz")]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_main_bad_port() -> None:
    with pytest.raises(SystemExit):
        main(["--checkpoint", "m.npz", "--port", "70000"])


def test_main_takes_the_checkpoint_as_for_every_command(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21: CHECKPOINT or --checkpoint CHECKPOINT (fcnn.cli.add_checkpoint)."""
    uvicorn = pytest.importorskip("uvicorn")
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append(kw))
    assert main([str(checkpoint)]) == 0
    assert main(["--checkpoint", str(checkpoint)]) == 0
    assert len(runs) == 2
    assert main([]) == 1
    assert capsys.readouterr().err.startswith("error: no checkpoint given")


def test_main_flags_reach_the_app_and_the_connection_guards(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append({"app": app, **kw}))
    argv = [str(checkpoint), "--max-connections", "7", "--header-timeout", "3"]
    argv += ["--min-body-rate", "1000", "--max-pending-bytes", "99999999", "--keep-alive", "2"]
    assert main(argv) == 0
    guard = runs[0]["http"].keywords
    assert guard["limits"].max_connections == 7 and guard["limits"].header_timeout_s == 3
    assert guard["min_rate"] == 1000 and runs[0]["timeout_keep_alive"] == 2
    limits = TestClient(runs[0]["app"]).get("/metadata").json()["limits"]
    assert limits["min_body_rate"] == 1000 and limits["max_pending_bytes"] == 99999999


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--max-batch", "0", "ServeLimits.max_batch (--max-batch) must be a positive int, got 0"),
        ("--body-timeout", "-1", "(--body-timeout) must be a positive int, got -1"),
        ("--header-timeout", "0", "(--header-timeout) must be a positive int, got 0"),
        ("--port", "70000", "--port must be in [0, 65535], got 70000"),
        ("--max-pixels", "many", "invalid int value: 'many'"),
    ],
)
def test_main_bad_flag_values_exit_2_naming_the_flag(
    flag: str, value: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["m.npz", flag, value])
    assert exit_.value.code == 2
    assert said in capsys.readouterr().err


def test_every_setting_is_a_flag_declared_once() -> None:
    """Issue 21: the flags come from the fields of the settings dataclasses."""
    from fcnn.cli import flag_name
    from fcnn.serve import ConnectionLimits, Listen
    from fcnn.serve.__main__ import _parser

    text = _parser().format_help()
    for cls in (ServeLimits, ConnectionLimits, Listen):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("flag", flag_name(f.name)) in text, f.name


def test_python_m_fcnn_serve_help() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "fcnn.serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: python -m fcnn.serve")
    assert "--max-pending-bytes" in proc.stdout and "--checkpoint" in proc.stdout
