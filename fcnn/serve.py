"""An HTTP inference server for a trained checkpoint: ``python -m fcnn.serve --checkpoint M.npz``.

Needs the ``serve`` extra (``pip install "fcnn[serve]"``: FastAPI, uvicorn,
python-multipart, Pillow). The checkpoint is loaded once, when the app is built;
every request then runs ``Trained.predict_proba``, which normalises with the
training statistics stored in the checkpoint. Endpoints::

    GET  /                    a page to draw a digit on and see the prediction
    GET  /health              {"status": "ok"}
    GET  /metadata            model description, classes, input shape, normalisation,
                              dataset, test accuracy, fcnn version and the request limits
    POST /predict             multipart upload, field "file": one PNG or JPEG image
                              -> {"index", "label", "probability", "probabilities"}
    POST /predict/with-input  the same, plus "input": the prepared image (C, H, W) in
                              [0, 1] that the model classified (the page shows it)
    POST /predict/array       JSON body: an array (N, C, H, W) of raw pixels in [0, 1]
                              -> {"predictions": [{"index", "label", ...}, ...]}
    GET  /docs                the API documentation (/openapi.json is the schema)

Everything the server sends works offline: the page (``fcnn/page/``: HTML, CSS and
plain JavaScript, shipped in the package) loads nothing from elsewhere, which its
Content-Security-Policy header enforces, and the documentation pages' scripts and
styles come from the ``fastapi-offline`` package (``/static-offline-docs/``), not a CDN.

``probabilities[k]`` belongs to ``classes[k]`` of ``/metadata``; ``label`` is
``classes[index]``. An uploaded image is prepared like the training data
(``fcnn.data.images``): converted to the model's channels (grayscale for MNIST-style
models), inverted when its background is light, the digit fitted and centred,
resized to the model's input. A batch sent to ``/predict/array`` is answered in
one forward pass.

Bad input gets a 4xx with ``{"detail": "<what was wrong>"}``, never a 500:

- 400: not an image, a corrupt or truncated image, an empty upload, a body that is
  not JSON (or nested too deeply), an invalid Content-Length;
- 413: a body over the byte limit (refused from its Content-Length before it is
  read, and counted while it streams when there is none), an image with more
  pixels than ``max_pixels`` (read from its header, before decompression:
  decompression bombs), more than ``max_batch`` images in one request;
- 408: a request head not complete ``--header-timeout`` seconds (10) after connecting
  or after the last response, a body not complete ``body_timeout_s`` (60) after its
  head; the connection is then closed;
- 415: an image in another format than PNG or JPEG, a body that is not JSON;
- 422: a JSON array that is not ``(N, C, H, W)`` with the model's input shape,
  or holds non-numbers (``true``, ``"0.5"``, ``null``), non-finite values or values
  outside [0, 1] (the checks and words of ``Trained.predict_proba``); an image one of
  whose sides is more than 1000 times the other; an **empty image** (blank, all one
  shade: nothing stands out from the background, ``fcnn.data.images.is_empty_image``),
  whose detail starts with "the image is empty" (a client can tell the user to draw
  something, rather than show a class the model would give a blank picture); a
  missing ``file`` field. Arrays sent to ``/predict/array`` are classified as given,
  blank or not: they are model inputs already.

Resources: predictions (decoding, preparing, the forward pass) run on
``max_concurrency`` threads of their own, and the server leaves glibc's allocator at
its defaults, so the memory it keeps after a burst grows with ``max_concurrency``,
not with the number of clients. ``main`` holds at most ``--max-connections`` (100)
connections (``guarded_protocol``): at the limit the one that has waited longest
without a request in progress is closed (408) for the newcomer, so idle sockets
cannot lock anyone out; the limit is lowered, with a note, to fit ``ulimit -n``.

Build an app in code (tests do) with ``create_app(trained_or_path, ServeLimits(...))``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Annotated, Any, TypeVar

import numpy as np

try:
    import PIL  # noqa: F401  (decode_image imports it lazily; fail here, naming the extra)
    from fastapi import FastAPI, File, HTTPException, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi_offline import FastAPIOffline
    from pydantic import BaseModel, Field
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    _NEEDS = (
        f"the inference server needs FastAPI, fastapi-offline, python-multipart and Pillow "
        f'({_err.name} is missing): pip install "fcnn[serve]"'
    )
    if __name__ == "__main__":  # python -m fcnn.serve: the line alone, no traceback
        print(f"error: {_NEEDS}", file=sys.stderr)
        sys.exit(1)
    raise ImportError(_NEEDS) from _err

from .data.images import (
    EmptyImageError,
    ImageShapeError,
    ImageTooLargeError,
    check_not_empty,
    check_unit_images,
    decode_image,
    prepare_image,
)
from .layers.base import Array
from .models import Trained, load_trained

__all__ = ["SUPPORTED_FORMATS", "ServeLimits", "create_app", "guarded_protocol", "main"]

# Uploads accepted by /predict, by Pillow format name.
SUPPORTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG")
# Leading bytes of image formats, to tell "unsupported format" (415) from "not an image" (400).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"qoif", "QOI"),
    (b"<svg", "SVG"),
)
_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around an uploaded file
# What json.loads gives for a JSON number.
_PIXEL_TYPES = (int, float)
_NOTHING = object()
_T = TypeVar("_T")


@dataclass(frozen=True)
class ServeLimits:
    """Per-request limits. Each must be a positive int.

    ``max_image_bytes``: an uploaded image file (the multipart body may be 64 KiB
    more); ``max_json_bytes``: the body of ``/predict/array``; ``max_pixels``: an
    image's width × height, read from its header before decompression;
    ``max_batch``: images in one ``/predict/array`` request; ``max_concurrency``:
    predictions computed at the same time, each on one of that many worker threads
    (more requests wait for a turn), which bounds the memory that decoding large
    images takes; ``body_timeout_s``: seconds a request's body may take to arrive
    once its head has (then a 408 and the connection is closed).
    """

    max_image_bytes: int = 10 * 1024 * 1024
    max_json_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 16_000_000
    max_batch: int = 64
    max_concurrency: int = 2
    body_timeout_s: int = 60

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServeLimits.{name} must be a positive int, got {value!r}")


# --- response models (they also document the API on /docs) --------------------------------


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Prediction(BaseModel):
    index: int = Field(description="the predicted class's index into /metadata's classes")
    label: str = Field(description="the predicted class's name, classes[index]")
    probability: float = Field(description="the predicted class's probability")
    probabilities: list[float] = Field(
        description="every class's probability, in the order of /metadata's classes; sum 1"
    )


class PredictionWithInput(Prediction):
    input: list[list[list[float]]] = Field(
        description="the prepared image (C, H, W), raw intensities in [0, 1] before the "
        "normalisation, exactly what the model classified"
    )


class Predictions(BaseModel):
    predictions: list[Prediction]


class Metadata(BaseModel):
    fcnn_version: str
    model: dict[str, Any] = Field(description="the checkpoint's model description")
    classes: list[str]
    input_shape: list[int] = Field(description="per image: [C, H, W]")
    normalization: dict[str, list[float]] = Field(
        description="per-channel mean and std, applied by the server to raw [0, 1] pixels"
    )
    dataset: str | None
    epoch: int | None
    test_accuracy: float | None = Field(
        description="the accuracy on the test split after the checkpoint's last epoch, "
        "from its training history; null when it has none"
    )
    limits: dict[str, int]


class ErrorDetail(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorDetail, "description": text}
    for code, text in (
        (400, "not an image / not JSON / corrupt input"),
        (413, "over a size limit (body bytes, image pixels or images per request)"),
        (415, "unsupported image format or content type"),
        (422, "wrong array shape, non-finite or out-of-range values, an empty image "
         "(detail starts 'the image is empty'), missing field"),
    )
}

_ARRAY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Images (N, C, H, W) as nested arrays of raw pixels in [0, 1], "
        "in the model's input shape (see /metadata), at most max_batch of them.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "array",
                        "items": {
                            "type": "array",
                            "items": {"type": "array", "items": {"type": "number"}},
                        },
                    },
                }
            }
        },
    }
}


# --- request body limit (pure ASGI, so it runs before anything reads the body) -------------


class _BodyTimeoutError(Exception):
    """The request body did not arrive in time (answered 408, connection closed)."""


class _BodyLimit:
    """Refuse bodies over ``limit_for(path)`` bytes with a 413, and bodies that take
    more than ``timeout_s`` seconds to arrive with a 408.

    A declared ``Content-Length`` over the limit is answered at once, unread; a body
    without one (chunked) is counted as it arrives and reading stops at the limit.
    The deadline runs from the moment the request's head has arrived and only while
    the app waits for body bytes: time spent computing is the server's, not the client's.
    """

    def __init__(
        self, app: ASGIApp, limit_for: Callable[[str], int], timeout_s: float = 60.0
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(str(scope.get("path", "")))
        too_large = f"request body is larger than the limit of {limit} bytes"
        declared = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
                if length < 0 or len(set(declared)) > 1:
                    raise ValueError
            except ValueError:
                await _send_error(send, 400, "invalid Content-Length header")
                return
            if length > limit:
                await _send_error(send, 413, too_large)
                return
        received = 0
        started = False
        complete = False
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body: disconnect notices, no deadline
                return await receive()
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.0))
            except TimeoutError:
                raise _BodyTimeoutError from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, too_large)
                complete = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTimeoutError:  # not an HTTPException: the app's handlers would keep the
            if started:  # connection open for the rest of the trickle
                raise
            detail = f"the request body did not arrive within {self.timeout_s:g} s"
            await _send_error(send, 408, detail)
        except HTTPException as err:  # raised while reading, outside any route's handler
            if started:
                raise
            await _send_error(send, err.status_code, str(err.detail))


async def _send_error(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --- request handling (plain functions, run in worker threads) ---------------------------


def _sniff(data: bytes) -> str | None:
    """The image format ``data`` starts like, or ``None``."""
    for magic, fmt in _SIGNATURES:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIF/AVIF"
    if len(data) >= 2 and data[0:1] == b"P" and data[1:2] in b"123456":
        return "PNM"
    return None


def _image_to_input(
    data: bytes, content_type: str | None, input_shape: tuple[int, int, int], limits: ServeLimits
) -> Array:
    """Uploaded bytes -> one model input ``(C, H, W)`` float32 in [0, 1], or an HTTPException."""
    if not data:
        raise HTTPException(400, "the uploaded file is empty")
    fmt = _sniff(data)
    if fmt is None:
        declared = (content_type or "").split(";")[0].strip().lower()
        if declared.startswith("image/") and declared not in ("image/png", "image/jpeg"):
            raise HTTPException(415, f"unsupported image type {declared}; send a PNG or JPEG image")
        raise HTTPException(400, "the uploaded file is not an image; send a PNG or JPEG image")
    if fmt not in SUPPORTED_FORMATS:
        raise HTTPException(415, f"unsupported image format {fmt}; send a PNG or JPEG image")
    try:  # decode_image refuses huge images from the header, before decompressing anything
        pixels = decode_image(data, input_shape[0], max_pixels=limits.max_pixels, formats=[fmt])
    except ImageTooLargeError as err:
        raise HTTPException(413, f"the {fmt} image is too large: {err}") from err
    except ImageShapeError as err:
        raise HTTPException(422, f"the {fmt} image cannot be classified: {err}") from err
    except ValueError as err:
        raise HTTPException(400, f"the {fmt} image cannot be decoded: {err}") from err
    try:
        x = prepare_image(pixels, input_shape)
    except ValueError as err:  # pragma: no cover - decode_image gives valid pixels
        raise HTTPException(422, f"the image cannot be prepared: {err}") from err
    try:
        check_not_empty(x)
    except EmptyImageError as err:
        raise HTTPException(422, str(err)) from err
    return x


def _array_to_batch(body: bytes, input_shape: tuple[int, int, int], limits: ServeLimits) -> Array:
    """A JSON body -> images ``(N, C, H, W)`` float32 in [0, 1], or an HTTPException."""
    expected = f"(N, {', '.join(map(str, input_shape))})"
    if not body:
        raise HTTPException(400, f"the body is empty; send a JSON array of images {expected}")
    try:
        obj = json.loads(body)
    except RecursionError as err:
        raise HTTPException(400, "the JSON body is nested too deeply") from err
    except ValueError as err:
        raise HTTPException(400, f"the body is not valid JSON ({err})") from err
    if not isinstance(obj, list) or not obj:
        got = "an empty array" if obj == [] else f"a JSON {type(obj).__name__}"
        raise HTTPException(422, f"expected a non-empty JSON array of images {expected}, got {got}")
    if len(obj) > limits.max_batch:
        raise HTTPException(
            413, f"{len(obj)} images in one request; the limit is {limits.max_batch}"
        )
    try:
        arr = np.array(obj, dtype=np.float64)
    except (ValueError, TypeError, RecursionError, OverflowError) as err:
        raise HTTPException(
            422,
            f"expected a JSON array of numbers shaped {expected}: the array is ragged or "
            f"holds non-numbers ({err})",
        ) from err
    # NumPy reads true as 1, "0.5" as 0.5 and null as NaN: only JSON numbers are pixels.
    pixels = np.array(obj, dtype=object).flat
    odd = next((v for v in pixels if type(v) not in _PIXEL_TYPES), _NOTHING)
    if odd is not _NOTHING:
        raise HTTPException(
            422,
            f"expected a JSON array of numbers shaped {expected}: it holds non-numbers "
            f"such as {json.dumps(odd)}",
        )
    try:  # the shape, finiteness and range checks Trained.predict_proba makes, same words
        return check_unit_images(arr, input_shape)
    except (TypeError, ValueError) as err:
        raise HTTPException(422, str(err)) from err


def _predictions(trained: Trained, x: Array) -> list[Prediction]:
    """One forward pass over ``x: (N, C, H, W)``; a ``Prediction`` per image."""
    probs = trained.predict_proba(x, batch_size=max(1, len(x)))
    out = []
    for row in probs:
        k = int(np.argmax(row))
        out.append(
            Prediction(
                index=k,
                label=trained.classes[k],
                probability=float(row[k]),
                probabilities=[float(p) for p in row],
            )
        )
    return out


def _test_accuracy(meta: Any) -> float | None:
    """The last ``test_acc`` of a checkpoint's training history (train.py), or ``None``."""
    history = meta.get("history")
    last = history[-1] if isinstance(history, list) and history else None
    acc = last.get("test_acc") if isinstance(last, dict) else None
    if isinstance(acc, int | float) and not isinstance(acc, bool) and 0.0 <= acc <= 1.0:
        return float(acc)
    return None


