"""Issue 24, in the app: what cannot be an input is refused before it is parsed or decoded,
parsing runs on the worker threads, and no input gets a 500 or a null.

Each regression test reproduces one of the issue's holes (it failed before the fix);
the checks count calls, bytes and status codes, never time. The pure pieces
(``fcnn.serve.formats``, ``fcnn.serve.inputs``, ``fcnn.serve.body.ByteBudget``) are
tested directly too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import io
import json
import struct
import threading
import zlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("PIL")
if importlib.util.find_spec("httpx2") is None and importlib.util.find_spec("httpx") is None:
    pytest.skip("the test client needs httpx2 (or httpx)", allow_module_level=True)
from fastapi.testclient import TestClient
from PIL import Image

import fcnn
import fcnn.serve.inputs as inputs
from fcnn.models import Trained, build_model
from fcnn.serve import ServeLimits, create_app
from fcnn.serve.body import ByteBudget
from fcnn.serve.formats import MAX_PNG_CHUNKS, InputError, check_jpeg, check_png
from fcnn.serve.inputs import array_to_batch, scan_json, upload_file
from fcnn.serve.schema import UnservableModelError

SHAPE = (1, 28, 28)
LIMITS = ServeLimits(max_batch=8)


def _trained(scale: float = 1.0) -> Trained:
    model = build_model("small", 10)
    params, state, _ = fcnn.init(model, np.random.default_rng(0), SHAPE)
    params = fcnn.tree_map(lambda p: p * np.float32(scale), params)
    mean, std = np.array([0.13], np.float32), np.array([0.31], np.float32)
    classes = tuple(str(d) for d in range(10))
    return Trained(model, params, state, SHAPE, classes, mean, std, {})


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(_trained(), LIMITS)) as c:
        yield c


def _encode(pixels: np.ndarray, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **options)
    return buf.getvalue()


def _digit(size: int = 56) -> np.ndarray:
    """A dark bar on white, ``(size, size)`` uint8: something to classify."""
    a = np.full((size, size), 255, np.uint8)
    a[size // 5 : 4 * size // 5, size // 2 - size // 20 : size // 2 + size // 20] = 0
    return a


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _upload(data: bytes, ctype: str = "image/png") -> dict[str, Any]:
    return {"files": {"file": ("d", data, ctype)}}


def _json(body: bytes) -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": "application/json"}}


# --- 5: refuse before parsing, parse on the worker threads ------------------------------------


def test_regression_an_8_mb_json_of_2m_arrays_was_parsed_before_it_was_refused(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24.5: 2M ``[0]`` took 2.5 s and 220 MB to parse, then got a 413. Now the
    brackets are counted on the raw bytes and the body is never parsed."""
    parsed: list[int] = []
    counting = SimpleNamespace(
        loads=lambda b: parsed.append(len(b)) or json.loads(b), dumps=json.dumps
    )
    monkeypatch.setattr(inputs, "json", counting)
    body = b"[" + b"[0]," * 1_999_999 + b"[0]]"
    r = client.post("/predict/array", **_json(body))
    assert r.status_code == 413 and "arrays" in r.json()["detail"], r.text
    flat = b"[" + b"0," * 1_000_000 + b"0]"
    r = client.post("/predict/array", **_json(flat))
    assert r.status_code == 413 and "values" in r.json()["detail"], r.text
    assert parsed == []
    ok = np.full((2, *SHAPE), 0.5).tolist()
    assert client.post("/predict/array", json=ok).status_code == 200
    assert len(parsed) == 1


