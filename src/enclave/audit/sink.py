"""Append-only sinks for signed checkpoints, and reading them back.

The local checkpoint (``audit/checkpoint.json``) lives beside the store, so whoever can
write the store can delete the newest records, move the head back and put an older
checkpoint back. A copy of every checkpoint shipped somewhere that can only be appended
to defeats that: ``verify`` then compares the chain with the newest checkpoint of the sink.

* :class:`FileSink` appends one line per checkpoint to a file opened ``O_APPEND`` (it never
  truncates, seeks or rewrites). It only helps if the store's attacker cannot rewrite that
  file: another owner, another machine (an NFS export, a log shipper) or ``chattr +a``.
* :class:`SyslogSink` sends each line to syslog (``/dev/log`` or a remote ``host:port`` over
  UDP, facility ``authpriv``), where the host's log pipeline takes it out of reach.

A line is ``enclave-audit-checkpoint {json}``; :func:`read_sink` finds such lines anywhere
in a file (a syslog export prefixes them with a date, host and tag) and ignores the rest.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from enclave.audit.chain import Checkpoint, canonical_json

SINK_TAG = "enclave-audit-checkpoint"
SYSLOG_IDENT = "enclave-audit: "


class Sink(Protocol):
    def ship(self, line: str) -> None: ...

    def close(self) -> None: ...


def checkpoint_line(cp: Checkpoint, key: str) -> str:
    """One sink line: the tag, then the checkpoint and the public key that signed it."""
    body = {"seq": cp.seq, "hash": cp.hash, "ts": cp.ts, "signature": cp.signature, "key": key}
    return f"{SINK_TAG} {canonical_json(body)}"


class FileSink:
    """Appends lines to a file opened ``O_WRONLY | O_APPEND`` (created 0600 if missing).

    Each line goes out in one ``write``: on a local file system appends by several
    processes do not interleave. Not fsync'ed per line (the database commit is not waited
    for either); an operating-system crash can lose the last lines, never rewrite older ones.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def ship(self, line: str) -> None:
        if self._fd is not None:
            os.write(self._fd, (line + "\n").encode())

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class SyslogSink:
    """Sends lines to syslog: ``/dev/log`` (or another local socket path) or ``host:port`` (UDP)."""

    def __init__(self, address: str) -> None:
        target: str | tuple[str, int]
        if address.startswith("/"):
            target = address
        else:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"audit syslog address must be a socket path or host:port, not {address!r}")
            target = (host.strip("[]"), int(port))
        self._handler = logging.handlers.SysLogHandler(
            address=target,
            facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV,
            socktype=socket.SOCK_DGRAM,
        )
        self._handler.ident = SYSLOG_IDENT
        self._handler.append_nul = False

    def ship(self, line: str) -> None:
        record = logging.LogRecord("enclave.audit", logging.INFO, "", 0, line, None, None)
        self._handler.emit(record)

    def close(self) -> None:
        self._handler.close()


def open_sinks(file: Path | None, syslog: str | None) -> list[Sink]:
    """The configured sinks (none, one or both)."""
    sinks: list[Sink] = []
    if file is not None:
        sinks.append(FileSink(file))
    if syslog:
        sinks.append(SyslogSink(syslog))
    return sinks


@dataclass(frozen=True)
class SinkEntry:
    line: int  # 1-based, in its file
    checkpoint: Checkpoint
    key: str


class SinkError(ValueError):
    pass


def parse_sink(lines: Iterable[str]) -> list[SinkEntry]:
    """Every checkpoint line; a tagged line that does not parse raises :class:`SinkError`
    (a damaged sink is reported, never skipped)."""
    out: list[SinkEntry] = []
    for number, text in enumerate(lines, 1):
        at = text.find(SINK_TAG)
        if at < 0:
            continue
        try:
            data = json.loads(text[at + len(SINK_TAG) :].strip().rstrip("\x00"))
            cp = Checkpoint(int(data["seq"]), str(data["hash"]), str(data["ts"]), str(data["signature"]))
            out.append(SinkEntry(number, cp, str(data.get("key", ""))))
        except (ValueError, KeyError, TypeError):
            raise SinkError(f"line {number} of the sink is not a readable checkpoint") from None
    return out


def read_sink(path: Path) -> list[SinkEntry]:
    with path.open(encoding="utf-8", errors="replace") as fh:
        return parse_sink(fh)


def to_check(entries: Sequence[SinkEntry], limit: int = 1000) -> list[Checkpoint]:
    """The checkpoints of a sink worth comparing with the chain: the newest, and the newest
    before each place where the sequence numbers go back (at most ``limit``, newest first).

    One writer appends checkpoints in increasing order, so a step back means the log was
    truncated in between: the server went on from an earlier head, and the newest checkpoint
    before the step holds the records that disappeared. A genuine checkpoint pins the whole
    chain up to it, so the others add nothing. (Several writers sharing one sink interleave
    steps back that are harmless: those checkpoints simply match the chain.)
    """
    picked: dict[Checkpoint, None] = {}
    best: Checkpoint | None = None
    for entry in entries:
        cp = entry.checkpoint
        if best is not None and cp.seq < best.seq:
            picked[best] = None
        if best is None or cp.seq >= best.seq:
            best = cp
    if best is not None:
        picked[best] = None
    return sorted(picked, key=lambda cp: cp.seq, reverse=True)[:limit]
