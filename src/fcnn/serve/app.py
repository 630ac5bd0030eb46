"""The FastAPI app: ``create_app`` and its routes.

The routes are defined once, at module level, on ``router``; what they serve (the
model, the limits, the worker threads) is a ``Serving`` record on ``app.state``, built by
``create_app``. A route reads its body (through ``fcnn.serve.body.BodyGuard``, which
bounds it) and hands it to a pure function of ``fcnn.serve.inputs`` and then to
``fcnn.serve.schema.predictions``, both on the app's ``max_concurrency`` worker threads:
parsing, decoding and the forward pass never run on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline

from .. import __version__
from ..models import Trained, load_trained
from .body import BodyGuard, ByteBudget
from .formats import InputError
from .inputs import array_to_batch, check_json_type, image_to_input, upload_file
from .limits import ServeLimits
from .schema import (
    ARRAY_BODY,
    ERRORS,
    UPLOAD_BODY,
    Health,
    Metadata,
    Prediction,
    Predictions,
    PredictionWithInput,
    check_servable,
    checkpoint_facts,
    predictions,
)

__all__ = ["Serving", "create_app", "router"]

_T = TypeVar("_T")

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


@dataclass(frozen=True)
class Serving:
    """What the routes serve: the model, the limits, ``/metadata``'s answer, the page's
    files and the worker threads predictions run on."""

    trained: Trained
    limits: ServeLimits
    metadata: Metadata
    page: dict[str, tuple[bytes, str]]
    workers: ThreadPoolExecutor

    async def run(self, fn: Callable[[], _T]) -> _T:
        """``fn()`` on a worker thread; requests beyond ``max_concurrency`` wait their turn."""
        return await asyncio.get_running_loop().run_in_executor(self.workers, fn)


def _serving(request: Request) -> Serving:
    serving: Serving = request.app.state.serving
    return serving


router = APIRouter()


@router.get("/health", response_model=Health, summary="Liveness check")
async def health() -> Health:
    return Health(status="ok")


@router.get("/metadata", response_model=Metadata, summary="The model and the request limits")
async def get_metadata(request: Request) -> Metadata:
    return _serving(request).metadata


async def _classify_upload(request: Request) -> tuple[Prediction, Any]:
    """The upload's prediction and the prepared image ``(C, H, W)`` it was made from."""
    s = _serving(request)
    body = await request.body()  # bounded by BodyGuard
    ctype = request.headers.get("content-type")

    def work() -> tuple[Prediction, Any]:
        data, declared = upload_file(body, ctype)
        x = image_to_input(data, declared, s.trained.input_shape, s.limits.max_pixels)
        return predictions(s.trained, x[None])[0], x

    return await s.run(work)


@router.post(
    "/predict",
    response_model=Prediction,
    responses=ERRORS,
    openapi_extra=UPLOAD_BODY,
    summary="Classify one uploaded PNG or JPEG image (multipart/form-data field 'file')",
)
async def predict_image(request: Request) -> Prediction:
    return (await _classify_upload(request))[0]


@router.post(
    "/predict/with-input",
    response_model=PredictionWithInput,
    responses=ERRORS,
    openapi_extra=UPLOAD_BODY,
    summary="Classify one uploaded PNG or JPEG image; also return the prepared image",
)
async def predict_image_with_input(request: Request) -> PredictionWithInput:
    p, x = await _classify_upload(request)
    return PredictionWithInput(**p.model_dump(), input=x.tolist())


@router.post(
    "/predict/array",
    response_model=Predictions,
    responses=ERRORS,
    openapi_extra=ARRAY_BODY,
    summary="Classify a batch of images sent as a JSON array (N, C, H, W)",
)
async def predict_array(request: Request) -> Predictions:
    s = _serving(request)
    check_json_type(request.headers.get("content-type"))
    body = await request.body()  # bounded by BodyGuard

    def work() -> list[Prediction]:
        x = array_to_batch(body, s.trained.input_shape, s.limits.max_batch)
        return predictions(s.trained, x)

    return Predictions(predictions=await s.run(work))