def test_regression_a_png_of_870k_empty_chunks_cost_seconds_of_decoding(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24.5: a 10 MB PNG of 870k empty chunks cost 4.9 s of worker time in Pillow.
    Now the chunk headers are walked first and Pillow never sees it."""
    opened: list[int] = []
    real = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(1) or real(*a, **k))
    png = _encode(_digit(), "PNG")
    bloated = png[:33] + _chunk(b"prVt", b"") * 870_000 + png[33:]
    r = client.post("/predict", **_upload(bloated))
    assert r.status_code == 413 and "chunks" in r.json()["detail"], r.text
    assert opened == []
    assert client.post("/predict", **_upload(png)).status_code == 200
    assert opened == [1]


def test_regression_uploads_were_parsed_on_the_event_loop(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24.5: multipart and JSON bodies were parsed outside the bounded worker pool."""
    threads: list[str] = []
    for name in ("upload_file", "array_to_batch"):
        real = getattr(inputs, name)

        def record(*args: Any, _real: Any = real) -> Any:
            threads.append(threading.current_thread().name)
            return _real(*args)

        monkeypatch.setattr(f"fcnn.serve.app.{name}", record)
    assert client.post("/predict", **_upload(_encode(_digit(), "PNG"))).status_code == 200
    assert client.post("/predict/array", json=[np.zeros(SHAPE).tolist()]).status_code == 200
    assert len(threads) == 2 and all(t.startswith("fcnn-predict") for t in threads), threads


# --- 6: never a 500, never a null -------------------------------------------------------------


@pytest.mark.parametrize("depth", [5, 33, 64, 200])
def test_regression_json_nested_33_to_64_levels_was_a_500(client: TestClient, depth: int) -> None:
    """Issue 24.6: NumPy raised RuntimeError (only 32 dimensions) and the server said 500."""
    body = b"[" * depth + b"0.5" + b"]" * depth
    r = client.post("/predict/array", **_json(body))
    assert r.status_code == 422, r.text
    assert f"nested {depth} levels deep" in r.json()["detail"]


def test_regression_nan_parameters_answered_200_with_a_null_probability() -> None:
    """Issue 24.6: a model with NaN parameters answered ``"probability": null``. It is now
    refused when the app is built, and a finite model whose output overflows gets a 422."""
    broken = _trained()
    broken = dataclasses.replace(
        broken, params=fcnn.tree_map(lambda p: np.full_like(p, np.nan), broken.params)
    )
    with pytest.raises(UnservableModelError, match="NaN or infinite"):
        create_app(broken)
    with pytest.raises(UnservableModelError, match="std is not positive"):
        create_app(dataclasses.replace(_trained(), std=np.array([0.0], np.float32)))
    huge = _trained(scale=1e30)  # finite weights, logits overflow to infinity
    with TestClient(create_app(huge)) as c:
        r = c.post("/predict/array", json=[np.full(SHAPE, 0.5).tolist()])
        assert r.status_code == 422 and "not finite" in r.json()["detail"], r.text
        r = c.post("/predict", **_upload(_encode(_digit(), "PNG")))
        assert r.status_code == 422 and "not finite" in r.text


# --- 8: a truncated JPEG ------------------------------------------------------------------


def test_regression_a_truncated_4000x4000_jpeg_was_classified(client: TestClient) -> None:
    """Issue 24.8: cut short after 2 kB and closed with an end marker, libjpeg filled the
    rest with gray and the server answered 200; the docs promise a 400."""
    rng = np.random.default_rng(0)
    big = _encode(rng.integers(0, 256, (4000, 4000), dtype=np.uint8), "JPEG", quality=50)
    r = client.post("/predict", **_upload(big[:2000] + b"\xff\xd9", "image/jpeg"))
    assert r.status_code == 400 and "truncated" in r.json()["detail"], r.text


# --- the pure pieces ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 8, 56, 1000])
@pytest.mark.parametrize(
    "options",
    [{}, {"progressive": True}, {"optimize": True, "quality": 5}],
    ids=["baseline", "progressive", "optimized"],
)
@pytest.mark.parametrize("mode", ["L", "RGB", "RGB-420"])
def test_whole_jpegs_pass_the_truncation_check(size: int, options: Any, mode: str) -> None:
    """Flat images compress best: at 2 bits per block they are twice the bound."""
    pixels = np.full((size, size), 255, np.uint8)
    if mode != "L":
        pixels = np.repeat(pixels[..., None], 3, axis=2)
        options = {**options, "subsampling": 2 if mode == "RGB-420" else 0}
    check_jpeg(_encode(pixels, "JPEG", **options))


def test_jpeg_check_refuses_arithmetic_coding_and_too_many_scans() -> None:
    jpeg = _encode(_digit(), "JPEG")
    sof = jpeg.index(b"\xff\xc0")
    with pytest.raises(InputError, match="arithmetic or lossless") as err:
        check_jpeg(jpeg[:sof] + b"\xff\xc9" + jpeg[sof + 2 :])
    assert err.value.status == 415
    sos = jpeg.index(b"\xff\xda")
    end = sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")
    scans = jpeg[:end] + (jpeg[sos:end] + b"\x00") * 100 + jpeg[end:]
    with pytest.raises(InputError, match="101 scans"):
        check_jpeg(scans)


def test_png_chunk_bound_grows_with_the_rows() -> None:
    png = _encode(_digit(56), "PNG")
    check_png(png[:33] + _chunk(b"IDAT", b"") * (MAX_PNG_CHUNKS + 50) + png[33:])
    with pytest.raises(InputError, match="more than 1056 chunks"):
        check_png(png[:33] + _chunk(b"IDAT", b"") * (MAX_PNG_CHUNKS + 60) + png[33:])


def test_scan_json_counts_what_max_batch_images_can_hold() -> None:
    one = json.dumps(np.zeros((2, *SHAPE)).tolist()).encode()
    scan_json(one, SHAPE, 2)  # exactly two images: no refusal
    with pytest.raises(InputError, match="61 arrays"):
        scan_json(one, SHAPE, 1)
    with pytest.raises(InputError, match="more than 784 values"):
        scan_json(json.dumps(np.zeros(785).tolist()).encode(), SHAPE, 1)
    assert array_to_batch(one, SHAPE, 2).shape == (2, *SHAPE)
    with pytest.raises(InputError, match="nested 5 levels"):
        scan_json(b"[[[[[0.5]]]]]", SHAPE, 2)


def test_upload_file_finds_the_file_field_and_says_what_is_missing() -> None:
    b = "xyz"
    body = (
        f'--{b}\r\nContent-Disposition: form-data; name="other"\r\n\r\n1\r\n'
        f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        f"Content-Type: image/png\r\n\r\nPNGDATA\r\n--{b}--\r\n"
    ).encode()
    assert upload_file(body, f"multipart/form-data; boundary={b}") == (b"PNGDATA", "image/png")
    with pytest.raises(InputError, match="no field 'file'"):
        upload_file(body.replace(b'name="file"', b'name="f"'), f"multipart/form-data; boundary={b}")
    with pytest.raises(InputError, match="application/json"):
        upload_file(b"{}", "application/json")
    with pytest.raises(InputError, match="malformed") as err:
        upload_file(b"garbage", f"multipart/form-data; boundary={b}")
    assert err.value.status == 400


def test_byte_budget_is_first_come_first_served_and_gives_back_on_timeout() -> None:
    async def scenario() -> list[str]:
        budget, order = ByteBudget(10), []

        async def take(name: str, n: int, timeout: float) -> None:
            order.append(f"{name}:{await budget.take(n, timeout)}")

        assert await budget.take(8, 1)
        waiting = [asyncio.create_task(take("a", 5, 5)), asyncio.create_task(take("b", 2, 5))]
        await asyncio.sleep(0)
        assert order == []  # b fits but waits behind a
        assert not await budget.take(3, 0.01) and budget.free == 2
        budget.give(8)
        await asyncio.gather(*waiting)
        return [*order, f"free:{budget.free}"]

    assert asyncio.run(scenario()) == ["a:True", "b:True", "free:3"]
