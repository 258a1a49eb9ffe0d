"""An endpoint whose replica cannot start says why, backs off, and gives up.

Found by a user: the builtin MiniLM deployed with a memory limit too small for torch restarted
its replica 40 times in 300 s while the endpoint said only "starting replicas". Here the same
deployment (for real: the replica runs confined under its address-space limit and fails to
load torch) must end `failed` after a bounded number of tries, with the last replica's exit
and the tail of its stderr, the tries spaced further and further apart; scaling it again
starts it afresh.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx

from enclave.services.endpoints import BACKOFF_FIRST_S, MAX_FAILED_STARTS
from tests.conftest import Server


def _ok(r: httpx.Response, status: int = 200) -> dict:
    assert r.status_code == status, r.text
    return dict(r.json())


def test_a_replica_that_cannot_start_fails_the_endpoint_with_its_reason(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = live_server(tmp_path / "home")
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=60
    ) as api:
        model = _ok(api.post("/v1/registry/builtin-models", json={"name": "m", "builtin": "minilm"}), 201)
        _ok(api.post("/v1/endpoints", json={"model": model["id"], "name": "tiny", "memory_mb": 300}), 201)
        seen_reasons = set()
        deadline = time.monotonic() + 150
        while (ep := _ok(api.get("/v1/endpoints/tiny")))["state"] != "failed":
            assert time.monotonic() < deadline, f"the endpoint never gave up: {ep['reason']!r}"
            seen_reasons.add(ep["reason"])
            time.sleep(0.25)
        # While it retried, it said why (not only "starting replicas") ...
        assert any(r and "ended before serving" in r for r in seen_reasons), seen_reasons
        assert any(r and "next try in" in r for r in seen_reasons), seen_reasons
        # ... and it gave up with the last replica's exit: the memory limit, what to do.
        reason = ep["reason"]
        assert f"{MAX_FAILED_STARTS} replica(s) in a row" in reason and "gave up" in reason, reason
        assert "memory limit (300 MB)" in reason and "--memory-mb" in reason, reason
        last = ep["last_exit"]
        assert last["exit_code"] not in (None, 0) and "torch" in last["stderr_tail"], last
        # The tries were spaced further and further apart (1 s, 2 s, 4 s ... after each failure).
        with sqlite3.connect(server.home / "enclave.db") as db:
            submitted = [
                datetime.fromisoformat(str(row[0]))
                for row in db.execute("SELECT submitted_at FROM jobs WHERE kind = 'replica' ORDER BY seq")
            ]
        assert len(submitted) == MAX_FAILED_STARTS, submitted  # and none after it gave up
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(submitted)]
        for i, gap in enumerate(gaps):
            assert gap >= BACKOFF_FIRST_S * 2**i * 0.9, gaps
        # No more replicas once failed.
        time.sleep(2 * BACKOFF_FIRST_S)
        assert _ok(api.get("/v1/endpoints/tiny"))["state"] == "failed"
        # Scaling it again starts it afresh.
        again = _ok(api.post("/v1/endpoints/tiny/scale", json={"replicas": 1}))
        assert again["state"] == "deploying", again
