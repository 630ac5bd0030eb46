"""An HTTP inference server for a trained checkpoint: ``python -m fcnn.serve M.npz``.

Needs the ``serve`` extra (``pip install "fcnn[serve]"``: FastAPI, fastapi-offline,
uvicorn, python-multipart, Pillow). The checkpoint is loaded once, when the app is built;
every request then runs ``Trained.predict_proba``, which normalises with the training
statistics stored in the checkpoint. Endpoints::

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

Bad input gets a 4xx with ``{"detail": "<what was wrong>"}``, never a 500; the codes,
the limits and the connection guards are described in ``docs/serve.md``.

The package, one concern per module:

- ``app``: ``create_app`` and the routes;
- ``inputs``: request bodies -> model inputs, pure functions run on the worker threads;
- ``formats``: what uploaded bytes are, and PNG / JPEG structure checks before decoding;
- ``schema``: the response models, ``/metadata``'s facts, checked predictions;
- ``body``: the ASGI guard of each request's body (framing, size, memory, time);
- ``guards``: the connection guards (a limit that evicts by progress, the head deadline,
  a lingering close) on uvicorn's h11 protocol, and the open-file limit;
- ``limits``: every setting, declared once (the command line's flags come from them);
- ``__main__``: the command line.

Build an app in code (tests do) with ``create_app(trained_or_path, ServeLimits(...))``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

try:
    import PIL  # noqa: F401  (decode_image imports it lazily; fail here, naming the extra)
    import python_multipart  # noqa: F401

    from .app import create_app
    from .formats import SUPPORTED_FORMATS
    from .limits import ConnectionLimits, Listen, ServeLimits
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    _NEEDS = (
        f"the inference server needs FastAPI, fastapi-offline, python-multipart and Pillow "
        f'({_err.name} is missing): pip install "fcnn[serve]"'
    )
    if sys.argv[:1] == ["-m"]:  # python -m fcnn.serve: the line alone, no traceback
        print(f"error: {_NEEDS}", file=sys.stderr)
        sys.exit(1)
    raise ImportError(_NEEDS) from _err

__all__ = [
    "SUPPORTED_FORMATS",
    "ConnectionLimits",
    "Listen",
    "ServeLimits",
    "create_app",
    "main",
]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fcnn.serve``'s command line (``fcnn.serve.__main__``); the exit status."""
    from .__main__ import main as command

    return command(argv)
