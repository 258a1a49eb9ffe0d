"""In-memory counters that keep unauthenticated load cheap (one per server process).

* :class:`FailedAuthTally` counts failed authentications per (source, minute, kind) so
  that each becomes *one* audit record with a count, however many attempts were made: a
  flood of bad tokens cannot flood the log. Past ``max_sources`` distinct sources in a
  minute the rest are counted under one ``other`` source, so the records per minute are
  bounded too.
* :class:`AddressThrottle` bounds password attempts per client address (failures and
  attempts still in flight within a sliding window), checked before any database work or
  password hashing, beside the per-user lock-out kept in the store.

Sources are client addresses; an IPv6 address counts as its /64 (one host usually holds a
whole /64, so a per-address budget per /128 would be none).
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime

OTHER_SOURCES = "other"
MAX_SOURCES_PER_MINUTE = 1000
LOGIN_ADDRESS_MAX_ATTEMPTS = 20  # failed or in flight, per address, within the window
LOGIN_ADDRESS_WINDOW_S = 300.0
MAX_ADDRESSES = 100_000  # addresses tracked at once; the oldest are forgotten past this


def source_of(client: str | None) -> str:
    """The aggregation key of a client address (IPv6: its /64; not an address: as given)."""
    if not client:
        return "unknown"
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def minute_of(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class Tallied:
    minute: str
    source: str
    kind: str
    count: int


class FailedAuthTally:
    def __init__(self, max_sources: int = MAX_SOURCES_PER_MINUTE) -> None:
        self.max_sources = max_sources
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}
        self._sources: dict[str, set[str]] = {}  # minute -> distinct sources tallied

    def note(self, source: str, kind: str, now: datetime) -> None:
        minute = minute_of(now)
        with self._lock:
            seen = self._sources.setdefault(minute, set())
            if source not in seen:
                if len(seen) >= self.max_sources:
                    source = OTHER_SOURCES
                seen.add(source)
            key = (minute, source, kind)
            self._counts[key] = self._counts.get(key, 0) + 1

    def drain(self, now: datetime, everything: bool = False) -> list[Tallied]:
        """Take the counts of the minutes that have ended (all of them with ``everything``)."""
        current = minute_of(now)
        with self._lock:
            done = [k for k in self._counts if everything or k[0] < current]
            out = [Tallied(m, s, kind, self._counts.pop((m, s, kind))) for m, s, kind in sorted(done)]
            for minute in [m for m in self._sources if everything or m < current]:
                del self._sources[minute]
        return out

    def put_back(self, items: list[Tallied]) -> None:
        """Counts that could not be recorded: kept for the next try."""
        with self._lock:
            for t in items:
                key = (t.minute, t.source, t.kind)
                self._counts[key] = self._counts.get(key, 0) + t.count

    def pending(self) -> int:
        with self._lock:
            return sum(self._counts.values())


class AddressThrottle:
    def __init__(
        self,
        max_attempts: int = LOGIN_ADDRESS_MAX_ATTEMPTS,
        window_s: float = LOGIN_ADDRESS_WINDOW_S,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self.max_attempts = max_attempts
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._lock = threading.Lock()
        self._attempts: dict[str, deque[float]] = {}

    def begin(self, source: str, now: float) -> int:
        """Count an attempt from ``source`` at ``now`` (seconds); 0 when it may go on, else the
        seconds until it would (the attempt is then not counted)."""
        with self._lock:
            times = self._attempts.get(source)
            if times is None:
                if len(self._attempts) >= self.max_addresses:
                    self._forget(now)
                times = self._attempts[source] = deque()
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) >= self.max_attempts:
                return max(1, math.ceil(times[0] + self.window_s - now))
            times.append(now)
            return 0

    def succeeded(self, source: str) -> None:
        """A successful login does not count against its address."""
        with self._lock:
            times = self._attempts.get(source)
            if times:
                times.pop()

    def _forget(self, now: float) -> None:
        """Drop addresses with nothing in the window; if none, the least recently used half."""
        stale = [a for a, t in self._attempts.items() if not t or t[-1] <= now - self.window_s]
        if not stale:
            by_age = sorted(self._attempts.items(), key=lambda item: item[1][-1])
            stale = [a for a, _ in by_age[: len(by_age) // 2 + 1]]
        for address in stale:
            del self._attempts[address]
