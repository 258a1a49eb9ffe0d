"""Request and token rate limits for the gateway (token buckets, in memory).

Buckets are keyed by (agency, session label): each agency has a requests-per-minute and a
tokens-per-minute bucket *at each label*, so traffic at one label never changes the answer
(429, ``Retry-After``) a session at another label gets. The buckets refill
continuously. A call is admitted when both buckets have room; tokens are charged after the
call with the real count (a bucket may go negative, which delays the next calls). A refusal
says how many seconds until the call would fit (``Retry-After``). Buckets are per process:
with N control-plane replicas an agency gets up to N times its rate (noted in the docs).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

Key = tuple[str, str]  # (agency name, session label marking)


@dataclass
class _Bucket:
    capacity: float
    level: float
    at: float

    def refill(self, rate_per_s: float, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * rate_per_s)
        self.at = now


class RateLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[Key, _Bucket] = {}
        self._tokens: dict[Key, _Bucket] = {}

    def admit(self, key: Key, rpm: int | None, tpm: int | None, now: float) -> float:
        """0 when the call may go (one request taken), else seconds to wait."""
        with self._lock:
            wait = 0.0
            req = self._bucket(self._requests, key, rpm, now)
            tok = self._bucket(self._tokens, key, tpm, now)
            if req is not None and req.level < 1:
                wait = max(wait, (1 - req.level) * 60.0 / rpm)  # type: ignore[operator]
            if tok is not None and tok.level <= 0:
                wait = max(wait, (1 - tok.level) * 60.0 / tpm)  # type: ignore[operator]
            if wait > 0:
                return max(1.0, math.ceil(wait))
            if req is not None:
                req.level -= 1
            return 0.0

    def charge_tokens(self, key: Key, tpm: int | None, tokens: int, now: float) -> None:
        with self._lock:
            tok = self._bucket(self._tokens, key, tpm, now)
            if tok is not None:
                tok.level -= tokens

    @staticmethod
    def _bucket(table: dict[Key, _Bucket], key: Key, per_minute: int | None, now: float) -> _Bucket | None:
        if per_minute is None:
            table.pop(key, None)
            return None
        bucket = table.get(key)
        if bucket is None or bucket.capacity != per_minute:
            bucket = table[key] = _Bucket(float(per_minute), float(per_minute), now)
        bucket.refill(per_minute / 60.0, now)
        return bucket
