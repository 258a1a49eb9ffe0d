"""A small HTTP/1.1 client for the gateway's hop to endpoint replicas.

The hop is the gateway's hot path, and a general-purpose client (httpx over httpcore and
anyio) spent about half of the gateway's CPU on it: it checks every pooled connection for
expiry on every request and goes through several stream layers per read. This client does
only what the hop needs: ``POST`` a JSON body to a replica (``http://``, usually loopback)
over pooled keep-alive connections, one ``asyncio.Protocol`` per connection, answers parsed
by ``httptools`` (the C parser uvicorn uses), bodies read whole or streamed chunk by chunk
with back-pressure.

Errors: :class:`UpstreamError` when the replica cannot be reached or drops the connection
before its answer is complete (the gateway then tries another replica). A pooled connection
that the replica closed while it sat idle is seen (its protocol got the close) and not
reused; a request that fails on a reused connection before any byte of answer came back is
sent once more on a fresh connection, as the replica may have closed it just as it went out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import httptools

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 300.0  # longest silence from a replica before the call fails
MAX_CONNECTIONS = 512  # per replica; further calls wait for one to come free
MAX_IDLE = 128  # keep-alive connections pooled per replica
HIGH_WATER = 256 * 1024  # streamed bytes buffered before reading from the replica pauses


class UpstreamError(Exception):
    """The replica could not be reached, or failed before its answer was complete."""


class Response:
    """One answer: the status once the head is in, the body as it arrives."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_complete",
        "_conn",
        "_error",
        "_head",
        "_release",
        "_waiter",
        "headers",
        "status_code",
    )

    def __init__(self, conn: _Connection, head: asyncio.Future[None], release: Callable[[], None]) -> None:
        self.status_code = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._conn: _Connection | None = conn
        self._head = head
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._complete = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._release: Callable[[], None] | None = release  # the connection slot, given back once

    # -- fed by the connection -------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self, error: UpstreamError | None = None) -> None:
        if self._complete:
            return
        self._complete = True
        self._error = error
        self._conn = None
        if not self._head.done():
            if error is None:
                self._head.set_result(None)
            else:
                self._head.set_exception(error)
        release, self._release = self._release, None
        if release is not None:
            release()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- read by the caller ----------------------------------------------------------------
    async def aread(self) -> bytes:
        while not self._complete:
            await self._wait()
        if self._error is not None:
            raise self._error
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._buffered -= len(data)
                if self._conn is not None and self._buffered <= HIGH_WATER // 2:
                    self._conn.resume()
                yield data
            elif self._complete:
                if self._error is not None:
                    raise self._error
                return
            else:
                await self._wait()

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body's lines as text (``\\n``, ``\\r\\n`` or ``\\r`` ends one), without their ends."""
        rest = ""
        async for data in self.aiter_bytes():
            lines = (rest + data.decode("utf-8", "replace")).splitlines(keepends=True)
            # An unended last line, or one ending in \r (maybe half of a \r\n), waits for more.
            rest = lines.pop() if lines and not lines[-1].endswith("\n") else ""
            for line in lines:
                yield line.rstrip("\r\n")
        if rest:
            yield rest.rstrip("\r\n")

    async def aclose(self) -> None:
        """Done with the answer: an incomplete one is abandoned with its connection."""
        conn = self._conn
        if not self._complete:
            self._finish(UpstreamError("closed before the answer was complete"))
            if conn is not None:
                conn.abandon(self)
        self._chunks.clear()
        self._buffered = 0


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a replica, one request at a time."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.loop = origin.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.lost = False
        self.received = False  # any byte of the current answer
        self.paused = False
        self.last_read = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.until_eof = False  # the answer's body runs until the connection closes
        self.keep_alive = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def data_received(self, data: bytes) -> None:
        if self.response is None:
            self.close()  # nothing was asked: not an answer to us
            return
        self.received = True
        self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the replica's answer is not valid HTTP: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.origin.forget(self)
        if self.response is not None:
            if self.until_eof and self.response.status_code:
                self._complete()
            else:
                self._fail(UpstreamError("the replica closed the connection before answering in full"))

    # -- httptools callbacks ---------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        response.status_code = self.parser.get_status_code()
        names = {n.lower() for n, _ in response.headers}
        self.until_eof = b"content-length" not in names and b"transfer-encoding" not in names
        self.keep_alive = self.parser.should_keep_alive()
        if not response._head.done():
            response._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        self._complete()

    # -- one request -----------------------------------------------------------------------
    def send(self, head: bytes, body: bytes, release: Callable[[], None]) -> Response:
        assert self.transport is not None
        response = self.response = Response(self, self.loop.create_future(), release)
        self.received = False
        self.until_eof = False
        self.last_read = self.loop.time()
        self.timer = self.loop.call_at(self.last_read + self.origin.read_timeout, self._on_timer)
        self.transport.write(head + body)
        return response

    def _complete(self) -> None:
        response, self.response = self.response, None
        self._cancel_timer()
        if response is None:
            return
        reuse = not self.lost and not self.until_eof and self.keep_alive
        response._finish()
        if reuse:
            self.origin.put_back(self)
        else:
            self.close()

    def _fail(self, error: UpstreamError) -> None:
        response, self.response = self.response, None
        self._cancel_timer()
        self.close()
        if response is not None:
            response._finish(error)

    def abandon(self, response: Response) -> None:
        if self.response is response:
            self.response = None
            self._cancel_timer()
            self.close()

    def _on_timer(self) -> None:
        self.timer = None
        if self.response is None:
            return
        due = self.last_read + self.origin.read_timeout
        if self.loop.time() < due:
            self.timer = self.loop.call_at(due, self._on_timer)
            return
        self._fail(UpstreamError(f"the replica sent nothing for {self.origin.read_timeout:g} s"))

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.lost:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.lost:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.lost = True
        self.origin.forget(self)
        if self.transport is not None:
            self.transport.abort()


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """A short name for a Unix socket at ``path`` while the block runs: a socket address holds
    at most 107 bytes, and a replica's socket lies deep in the control plane's folders. The
    folder is held open and the socket named through it (``/proc/self/fd/N/name``)."""
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class _Origin:
    """The connections to one replica: a host and port, or — for a confined replica — a Unix
    socket whose peer must be the replica's own uid (``peer_uid``)."""

    def __init__(
        self, client: Client, host: str, port: int, prefix: bytes, socket_path: str = "", peer_uid: int = -1
    ) -> None:
        self.loop = client.loop
        self.host, self.port, self.prefix = host, port, prefix
        self.socket_path, self.peer_uid = socket_path, peer_uid
        self.read_timeout = client.read_timeout
        self.connect_timeout = client.connect_timeout
        self.idle: list[_Connection] = []
        self.open: set[_Connection] = set()
        self.slots = asyncio.Semaphore(client.max_connections)
        self.authority = f"{host}:{port}".encode("ascii")

    def take_idle(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.lost and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def connect(self) -> _Connection:
        try:
            if self.socket_path:
                made = self.loop.create_unix_connection(
                    lambda: _Connection(self), sock=await self._unix_socket()
                )
            else:
                made = self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
            _transport, conn = await asyncio.wait_for(made, self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            where = self.socket_path or f"{self.host}:{self.port}"
            raise UpstreamError(f"cannot connect to {where}: {exc!r}") from exc
        self.open.add(conn)
        return conn

    async def _unix_socket(self) -> socket.socket:
        """A connected socket whose peer is the replica's uid. The socket file lies in a folder
        the replica can write to, so the path alone proves nothing (it could be a link to
        another replica's socket); the kernel's word on the peer's identity does."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            with socket_address(Path(self.socket_path)) as address:
                await asyncio.wait_for(self.loop.sock_connect(sock, address), self.connect_timeout)
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid & 0xFFFFFFFF != self.peer_uid:
                raise UpstreamError(f"the process behind {self.socket_path} is not the replica")
        except BaseException:
            sock.close()
            raise
        return sock

    def put_back(self, conn: _Connection) -> None:
        if len(self.idle) < MAX_IDLE:
            self.idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: _Connection) -> None:
        self.open.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        for conn in list(self.open):
            conn.close()
        self.open.clear()
        self.idle.clear()


class Client:
    """Pooled keep-alive connections to replicas; for use on the event loop that made it."""

    def __init__(
        self,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._origins: dict[str, _Origin] = {}

    def _origin(self, base_url: str) -> _Origin:
        origin = self._origins.get(base_url)
        if origin is None:
            if base_url.startswith("unix:"):  # unix:<peer uid>:<socket path>
                uid, _, path = base_url[5:].partition(":")
                origin = _Origin(self, "localhost", 0, b"", socket_path=path, peer_uid=int(uid))
                origin.authority = b"localhost"
                self._origins[base_url] = origin
                return origin
            parts = urlsplit(base_url)
            if parts.scheme != "http" or not parts.hostname:
                raise UpstreamError(f"unsupported replica address {base_url!r}")
            prefix = parts.path.rstrip("/").encode()
            origin = self._origins[base_url] = _Origin(self, parts.hostname, parts.port or 80, prefix)
        return origin

    async def post(self, base_url: str, path: str, body: bytes) -> Response:
        """POST a JSON ``body`` to ``base_url + path``; returns once the answer's head is in.

        Read the body with :meth:`Response.aread` or iterate it, then :meth:`Response.aclose`.
        """
        origin = self._origin(base_url)
        head = b"".join(
            (
                b"POST ",
                origin.prefix,
                path.encode(),
                b" HTTP/1.1\r\nhost: ",
                origin.authority,
                b"\r\ncontent-type: application/json\r\ncontent-length: ",
                str(len(body)).encode(),
                b"\r\n\r\n",
            )
        )
        response = await self._send(origin, head, body, fresh=False)
        if response is None:  # the reused connection was closed under us: once more, fresh
            response = await self._send(origin, head, body, fresh=True)
            assert response is not None
        return response

    async def _send(self, origin: _Origin, head: bytes, body: bytes, fresh: bool) -> Response | None:
        """One attempt; None if a reused connection failed before any byte of answer."""
        await origin.slots.acquire()
        conn = None if fresh else origin.take_idle()
        if conn is None:
            try:
                conn = await origin.connect()
            except BaseException:
                origin.slots.release()
                raise
            reused = False
        else:
            reused = True
        response = conn.send(head, body, origin.slots.release)
        try:
            await response._head
        except UpstreamError:
            if reused and not conn.received:
                return None
            raise
        except BaseException:  # cancelled (the caller went away): abandon the connection
            await response.aclose()
            raise
        return response

    def close(self) -> None:
        for origin in self._origins.values():
            origin.close()
        self._origins.clear()
