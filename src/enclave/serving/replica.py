"""The replica process: load one model, serve it, report the port once ready, drain on SIGTERM.

    python -m enclave.serving.replica --runtime RUNTIME [--model-dir DIR] --port-file FILE
        [--host 127.0.0.1 | --socket PATH] [--name NAME] [--upstream URL] [--allow-pickle]

The port is ephemeral (``host:0``); it is written to FILE atomically (temp file + rename) only
once the model is loaded and the socket accepts requests, so "FILE exists" means "ready".
SIGTERM (or SIGINT) stops accepting connections, lets in-flight requests (streams included)
finish and exits 0; while the model is still loading it exits 0 at once. Exit 2: bad arguments,
or the model could not be loaded (the reason is one line on stderr, and no port file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import uvicorn

from enclave.serving.runtimes import RUNTIMES, ModelError, Options, Runtime

# Idle keep-alive connections live this long, so a gateway's pool (shorter expiry) never reuses
# one the replica is closing.
KEEP_ALIVE_S = 30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m enclave.serving.replica", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runtime", required=True, choices=sorted(RUNTIMES))
    parser.add_argument(
        "--model-dir", type=Path, help="the model directory ('minilm' or none: the builtin model)"
    )
    parser.add_argument("--port-file", type=Path, required=True, help="where to write the port once ready")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--socket",
        type=Path,
        help="serve on this Unix socket instead of a TCP port (the port file then says 0)",
    )
    parser.add_argument("--name", default="model", help="the model id /v1/models reports")
    parser.add_argument("--upstream", help="openai-upstream: the upstream base URL, e.g. http://host:8001/v1")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="the region allows pickled models (joblib, TorchScript): load one when the safe format is absent",
    )
    return parser.parse_args(argv)


def write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, port_file: Path, port: int) -> None:
        super().__init__(config)
        self.port_file = port_file
        self.port = port

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            write_port_file(self.port_file, self.port)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises a caught SIGTERM after its graceful shutdown, so the process would end
        # "killed by signal"; a drained replica is a clean exit (0) for the executor.
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


async def _load(runtime: str, options: Options) -> Runtime | None:
    """Load on a worker thread; a SIGTERM meanwhile ends the process at once (nothing is served yet)."""
    loop = asyncio.get_running_loop()
    loaded: asyncio.Future[Runtime] = loop.create_future()
    stop = asyncio.Event()

    def work() -> None:
        try:
            result = RUNTIMES[runtime](options)
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, loaded, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, loaded, result, None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A daemon thread, so that an abandoned load does not hold the exit up.
    threading.Thread(target=work, name="load-model", daemon=True).start()
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([loaded, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if not loaded.done():
        return None
    return loaded.result()


def _settle(future: asyncio.Future[Runtime], result: Runtime | None, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert result is not None
        future.set_result(result)


async def serve(args: argparse.Namespace) -> int:
    from enclave.serving.app import create_app

    if not args.port_file.parent.is_dir():
        raise ModelError(f"the port file's directory {args.port_file.parent} does not exist")
    options = Options(model_dir=args.model_dir, upstream=args.upstream, allow_pickle=args.allow_pickle)
    runtime = await _load(args.runtime, options)
    if runtime is None:
        sys.stderr.flush()
        os._exit(0)  # asked to stop while loading: leave without waiting for the loader thread
    if args.socket is not None:
        # A confined replica: reachable only through this socket, in a folder of the control
        # plane's (the gateway checks the peer's uid on every connection).
        args.socket.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        folder = os.open(args.socket.parent, os.O_PATH | os.O_DIRECTORY)
        try:  # a socket address holds 107 bytes: name the socket through its folder
            sock.bind(f"/proc/self/fd/{folder}/{args.socket.name}")
        finally:
            os.close(folder)
        os.chmod(args.socket, 0o600)
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    config = uvicorn.Config(
        create_app(runtime, args.name),
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    port = 0 if args.socket is not None else sock.getsockname()[1]
    server = _Server(config, args.port_file, port)
    try:
        await server.serve(sockets=[sock])
    finally:
        await runtime.aclose()
    return 0


def _loop_factory() -> object:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:  # type: ignore[arg-type]
            code = runner.run(serve(args))
    except ModelError as exc:
        print(f"replica: cannot start: {exc}", file=sys.stderr)
        return 2
    # Drained and closed: skip the interpreter's teardown of torch & co., which takes seconds and
    # would eat into the executor's grace period for nothing.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