async def _page_file(request: Request) -> Response:
    body, ctype = _serving(request).page[request.url.path]
    return Response(body, media_type=ctype, headers=_PAGE_HEADERS)


for _url in _PAGE_FILES:
    router.add_api_route(_url, _page_file, methods=["GET"], include_in_schema=False)


async def _refused(request: Request, err: Exception) -> JSONResponse:
    refusal = cast(InputError, err)
    return JSONResponse({"detail": refusal.detail}, status_code=refusal.status)


async def _invalid_request(request: Request, err: Exception) -> JSONResponse:
    # FastAPI's own checks, should a route declare any: one readable line, like ours.
    parts = [
        f"{'/'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
        for e in cast(RequestValidationError, err).errors()
    ]
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)


async def _out_of_memory(request: Request, err: Exception) -> JSONResponse:
    return JSONResponse({"detail": "not enough memory for this request"}, status_code=503)


def _page_files() -> dict[str, tuple[bytes, str]]:
    """The page's files as shipped in the package: URL path -> (bytes, content type)."""
    from importlib.resources import files

    folder = files("fcnn") / "page"
    return {
        url: (folder.joinpath(name).read_bytes(), ctype)
        for url, (name, ctype) in _PAGE_FILES.items()
    }


def _serving_of(trained: Trained, limits: ServeLimits, facts: dict[str, Any]) -> Serving:
    """``facts``: ``checkpoint_facts(trained)``."""
    metadata = Metadata(
        fcnn_version=str(__version__),
        model=facts["model"],
        classes=list(trained.classes),
        input_shape=list(trained.input_shape),
        normalization={"mean": trained.mean.tolist(), "std": trained.std.tolist()},
        dataset=facts["dataset"],
        epoch=facts["epoch"],
        test_accuracy=facts["test_accuracy"],
        limits=asdict(limits),
    )
    # Predictions run on max_concurrency threads of their own, never on the shared thread
    # pool (40 threads): glibc gives each thread that allocates big arrays an arena of its
    # own and keeps some of it, so the memory held after a burst grows with the number of
    # threads that decoded an image. Here that is at most max_concurrency.
    workers = ThreadPoolExecutor(limits.max_concurrency, thread_name_prefix="fcnn-predict")
    return Serving(trained, limits, metadata, _page_files(), workers)


def create_app(
    source: Trained | str | os.PathLike[str], limits: ServeLimits | None = None
) -> FastAPI:
    """A FastAPI app serving ``source``: a ``Trained`` model or a checkpoint path.

    A path is loaded here, once (``load_trained``; it raises ``CheckpointError`` or
    ``OSError``). ``limits`` defaults to ``ServeLimits()``. ``ValueError`` for a model
    that cannot give finite answers (``fcnn.serve.schema.check_servable``).
    """
    trained = source if isinstance(source, Trained) else load_trained(source)
    lim = ServeLimits() if limits is None else limits
    if not isinstance(lim, ServeLimits):
        raise TypeError(f"create_app: limits must be a ServeLimits, got {type(lim).__name__}")
    check_servable(trained)
    facts = checkpoint_facts(trained)
    serving = _serving_of(trained, lim, facts)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        serving.workers.shutdown(wait=False, cancel_futures=True)

    shape, name = trained.input_shape, facts["name"]
    app = FastAPIOffline(  # /docs' scripts and styles from the fastapi-offline package
        title="fcnn inference server",
        version=str(__version__),
        description=f"Classifies {'×'.join(map(str, shape))} images with the {name} model "
        f"into {len(trained.classes)} classes.",
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None},  # no badge from validator.swagger.io
        redoc_url=None,  # its bundle shows a logo fetched from redocly's CDN
    )
    app.state.serving = serving
    app.include_router(router)
    app.add_middleware(BodyGuard, limits=lim, budget=ByteBudget(lim.pending_bytes))
    app.add_exception_handler(InputError, _refused)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(MemoryError, _out_of_memory)
    return app
