"""The server's settings, each declared once: per-request limits (``ServeLimits``), the
connection guards' settings (``ConnectionLimits``) and where to listen (``Listen``).

Every field carries its help text, so ``fcnn.cli.add_flags`` makes the command line's
flags from these classes (``--max-batch``, ``--body-timeout``, ...) and ``from_flags``
reads them back; ``/metadata`` reports ``ServeLimits`` as ``limits``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..cli import flag_name

__all__ = [
    "BODY_GRACE_S",
    "MULTIPART_SLACK",
    "SMALL_BODY",
    "ConnectionLimits",
    "Listen",
    "ServeLimits",
    "body_limit",
]

# Boundaries and part headers around an uploaded file in its multipart body.
MULTIPART_SLACK = 64 * 1024
# Bodies of other routes (the page, /health, ...); also the size under which a body needs
# no room in the shared budget (``ServeLimits.max_pending_bytes``).
SMALL_BODY = 64 * 1024
# Seconds a body may take before the minimum rate applies (a slow link's first round trips).
BODY_GRACE_S = 5.0

_UPLOAD_PATHS = ("/predict", "/predict/with-input")


def _check_positive(obj: object) -> None:
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if isinstance(f.default, int) and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            flag = f.metadata.get("flag", flag_name(f.name))
            raise ValueError(
                f"{type(obj).__name__}.{f.name} ({flag}) must be a positive int, got {value!r}"
            )


def _int(default: int, help: str, **meta: str) -> int:
    return field(default=default, metadata={"help": help, "metavar": "N", **meta})


@dataclass(frozen=True)
class ServeLimits:
    """Per-request limits, each a positive int (``/metadata`` lists them).

    ``max_image_bytes``: an uploaded image file (its multipart body may be
    ``MULTIPART_SLACK`` more); ``max_json_bytes``: the body of ``/predict/array``;
    ``max_pixels``: an image's width × height, read from its header before decompression;
    ``max_batch``: images in one ``/predict/array`` request; ``max_concurrency``:
    predictions (parsing, decoding, the forward pass) computed at the same time, each on
    one of that many worker threads; ``body_timeout_s``: seconds a body may take to
    arrive once its head has; ``min_body_rate``: bytes per second a body must average
    after its first ``BODY_GRACE_S`` seconds; ``max_pending_bytes``: request bodies held
    in memory at once (received, waiting for a worker or being worked on; at least the
    largest body), so a flood of large bodies waits its turn instead of filling memory.
    """

    max_image_bytes: int = _int(10 * 1024 * 1024, "largest uploaded image file in bytes")
    max_json_bytes: int = _int(8 * 1024 * 1024, "largest /predict/array body in bytes")
    max_pixels: int = _int(16_000_000, "largest image in pixels, width × height")
    max_batch: int = _int(64, "most images in one /predict/array request")
    max_concurrency: int = _int(2, "predictions computed at the same time")
    body_timeout_s: int = _int(
        60, "seconds a request body may take to arrive", flag="--body-timeout"
    )
    min_body_rate: int = _int(
        500, f"bytes per second a request body must average after its first {BODY_GRACE_S:g} s"
    )
    max_pending_bytes: int = _int(
        64 * 1024 * 1024, "request bodies held in memory at once, in bytes"
    )

    def __post_init__(self) -> None:
        _check_positive(self)

    @property
    def pending_bytes(self) -> int:
        """``max_pending_bytes``, raised to the largest body when smaller (one must fit)."""
        largest = max(self.max_image_bytes + MULTIPART_SLACK, self.max_json_bytes)
        return max(self.max_pending_bytes, largest)


@dataclass(frozen=True)
class ConnectionLimits:
    """What ``fcnn.serve.guards`` enforces on connections, each a positive int.

    ``max_connections``: open connections at most (lowered to fit ``ulimit -n``);
    ``header_timeout_s``: seconds a connection may wait for its request head to be
    complete, after connecting or after its last response; ``keep_alive_s``: seconds an
    idle connection is kept open after a response.
    """

    max_connections: int = _int(
        100,
        "open connections at most; at the limit the one furthest behind sending its request "
        "is closed for a newcomer",
    )
    header_timeout_s: int = _int(
        10,
        "seconds a connection may wait before its request head is complete, also between requests",
        flag="--header-timeout",
    )
    keep_alive_s: int = _int(
        5, "seconds an idle connection is kept open after a response", flag="--keep-alive"
    )

    def __post_init__(self) -> None:
        _check_positive(self)


@dataclass(frozen=True)
class Listen:
    """Where the server listens and how much it logs."""

    host: str = field(default="127.0.0.1", metadata={"help": "interface to listen on"})
    port: int = field(default=8000, metadata={"help": "port", "metavar": "PORT"})
    log_level: str = field(
        default="info",
        metadata={
            "help": "uvicorn's log level",
            "choices": ["critical", "error", "warning", "info", "debug", "trace"],
        },
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in [0, 65535], got {self.port}")


def body_limit(limits: ServeLimits, path: str) -> int:
    """The largest body accepted on ``path``, in bytes."""
    if path in _UPLOAD_PATHS:
        return limits.max_image_bytes + MULTIPART_SLACK
    if path == "/predict/array":
        return limits.max_json_bytes
    return SMALL_BODY