# The page's files (fcnn/page/), by URL path: (file name, content type).
_PAGE_FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
}
# The page may load and call nothing but this server (and draw data: / blob: images).
_PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}


def _page_files() -> dict[str, tuple[bytes, str]]:
    """The page's files as shipped in the package: URL path -> (bytes, content type)."""
    from importlib.resources import files

    folder = files("fcnn") / "page"
    return {
        url: (folder.joinpath(name).read_bytes(), ctype)
        for url, (name, ctype) in _PAGE_FILES.items()
    }


# --- the app -------------------------------------------------------------------------------


def create_app(
    source: Trained | str | os.PathLike[str], limits: ServeLimits | None = None
) -> FastAPI:
    """A FastAPI app serving ``source``: a ``Trained`` model or a checkpoint path.

    A path is loaded here, once (``load_trained``; it raises ``CheckpointError`` or
    ``OSError``). ``limits`` defaults to ``ServeLimits()``.
    """
    from . import __version__

    trained = source if isinstance(source, Trained) else load_trained(source)
    lim = ServeLimits() if limits is None else limits
    if not isinstance(lim, ServeLimits):
        raise TypeError(f"create_app: limits must be a ServeLimits, got {type(lim).__name__}")
    shape = trained.input_shape
    # Predictions run on max_concurrency threads of their own, never on the shared
    # thread pool (40 threads): glibc gives each thread that allocates big arrays an
    # arena of its own and keeps some of it, so the memory held after a burst of large
    # images grows with the number of threads that decoded one. Here that is at most
    # max_concurrency.
    workers = ThreadPoolExecutor(lim.max_concurrency, thread_name_prefix="fcnn-predict")

    async def in_turn(fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(workers, fn)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        workers.shutdown(wait=False, cancel_futures=True)

    meta = trained.meta
    model_desc = meta.get("model")
    metadata = Metadata(
        fcnn_version=str(__version__),
        model=dict(model_desc) if isinstance(model_desc, dict) else {"spec": trained.model.spec},
        classes=list(trained.classes),
        input_shape=list(shape),
        normalization={"mean": trained.mean.tolist(), "std": trained.std.tolist()},
        dataset=meta.get("dataset") if isinstance(meta.get("dataset"), str) else None,
        epoch=meta.get("epoch") if isinstance(meta.get("epoch"), int) else None,
        test_accuracy=_test_accuracy(meta),
        limits=asdict(lim),
    )
    name = (model_desc or {}).get("name", "model") if isinstance(model_desc, dict) else "model"
    # FastAPIOffline: FastAPI whose /docs loads its scripts and styles from
    # the fastapi-offline package (mounted at /static-offline-docs), not from a CDN.
    app = FastAPIOffline(
        title="fcnn inference server",
        version=str(__version__),
        description=f"Classifies {'×'.join(map(str, shape))} images with the {name!s} model "
        f"into {len(trained.classes)} classes.",
        lifespan=lifespan,
        # No badge from validator.swagger.io: nothing the docs page shows needs the network.
        swagger_ui_parameters={"validatorUrl": None},
        # No /redoc: its bundle shows a logo fetched from redocly's CDN.
        redoc_url=None,
    )
    page = _page_files()

    json_limit = lim.max_json_bytes
    upload_limit = lim.max_image_bytes + _MULTIPART_SLACK
    small_limit = 64 * 1024

    def limit_for(path: str) -> int:
        uploads = {"/predict": upload_limit, "/predict/with-input": upload_limit}
        return {**uploads, "/predict/array": json_limit}.get(path, small_limit)

    app.add_middleware(_BodyLimit, limit_for=limit_for, timeout_s=lim.body_timeout_s)

    def page_file(url: str) -> Callable[[], Any]:
        body, ctype = page[url]

        async def serve_file() -> Response:
            return Response(body, media_type=ctype, headers=_PAGE_HEADERS)

        return serve_file

    for url in page:
        app.add_api_route(url, page_file(url), methods=["GET"], include_in_schema=False)

    async def read_upload(file: UploadFile) -> bytes:
        data = await file.read(lim.max_image_bytes + 1)
        if len(data) > lim.max_image_bytes:
            raise HTTPException(
                413, f"the image file is larger than the limit of {lim.max_image_bytes} bytes"
            )
        return data

    @app.get("/health", response_model=Health, summary="Liveness check")
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/metadata", response_model=Metadata, summary="The model and the request limits")
    async def get_metadata() -> Metadata:
        return metadata

    @app.post(
        "/predict",
        response_model=Prediction,
        responses=_ERRORS,
        summary="Classify one uploaded PNG or JPEG image",
    )
    async def predict_image(
        file: Annotated[UploadFile, File(description="a PNG or JPEG image")],
    ) -> Prediction:
        return (await classify_upload(file))[0]

    async def classify_upload(file: UploadFile) -> tuple[Prediction, Any]:
        """The upload's prediction and the prepared image ``(C, H, W)`` it was made from."""
        data = await read_upload(file)

        def work() -> tuple[Prediction, Any]:
            x = _image_to_input(data, file.content_type, shape, lim)
            return _predictions(trained, x[None])[0], x

        return await in_turn(work)

    @app.post(
        "/predict/with-input",
        response_model=PredictionWithInput,
        responses=_ERRORS,
        summary="Classify one uploaded PNG or JPEG image; also return the prepared image",
    )
    async def predict_image_with_input(
        file: Annotated[UploadFile, File(description="a PNG or JPEG image")],
    ) -> PredictionWithInput:
        p, x = await classify_upload(file)
        return PredictionWithInput(**p.model_dump(), input=x.tolist())

    @app.post(
        "/predict/array",
        response_model=Predictions,
        responses=_ERRORS,
        openapi_extra=_ARRAY_BODY,
        summary="Classify a batch of images sent as a JSON array (N, C, H, W)",
    )
    async def predict_array(request: Request) -> Predictions:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            raise HTTPException(415, f"send the images as application/json, not {ctype}")
        body = await request.body()  # bounded by the body limit

        def work() -> list[Prediction]:
            return _predictions(trained, _array_to_batch(body, shape, lim))

        return Predictions(predictions=await in_turn(work))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's own checks (a missing "file" field): one readable line, like ours.
        parts = [
            f"{'/'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in err.errors()
        ]
        detail = "; ".join(parts) or "invalid request"
        if request.url.path in ("/predict", "/predict/with-input"):
            detail += "; upload the image as the multipart/form-data field 'file'"
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(MemoryError)
    async def out_of_memory(request: Request, err: MemoryError) -> JSONResponse:
        return JSONResponse({"detail": "not enough memory for this request"}, status_code=503)

    return app


# --- connections (uvicorn's h11 protocol with a limit and a deadline) -----------------------


def _raw_response(status: int, reason: str, detail: str) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def guarded_protocol(max_connections: int, header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 HTTP protocol, holding at most ``max_connections`` connections and
    dropping any that has not sent a complete request head ``header_timeout_s`` seconds
    after connecting or after its last response: pass it as ``uvicorn.run(http=...)``.

    A connection that is waiting (no request being answered: idle, or sending its head
    slowly, or a body nobody reads) past its deadline gets a 408 and is closed. When a
    new connection would exceed the limit, the connection that has been waiting longest
    is closed instead (a 408), so idle sockets cannot lock others out; only when every
    connection has a request in progress is the newcomer refused with a 503. The body's
    own deadline is ``ServeLimits.body_timeout_s`` (the app enforces it).
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if max_connections < 1 or header_timeout_s <= 0:
        raise ValueError(
            f"guarded_protocol: need max_connections >= 1 and header_timeout_s > 0, got "
            f"{max_connections} and {header_timeout_s}"
        )
    timed_out = _raw_response(
        408, "Request Timeout", f"no complete request within {header_timeout_s:g} s"
    )
    full = _raw_response(503, "Service Unavailable", "too many connections; try again")

    class GuardedH11Protocol(H11Protocol):
        waiting_since = 0.0
        deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_waiting()
            if len(self.connections) > max_connections:
                idle = [
                    c
                    for c in self.connections
                    if isinstance(c, GuardedH11Protocol)
                    and c is not self
                    and c.waiting()
                    and not c.transport.is_closing()  # dropped already, not yet gone
                ]
                if idle:
                    min(idle, key=lambda c: c.waiting_since).drop(timed_out)
                else:
                    self.drop(full)

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_clock()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._start_waiting()

        def waiting(self) -> bool:
            """No request of this connection is being answered."""
            return self.cycle is None or self.cycle.response_complete

        def drop(self, response: bytes) -> None:
            self._stop_clock()
            if not self.transport.is_closing():
                if self.conn.our_state in (h11.IDLE, h11.DONE):  # not mid-response
                    self.transport.write(response)
                self.transport.close()

        def _start_waiting(self) -> None:
            self._stop_clock()
            self.waiting_since = self.loop.time()
            self.deadline = self.loop.call_later(header_timeout_s, self._expire)

        def _stop_clock(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _expire(self) -> None:
            self.deadline = None
            if self.waiting():  # else the app is answering; the clock restarts after it
                self.drop(timed_out)

    return GuardedH11Protocol


# Descriptors the process needs besides its connections (libraries, the listening socket).
_SPARE_FILES = 32
_MAX_BACKLOG = 128


def _open_file_limit() -> int:
    """The soft limit on open files, raised to the hard limit where allowed (never lowered)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _fit_open_files(max_connections: int) -> tuple[int, int]:
    """``(connections, backlog)`` that fit the open-file limit.

    asyncio accepts up to ``backlog`` sockets at a time before any connection is
    handled (and dropped, if it must make room), and once accept fails for want of
    descriptors it retries in a tight loop that starves everything else. So the limit
    must hold ``max_connections`` plus two such bursts plus the process's own files.
    """
    limit = _open_file_limit()
    backlog = max(8, min(_MAX_BACKLOG, (limit - _SPARE_FILES - max_connections) // 2))
    return max(1, min(max_connections, limit - _SPARE_FILES - 2 * backlog)), backlog


# --- command line ------------------------------------------------------------------------


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in [0, 65535], got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    d = ServeLimits()
    p = argparse.ArgumentParser(
        prog="python -m fcnn.serve",
        description="Serve a checkpoint written by train.py over HTTP (see /docs).",
    )
    p.add_argument("--checkpoint", required=True, help="the .npz checkpoint to serve")
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default %(default)s)"
    )
    p.add_argument("--port", type=_port, default=8000, help="port (default %(default)s)")
    p.add_argument(
        "--max-image-bytes",
        type=_positive,
        default=d.max_image_bytes,
        help="largest uploaded image file (default %(default)s)",
    )
    p.add_argument(
        "--max-json-bytes",
        type=_positive,
        default=d.max_json_bytes,
        help="largest /predict/array body (default %(default)s)",
    )
    p.add_argument(
        "--max-pixels",
        type=_positive,
        default=d.max_pixels,
        help="largest image in pixels, width × height (default %(default)s)",
    )
    p.add_argument(
        "--max-batch",
        type=_positive,
        default=d.max_batch,
        help="most images in one /predict/array request (default %(default)s)",
    )
    p.add_argument(
        "--max-concurrency",
        type=_positive,
        default=d.max_concurrency,
        help="predictions computed at the same time (default %(default)s)",
    )
    p.add_argument(
        "--body-timeout",
        type=_positive,
        default=d.body_timeout_s,
        help="seconds a request body may take to arrive (default %(default)s)",
    )
    p.add_argument(
        "--header-timeout",
        type=_positive,
        default=10,
        help="seconds a connection may wait before its request head is complete, "
        "also between requests (default %(default)s)",
    )
    p.add_argument(
        "--keep-alive",
        type=_positive,
        default=5,
        help="seconds an idle connection is kept open after a response (default %(default)s)",
    )
    p.add_argument(
        "--max-connections",
        type=_positive,
        default=100,
        help="open connections at most; at the limit the longest-waiting idle one is "
        "closed for a newcomer (default %(default)s)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fcnn.serve --checkpoint M.npz [--host H] [--port P] ...``; the exit status."""
    from .io import CheckpointError
    from .paths import PathError, check_readable_file

    args = _parser().parse_args(argv)
    try:  # before any work: a directory or a missing file where the checkpoint should be
        check_readable_file(args.checkpoint, "checkpoint")
    except PathError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # No runtime.tune_allocator() here: raising glibc's trim and mmap thresholds keeps
    # every freed image buffer in its thread's heap, which suits a training loop (the
    # same sizes again each step), not a server decoding images of any size.
    try:
        import uvicorn
    except ImportError:
        print('error: the server needs uvicorn: pip install "fcnn[serve]"', file=sys.stderr)
        return 1
    limits = ServeLimits(
        max_image_bytes=args.max_image_bytes,
        max_json_bytes=args.max_json_bytes,
        max_pixels=args.max_pixels,
        max_batch=args.max_batch,
        max_concurrency=args.max_concurrency,
        body_timeout_s=args.body_timeout,
    )
    try:
        app = create_app(args.checkpoint, limits)
    except (CheckpointError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    max_connections, backlog = _fit_open_files(args.max_connections)
    if max_connections < args.max_connections:
        print(
            f"note: --max-connections lowered to {max_connections} to fit the open-file "
            f"limit (ulimit -n {_open_file_limit()})",
            file=sys.stderr,
        )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        http=guarded_protocol(max_connections, args.header_timeout),
        timeout_keep_alive=args.keep_alive,
        backlog=backlog,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
