"""The request body's guard, in front of the app (pure ASGI, so it runs before anything
reads a body): its framing, its size, the memory it holds and the time it takes.

For each HTTP request, in this order:

1. **Framing.** ``Content-Length`` together with ``Transfer-Encoding`` is a 400 (the two
   disagree on where the next request starts: behind a proxy that reads the other one,
   a request could be smuggled in); so is an invalid or contradictory ``Content-Length``.
2. **Size.** A declared length over the path's limit (``limits.body_limit``) is a 413 at
   once, unread; a chunked body is counted as it arrives and refused at the limit.
3. **Memory.** A body over ``SMALL_BODY`` waits for room in the app's ``ByteBudget`` of
   ``ServeLimits.max_pending_bytes`` (first come, first served) before it is read, and
   holds it until its response is sent; with no room before its deadline, a 503.
4. **Time.** The body must be complete ``body_timeout_s`` after the head, and from
   ``BODY_GRACE_S`` after it was given room it must have averaged ``min_body_rate``
   bytes per second; else a 408.

Every refusal says ``Connection: close``; ``fcnn.serve.guards`` then reads out what the
client still sends for a moment, so it reads the answer instead of a reset.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .limits import BODY_GRACE_S, SMALL_BODY, ServeLimits, body_limit

__all__ = ["BodyGuard", "ByteBudget", "send_error"]


class _RefusedError(Exception):
    """A request answered by the guard itself: ``status`` and ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class _ClientGoneError(Exception):
    """The client disconnected before its body was complete: nobody to answer."""


class ByteBudget:
    """``total`` bytes shared by an app's requests, handed out first come, first served."""

    def __init__(self, total: int) -> None:
        self.free = total
        self._queue: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def take(self, n: int, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for ``n`` bytes; whether they were given."""
        if not self._queue and n <= self.free:
            self.free -= n
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((n, waiter))
        try:
            await asyncio.wait_for(waiter, max(timeout, 0.0))
        except TimeoutError:
            self.give(0)  # those behind it may fit now
            return False
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give(n)  # given just as the request was cancelled
            raise
        return True

    def give(self, n: int) -> None:
        """Return ``n`` bytes and wake the waiters at the head of the queue that now fit."""
        self.free += n
        while self._queue:
            need, waiter = self._queue[0]
            if not waiter.done() and need > self.free:
                break
            self._queue.popleft()
            if not waiter.done():
                self.free -= need
                waiter.set_result(None)


def _framing(headers: Iterable[tuple[bytes, bytes]], limit: int) -> int:
    """The bytes a request's body may hold: its declared length, ``limit`` for a chunked
    body, 0 for none; ``_RefusedError`` for ambiguous or invalid framing or a length over
    ``limit``."""
    lengths = [v for k, v in headers if k.lower() == b"content-length"]
    chunked = any(k.lower() == b"transfer-encoding" for k, _ in headers)
    if lengths and chunked:
        raise _RefusedError(
            400,
            "Content-Length and Transfer-Encoding together: the request's framing is "
            "ambiguous; send one of them",
        )
    if not lengths:
        return limit if chunked else 0
    try:
        length = int(lengths[0])
        if length < 0 or len(set(lengths)) > 1:
            raise ValueError
    except ValueError:
        raise _RefusedError(400, "invalid Content-Length header") from None
    if length > limit:
        raise _RefusedError(413, f"request body is larger than the limit of {limit} bytes")
    return length


class _BodyReader:
    """The app's ``receive``, counting the body's bytes against its size and deadlines."""

    def __init__(self, receive: Receive, limit: int, limits: ServeLimits, now: float) -> None:
        self._receive, self.limit, self.limits = receive, limit, limits
        self.head_at = self.room_at = now
        self.received, self.complete = 0, False

    def _deadline(self) -> tuple[float, str]:
        hard = self.head_at + self.limits.body_timeout_s
        paced = self.room_at + BODY_GRACE_S + self.received / self.limits.min_body_rate
        if paced < hard:
            why = f"under the minimum of {self.limits.min_body_rate} bytes/s"
            return paced, f"the request body arrived too slowly ({self.received} bytes, {why})"
        return hard, f"the request body did not arrive within {self.limits.body_timeout_s:g} s"

    async def receive(self) -> Message:
        if self.complete:  # after the body: disconnect notices, no deadline
            return await self._receive()
        deadline, why = self._deadline()
        try:
            async with asyncio.timeout_at(deadline):
                message = await self._receive()
        except TimeoutError:
            raise _RefusedError(408, why) from None
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        self.received += len(message.get("body", b""))
        if self.received > self.limit:
            raise _RefusedError(413, f"request body is larger than the limit of {self.limit} bytes")
        self.complete = not message.get("more_body", False)
        return message


async def send_error(send: Send, status: int, detail: str, headers: Any = ()) -> None:
    """A JSON ``{"detail": ...}`` answer that closes the connection."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """ASGI middleware: the four checks of the module docstring around ``app``."""

    def __init__(self, app: ASGIApp, limits: ServeLimits, budget: ByteBudget) -> None:
        self.app, self.limits, self.budget = app, limits, budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(self.limits, str(scope.get("path", "")))
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._guarded(scope, limit, receive, tracking_send)
        except _RefusedError as err:
            if started:  # pragma: no cover - the app reads the body before answering
                raise
            retry = [(b"retry-after", b"1")] if err.status == 503 else []
            await send_error(send, err.status, err.detail, retry)
        except _ClientGoneError:
            pass

    async def _guarded(self, scope: Scope, limit: int, receive: Receive, send: Send) -> None:
        size = _framing(scope.get("headers", []), limit)
        loop = asyncio.get_running_loop()
        reader = _BodyReader(receive, limit, self.limits, loop.time())
        held = size if size > SMALL_BODY else 0
        if held and not await self.budget.take(held, self.limits.body_timeout_s):
            raise _RefusedError(503, "the server is busy receiving other requests; try again")
        reader.room_at = loop.time()
        try:
            await self.app(scope, reader.receive, send)
        finally:
            self.budget.give(held)
