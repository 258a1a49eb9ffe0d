"""Runtime work off the event loop: one inference thread, streamed generations, batched embeddings.

All model calls go through one worker thread (a runtime is thus never used concurrently, and
torch keeps the ``ENCLAVE_CPUS`` threads it was given), while the event loop keeps answering
``/health`` and relaying pieces of text as they are produced.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from enclave.serving.runtimes import Finish, Generation, Runtime

T = TypeVar("T")
MAX_BATCH = 256  # texts per encode call when coalescing requests


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class Worker:
    """The replica's single inference thread."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="inference")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


class GenerationStream:
    """A ``complete()`` generator run on the worker, its pieces handed to the event loop as produced."""

    def __init__(self, worker: Worker, make: Callable[[], Generation]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._make = make
        self._head: tuple[str, Any] | None = None
        self.finish = Finish()
        self.text = ""
        worker.pool.submit(self._run)

    def _run(self) -> None:
        generation = self._make()
        try:
            while not self._cancelled.is_set():
                try:
                    piece = next(generation)
                except StopIteration as end:
                    self._put(("done", end.value or Finish()))
                    return
                self._put(("piece", piece))
            generation.close()  # the client went away: stop computing
        except Exception as exc:
            self._put(("error", exc))

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed
            self._cancelled.set()

    async def open(self) -> None:
        """Wait for the first piece, so bad input fails the request (400) before any byte is sent."""
        self._head = await self._queue.get()
        if self._head[0] == "error":
            raise self._head[1]

    async def pieces(self) -> AsyncIterator[str]:
        item = self._head or await self._queue.get()
        self._head = None
        while True:
            kind, value = item
            if kind == "piece":
                self.text += value
                yield value
            elif kind == "done":
                self.finish = value
                return
            else:
                raise value
            item = await self._queue.get()

    async def collect(self) -> str:
        async for _ in self.pieces():
            pass
        return self.text

    def cancel(self) -> None:
        self._cancelled.set()

    def abort(self) -> None:
        """Stop the work and make a waiting consumer raise ``ClientGone`` (call on the event loop)."""
        self.cancel()
        self._queue.put_nowait(("error", ClientGone()))


class EmbedBatcher:
    """Coalesces concurrent embedding requests into one encode call (a request is never split)."""

    def __init__(self, runtime: Runtime, worker: Worker, max_batch: int = MAX_BATCH) -> None:
        self.runtime = runtime
        self.worker = worker
        self.max_batch = max_batch
        self._pending: list[tuple[list[str], asyncio.Future[tuple[np.ndarray, int]]]] = []
        self._task: asyncio.Task[None] | None = None

    async def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Vectors (one row per text) and the texts' token count."""
        future: asyncio.Future[tuple[np.ndarray, int]] = asyncio.get_running_loop().create_future()
        self._pending.append((texts, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch: list[tuple[list[str], asyncio.Future[tuple[np.ndarray, int]]]] = []
            size = 0
            while self._pending and (not batch or size + len(self._pending[0][0]) <= self.max_batch):
                texts, future = self._pending.pop(0)
                size += len(texts)
                if not future.done():  # a request whose client left is dropped
                    batch.append((texts, future))
            if not batch:
                continue
            flat = [t for texts, _ in batch for t in texts]
            try:
                vectors, counts = await self.worker.call(self._encode, flat)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for texts, future in batch:
                end = start + len(texts)
                if not future.done():
                    future.set_result((vectors[start:end], sum(counts[start:end])))
                start = end

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        return self.runtime.embed(texts), [self.runtime.count_tokens(t) for t in texts]
