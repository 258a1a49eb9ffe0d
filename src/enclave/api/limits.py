"""ASGI middleware capping request bodies before any route or parser sees them."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave.api.problems import PROBLEM_JSON


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
