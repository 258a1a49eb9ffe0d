"""Limits on what a client can make the server hold or do before any route sees the request.

* :class:`BodyLimit` caps request bodies (413).
* :class:`RequestGuard` bounds how long a body may take to arrive (408: a slow client must
  not hold a connection and its task forever), refuses JSON nested deeper than
  ``MAX_JSON_DEPTH`` on every route (400: parsers and validators recurse; a deep enough
  document was a 500), lets at most ``LOGIN_CONCURRENCY`` password logins in at once (the
  rest are answered 429 from the event loop, so a login flood never fills the worker
  threads every other route needs), and tells the failed-authentication tally about every
  401 and every login turned away.
* :class:`HeaderTimeoutProtocol` is uvicorn's HTTP protocol with a deadline on the request
  line and headers (408), which uvicorn lacks: a slowloris client trickling one header byte
  at a time otherwise holds its connection for ever. ``enclave up`` runs with it.
"""

from __future__ import annotations

import asyncio
import json
import re
from asyncio import TimerHandle
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from enclave.api.problems import PROBLEM_JSON, problem

HEADER_TIMEOUT_S = 10.0  # request line and headers, from the first byte (or the connection)
BODY_IDLE_S = 10.0  # longest silence while a body is still arriving
BODY_GRACE_S = 10.0  # then the body must average at least BODY_MIN_BYTES_PER_S
BODY_MIN_BYTES_PER_S = 1024
MAX_JSON_DEPTH = 64  # nested arrays/objects; no Enclave or OpenAI request comes near it
LOGIN_PATH = "/v1/auth/login"  # its failures are audited by the login itself
LOGIN_CONCURRENCY = 4  # password logins in flight at once; more are answered 429 at once


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Reject bodies above ``default_bytes`` (or a per-route limit) with 413 problem+json.

    Checks Content-Length up front and counts streamed bytes for chunked bodies, so a
    client cannot exceed the limit by lying about or omitting the length.
    """

    def __init__(self, app: ASGIApp, default_bytes: int, overrides: dict[tuple[str, str], int]) -> None:
        self.app = app
        self.default = default_bytes
        self.overrides = overrides

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get((scope["method"], scope["path"].rstrip("/")), self.default)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1
                if declared > limit:
                    await _reject(send, scope["path"], limit)
                    return
        seen = 0
        started = exceeded = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # The app may catch the interruption and answer on its own (FastAPI turns an
                # error while reading a JSON body into 400): that answer is replaced by 413.
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _reject(send, scope["path"], limit)


async def _reject(send: Send, path: str, limit: int) -> None:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": "Too large",
        "status": 413,
        "detail": f"request body exceeds the limit of {limit} bytes",
        "instance": path,
    }
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(raw)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


# -- JSON nesting ----------------------------------------------------------------------------
# A JSON string, escapes included; an unterminated one runs to the end (so the search never
# backtracks over the rest of the body: linear time on any input).
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\Z)', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body`` nests arrays/objects more than ``limit`` deep (brackets inside strings
    do not count). Most bodies are decided by counting brackets; the rest in one C-level pass."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    steps = _STRING.sub(b"", body).translate(_STEPS, _NOT_BRACKETS)
    if not steps:
        return False
    depth = np.cumsum(np.frombuffer(steps, dtype=np.int8), dtype=np.int64)
    return int(depth.max()) > limit


# -- the guard -------------------------------------------------------------------------------
class _SlowBody(Exception):
    pass


_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_RAW_BODY_TYPES = (b"multipart/", b"application/octet-stream")


class RequestGuard:
    """Body deadlines, a JSON depth limit and the 401 tally, for every HTTP request.

    JSON bodies (any body that is not multipart or octet-stream: FastAPI parses a body
    without a content type as JSON, the gateway parses whatever it gets) are read here
    first, under the deadlines, checked for depth and handed on in one piece. Raw bodies
    (uploads) stream through, under the same deadlines. ``on_unauthenticated(source)`` is
    called for each 401 answered outside the password login.
    """

    def __init__(
        self,
        app: ASGIApp,
        on_unauthenticated: Callable[[Scope, str], None] | None = None,
        max_depth: int = MAX_JSON_DEPTH,
        login_concurrency: int = LOGIN_CONCURRENCY,
    ) -> None:
        self.app = app
        self.on_unauthenticated = on_unauthenticated
        self.max_depth = max_depth
        self.login_concurrency = login_concurrency
        self._logins = 0  # in flight (one event loop: no lock needed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == LOGIN_PATH:
            await self._login(scope, receive, send)
            return
        await self._guarded(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._logins >= self.login_concurrency:
            if self.on_unauthenticated is not None:
                self.on_unauthenticated(scope, "login_busy")
            response = problem(
                429, "Too many requests", "too many logins at once; retry in a moment", scope["path"]
            )
            response.headers["Retry-After"] = "1"
            await response(scope, receive, send)
            return
        self._logins += 1
        try:
            await self._guarded(scope, receive, send)
        finally:
            self._logins -= 1

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        tally = self.on_unauthenticated
        started = False
        timed_out = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return  # the app's own answer to the interruption: replaced by 408 below
            if message["type"] == "http.response.start":
                started = True
                if message["status"] == 401 and tally is not None and scope["path"] != LOGIN_PATH:
                    tally(scope, "bearer")
            await send(message)

        if scope["method"] in _NO_BODY_METHODS and not _declares_body(scope):
            await self.app(scope, receive, watched_send)
            return
        body_receive = _Deadlines(receive)
        try:
            if _is_raw(scope):
                await self.app(scope, body_receive, watched_send)
                return
            body = await body_receive.read_all()
            if json_too_deep(body, self.max_depth):
                await problem(
                    400,
                    "Bad request",
                    f"the JSON body nests deeper than {self.max_depth} levels",
                    scope["path"],
                )(scope, receive, watched_send)
                return
            await self.app(scope, _Replay(body, receive), watched_send)
        except _SlowBody:
            timed_out = True
        except Exception:
            if not body_receive.expired:
                raise
            timed_out = True  # the app failed on the interrupted body (and answered or not)
        if timed_out and not started:
            response = problem(
                408,
                "Request timeout",
                f"the request body arrived too slowly (at least {BODY_MIN_BYTES_PER_S} bytes/s "
                f"after {BODY_GRACE_S:g} s, no pause over {BODY_IDLE_S:g} s)",
                scope["path"],
            )
            response.headers["Connection"] = "close"
            await response(scope, receive, send)


def _declares_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


def _is_raw(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.lower().lstrip().startswith(_RAW_BODY_TYPES)
    return False


class _Deadlines:
    """``receive`` with the body's deadlines: no silence over BODY_IDLE_S, and after
    BODY_GRACE_S an average of at least BODY_MIN_BYTES_PER_S. Once the body is complete,
    calls pass straight through (a streaming answer waits on receive for the disconnect)."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self._bytes = 0
        self._done = False
        self.expired = False

    async def __call__(self) -> Message:
        if self._done:
            return await self._receive()
        now = self._loop.time()
        deadline = self._start + BODY_GRACE_S + self._bytes / BODY_MIN_BYTES_PER_S
        wait = min(BODY_IDLE_S, deadline - now)
        if wait <= 0:
            self.expired = True
            raise _SlowBody
        try:
            async with asyncio.timeout(wait):
                message = await self._receive()
        except TimeoutError:
            self.expired = True
            raise _SlowBody from None
        if message["type"] == "http.request":
            self._bytes += len(message.get("body", b""))
            self._done = not message.get("more_body", False)
        else:
            self._done = True
        return message

    async def read_all(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            message = await self()
            chunks.append(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return b"".join(chunks)


class _Replay:
    """The body read by the guard, as one message; then the real ``receive`` (disconnects)."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._first: Message | None = {"type": "http.request", "body": body, "more_body": False}
        self._receive = receive

    async def __call__(self) -> Message:
        if self._first is not None:
            message, self._first = self._first, None
            return message
        return await self._receive()


# -- header deadline (uvicorn) ---------------------------------------------------------------
_HEADER_TIMEOUT_BODY = json.dumps(
    {
        "type": "about:blank",
        "title": "Request timeout",
        "status": 408,
        "detail": f"the request headers did not arrive within {HEADER_TIMEOUT_S:g} s",
    }
).encode()
_HEADER_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: "
    + PROBLEM_JSON.encode()
    + b"\r\ncontent-length: "
    + str(len(_HEADER_TIMEOUT_BODY)).encode()
    + b"\r\nconnection: close\r\n\r\n"
    + _HEADER_TIMEOUT_BODY
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a deadline on the request line and headers.

    The clock starts when the connection opens and again when a new request's first byte
    arrives (the keep-alive timer covers idle connections in between); it stops once the
    headers are complete. A client that has not sent them by then is answered 408 and
    disconnected. ``enclave up`` passes this class as uvicorn's ``http``."""

    header_timeout_s = HEADER_TIMEOUT_S
    _header_timer: TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(_HEADER_TIMEOUT_RESPONSE)
            self.transport.close()
