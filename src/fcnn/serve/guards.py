"""Connection guards: uvicorn's h11 protocol with a connection limit that evicts by
progress, a deadline for the request head and a lingering close; and the open-file limit.

uvicorn has no setting for any of these (``limit_concurrency`` refuses newcomers with a
503 while idle sockets keep their places; ``timeout_keep_alive`` does not cover a head that
trickles in), so ``GuardedH11Protocol`` extends its h11 protocol; pass
``guarded_protocol(ConnectionLimits(...), min_rate)`` as ``uvicorn.run(http=...)``.

- **Head deadline.** A connection waiting for a complete request head (after connecting,
  or after its last response) ``header_timeout_s`` seconds gets a 408 and is closed.
- **The limit.** When a new connection would exceed ``max_connections``, the one
  furthest behind sending its request is closed (a 408) to make room: the oldest
  waiting for a head, or a body furthest behind ``min_rate`` (seconds since its head
  minus its bytes over the rate), whichever is further; never one whose bytes wait in
  the kernel unread, nor one whose request is being answered (when all are, the
  newcomer gets a 503). So idle and slow connections only displace each other, and a
  client that sends its request at once keeps its place.
- **Lingering close.** When the server closes a connection whose client may still be
  sending (a refusal before the body was read: 413, 400, 503), it first half-closes
  and reads out and discards what arrives, until the client closes or sends nothing
  for ``LINGER_QUIET_S`` seconds (at most ``LINGER_MAX_S``), so the client reads the
  answer instead of a reset. Such a connection goes first at the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import struct
from collections.abc import Callable
from typing import Any, cast

from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import ConnectionLimits

try:  # unread bytes of a socket (Linux, macOS); without them no connection is skipped
    import fcntl
    import termios

    _FIONREAD: int | None = termios.FIONREAD
except ImportError:  # pragma: no cover - Windows
    _FIONREAD = None

__all__ = [
    "LINGER_MAX_S",
    "LINGER_QUIET_S",
    "GuardedH11Protocol",
    "fit_open_files",
    "guarded_protocol",
]

# A lingering close ends when the client closes, after LINGER_QUIET_S s without data, or
# LINGER_MAX_S s after it began (nginx's lingering_timeout and lingering_time: 5 and 30 s).
LINGER_QUIET_S = 2.0
LINGER_MAX_S = 30.0
# Descriptors the process needs besides its connections (libraries, the listening socket).
_SPARE_FILES = 32
_MAX_BACKLOG = 128


def _raw_response(status: int, reason: str, detail: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 error response that closes the connection."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


_EVICTED = _raw_response(
    408,
    "Request Timeout",
    "closed for a new connection: this one was furthest behind sending its request",
)
_FULL = _raw_response(
    503, "Service Unavailable", "too many connections; try again", "retry-after: 1\r\n"
)


def _unread(transport: asyncio.BaseTransport) -> int:
    """Bytes that arrived on ``transport``'s socket and are not read yet (0 if unknown)."""
    sock = transport.get_extra_info("socket")
    if sock is None or _FIONREAD is None:
        return 0
    with contextlib.suppress(OSError, ValueError):
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), _FIONREAD, b"\0" * 4))[0])
    return 0


class _Transport:
    """A connection's transport as uvicorn sees it: ``close()`` lingers when the client
    may still be sending; everything else is the real transport's."""

    def __init__(self, real: asyncio.Transport, protocol: GuardedH11Protocol) -> None:
        self.real, self._protocol = real, protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def close(self) -> None:
        self._protocol.close_gracefully()

    def is_closing(self) -> bool:
        return self.real.is_closing() or self._protocol.lingering is not None


