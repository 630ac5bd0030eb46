"""What the server answers: the response models (they also document the API on /docs),
the model's description for ``/metadata``, and predictions, checked before they leave.

A model that cannot give a finite answer is refused when the app is built
(``check_servable``: finite parameters and normalisation, positive std), and every
answer is checked again (``predictions``): non-finite probabilities for one input are a
422 naming the model's output, never a 200 with ``null``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from ..io import CheckpointError, check_finite
from ..layers.base import Array
from ..models import Trained
from .formats import InputError

__all__ = [
    "ARRAY_BODY",
    "ERRORS",
    "UPLOAD_BODY",
    "ErrorDetail",
    "Health",
    "Metadata",
    "Prediction",
    "PredictionWithInput",
    "Predictions",
    "UnservableModelError",
    "check_servable",
    "checkpoint_facts",
    "predictions",
]


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


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorDetail, "description": text}
    for code, text in (
        (400, "not an image / not JSON / corrupt or truncated input / conflicting framing"),
        (408, "the request head or body did not arrive in time, or too slowly"),
        (
            413,
            "over a size limit (body bytes, image pixels, chunks or scans, images or values "
            "per request)",
        ),
        (415, "unsupported image format or content type"),
        (
            422,
            "wrong array shape, non-finite or out-of-range values, an empty image "
            "(detail starts 'the image is empty'), no 'file' field, a non-finite model output",
        ),
        (503, "busy: too many bodies held at once; retry"),
    )
}

ARRAY_BODY: dict[str, Any] = {
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

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "a PNG or JPEG image",
                        }
                    },
                }
            }
        },
    }
}


class UnservableModelError(ValueError):
    """A model that cannot give finite answers (``check_servable``)."""


def check_servable(trained: Trained) -> None:
    """``UnservableModelError`` (a ``ValueError``) unless ``trained`` can give finite
    answers: finite parameters, state and normalisation, and a positive std."""
    try:  # a Trained built in code has not been through load_trained's check
        check_finite({"params": trained.params, "state": trained.state}, "cannot serve")
    except CheckpointError as err:
        raise UnservableModelError(str(err)) from None
    if not (np.all(np.isfinite(trained.mean)) and np.all(np.isfinite(trained.std))):
        raise UnservableModelError("cannot serve this model: its normalisation is not finite")
    if not np.all(np.asarray(trained.std) > 0):
        raise UnservableModelError("cannot serve this model: its normalisation std is not positive")


def checkpoint_facts(trained: Trained) -> dict[str, Any]:
    """What ``/metadata`` reports from the checkpoint's run record (``fcnn.run.RunRecord``,
    the one reader of checkpoint metadata): ``model``, ``name``, ``dataset``, ``epoch``,
    ``test_accuracy``. A ``Trained`` built by hand (no record) reports its spec alone."""
    record = trained.record
    if record is None:
        return {"model": {"spec": dict(trained.model.spec)}, "name": "model", "dataset": None,
                "epoch": None, "test_accuracy": None}  # fmt: skip
    return {
        "model": dict(record.model),
        "name": str(record.model.get("name", "model")),
        "dataset": record.dataset,
        "epoch": record.epoch,
        "test_accuracy": record.test_accuracy,
    }


def predictions(trained: Trained, x: Array) -> list[Prediction]:
    """One forward pass over ``x: (N, C, H, W)``; a ``Prediction`` per image.

    ``InputError`` (422) when the model's probabilities for an image are not finite.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
        probs = trained.predict_proba(x, batch_size=max(1, len(x)))
    bad = np.flatnonzero(~np.all(np.isfinite(probs), axis=1))
    if bad.size:
        raise InputError(
            422,
            f"the model cannot classify image {int(bad[0])}: its output is not finite "
            "(NaN or infinite probabilities)",
        )
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