class _Places:
    """The connections of one server that the guard may close for a newcomer, kept in
    order, so finding one never scans every connection: by where they are, "head"
    (waiting for a request head, oldest first), "body" (receiving one) or "linger"."""

    def __init__(self) -> None:
        self.lists: dict[str, dict[GuardedH11Protocol, None]] = {
            "head": {},
            "body": {},
            "linger": {},
        }

    def put(self, c: GuardedH11Protocol, where: str | None) -> None:
        """File ``c`` under ``where``, or under none."""
        for listed in self.lists.values():
            listed.pop(c, None)
        if where is not None:
            self.lists[where][c] = None

    def furthest_behind(
        self, newcomer: GuardedH11Protocol, now: float
    ) -> GuardedH11Protocol | None:
        """The connection furthest behind sending its request, none with unread bytes."""

        def free(c: GuardedH11Protocol) -> bool:  # not the newcomer, not closed meanwhile
            return c is not newcomer and not c.real.is_closing() and not _unread(c.real)

        bodies = sorted(self.lists["body"], key=lambda c: -c.behind(now))
        found = [next(filter(free, cs), None) for cs in (self.lists["head"], bodies)]
        return max((c for c in found if c), key=lambda c: c.behind(now), default=None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the guards of the module docstring."""

    def __init__(
        self, *args: Any, limits: ConnectionLimits, min_rate: float, places: _Places, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.limits, self.min_rate, self.places = limits, min_rate, places
        self.waiting_since = self.head_at = 0.0
        self.body_received = 0
        self.head_cycle: Any = None  # the request whose head arrived at head_at
        self.clock: asyncio.TimerHandle | None = None
        self.lingering: asyncio.TimerHandle | None = None  # the close that ends it
        self.linger_until = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.real = transport
        super().connection_made(cast(asyncio.Transport, _Transport(transport, self)))
        self._start_waiting()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        self.places.put(self, None)
        if self.lingering is not None:
            self.lingering.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering is not None:  # read out and dropped: the answer is sent
            self._linger()
            return
        before = self.cycle
        super().data_received(data)
        c = self.cycle
        if c is not before and c is not None:  # a request head arrived
            self.head_cycle, self.head_at, self.body_received = c, self.loop.time(), 0
            self.places.put(self, "body" if c.more_body else None)
        elif c is not None and c is self.head_cycle and not c.response_complete:
            self.body_received += len(data)
            if not c.more_body:  # the body is complete: the server's turn
                self.places.put(self, None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._start_waiting()

    def behind(self, now: float) -> float:
        """Seconds this connection is behind sending its request: waiting for a head, the
        seconds waited; receiving a body, the seconds since the head minus the body's
        bytes over ``min_rate``."""
        c = self.cycle
        if c is None or c.response_complete or c is not self.head_cycle:
            return now - self.waiting_since
        return now - self.head_at - self.body_received / self.min_rate

    def _make_room(self) -> None:
        lingering = next(iter(self.places.lists["linger"]), None)
        if lingering is not None:
            self.places.put(lingering, None)
            lingering.real.abort()
            return
        victim = self.places.furthest_behind(self, self.loop.time())
        if victim is not None:
            victim.drop(_EVICTED)
        else:
            self.drop(_FULL, linger=True)

    def drop(self, response: bytes, linger: bool = False) -> None:
        """Send ``response`` (unless an answer has started) and close."""
        self._stop_clock()
        if self.real.is_closing():
            return
        c = self.cycle
        if c is None or c.response_complete or not c.response_started:
            self.real.write(response)
        if linger:
            self.close_gracefully(linger)
        else:
            self.places.put(self, None)
            self.real.close()

    def close_gracefully(self, linger: bool = False) -> None:
        """Close; first linger (half-close, then read out and drop what arrives) when
        ``linger`` or the client may still be sending its body."""
        if self.real.is_closing() or self.lingering is not None:
            return
        c = self.cycle
        if not (linger or (c is not None and c.more_body and not c.disconnected)):
            self.places.put(self, None)
            self.real.close()
            return
        self._stop_clock()
        self.places.put(self, "linger")
        self.linger_until = self.loop.time() + LINGER_MAX_S
        self._linger()
        self.flow.resume_reading()
        if self.real.can_write_eof():
            self.real.write_eof()

    def _linger(self) -> None:
        """(Re)arm the lingering close: ``LINGER_QUIET_S`` more, within ``LINGER_MAX_S``."""
        if self.lingering is not None:
            self.lingering.cancel()
        left = min(LINGER_QUIET_S, self.linger_until - self.loop.time())
        self.lingering = self.loop.call_later(max(left, 0.0), self.real.close)

    def _start_waiting(self) -> None:
        self._stop_clock()
        self.places.put(self, "head")
        self.waiting_since = self.loop.time()
        self.clock = self.loop.call_later(self.limits.header_timeout_s, self._expire)

    def _stop_clock(self) -> None:
        if self.clock is not None:
            self.clock.cancel()
            self.clock = None

    def _expire(self) -> None:
        self.clock = None
        c = self.cycle
        if c is None or c.response_complete:  # else the body's own deadline runs
            detail = f"no complete request within {self.limits.header_timeout_s:g} s"
            self.drop(_raw_response(408, "Request Timeout", detail), linger=True)


def guarded_protocol(limits: ConnectionLimits, min_rate: float) -> Callable[..., Any]:
    """``GuardedH11Protocol`` with these settings, for ``uvicorn.run(http=...)``."""
    if min_rate <= 0:
        raise ValueError(f"guarded_protocol: min_rate must be positive, got {min_rate}")
    return functools.partial(GuardedH11Protocol, limits=limits, min_rate=min_rate, places=_Places())


def _open_file_limit() -> int:
    """The soft limit on open files, raised to the hard limit where allowed (never lowered)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fit_open_files(max_connections: int) -> tuple[int, int, int]:
    """``(connections, backlog, open-file limit)`` that fit the open-file limit.

    asyncio accepts up to ``backlog`` sockets at a time before any connection is handled
    (and dropped, if it must make room), and once accept fails for want of descriptors it
    retries in a tight loop that starves everything else. So the limit must hold
    ``max_connections`` plus two such bursts plus the process's own files.
    """
    limit = _open_file_limit()
    backlog = max(8, min(_MAX_BACKLOG, (limit - _SPARE_FILES - max_connections) // 2))
    return max(1, min(max_connections, limit - _SPARE_FILES - 2 * backlog)), backlog, limit
