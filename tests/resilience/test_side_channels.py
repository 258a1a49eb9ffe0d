"""Side channels of issue 12 (finding 6 and the idempotency leak of finding 2), each probe run
for real through the HTTP API, on SQLite and PostgreSQL.

The rule under test (DESIGN.md): nothing a session can observe depends on objects it may not
read — not ids, names, versions, counts, sizes, quotas, rate limits, error words or response
time. Every probe below is made twice from the lower session, once before and once after
the higher session acted (or against a name taken only above versus one nobody took); the
two answers must be the same.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from enclave.api.app import create_app
from enclave.services.context import Context

from ..api.helpers import (
    Headers,
    assert_problem,
    assert_same_404,
    audit_events_after,
    audit_seq,
    bearer,
    create_agency,
    create_user,
    ok,
    token_header,
)

TIMING_TRIES = 150  # per side, interleaved; the medians are compared
TIMING_TOLERANCE = 0.20


@dataclass
class Probe:
    client: TestClient
    ctx: Context
    admin: Headers  # the bootstrap admin (operator) at UNCLASSIFIED
    admin_s: Headers  # the same at SECRET
    alice_s: Headers  # alpha, SECRET
    alice_u: Headers  # alpha, UNCLASSIFIED
    dave_u: Headers  # alpha, UNCLASSIFIED (cleared UNCLASSIFIED only)


@pytest.fixture
def probe(ctx: Context) -> Iterator[Probe]:
    """The real app over the parametrised store, without the live loop: jobs stay pending and
    endpoints have no replica (a call is admitted, then answered 503), so every answer
    depends only on the store and the gateway's own state."""
    with TestClient(create_app(ctx=ctx, run_jobs=False)) as c:
        admin = bearer((ctx.settings.home / "admin.token").read_text().strip())
        c.headers.update(admin)
        create_agency(c, "alpha")
        create_user(c, "alice", "alpha", "SECRET")
        create_user(c, "dave", "alpha", "UNCLASSIFIED")
        yield Probe(
            client=c,
            ctx=ctx,
            admin=admin,
            admin_s=token_header(c, "admin", "SECRET"),
            alice_s=token_header(c, "alice", "SECRET"),
            alice_u=token_header(c, "alice", "UNCLASSIFIED"),
            dave_u=token_header(c, "dave", "UNCLASSIFIED"),
        )


def _job(p: Probe, headers: Headers, name: str, key: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "command": ["echo", name], "env": {"WHO": name}}
    if key is not None:
        body["idempotency_key"] = key
    return dict(ok(p.client.post("/v1/jobs", json=body, headers=headers), 201))


def _endpoint(p: Probe, headers: Headers, name: str) -> dict[str, Any]:
    model = ok(p.client.post("/v1/registry/builtin-models", json={"name": "minilm", "builtin": "minilm"}, headers=headers), 201)  # fmt: skip
    body = {"model": model["id"], "name": name, "replicas": 0, "min_replicas": 0, "max_replicas": 1}
    return dict(ok(p.client.post("/v1/endpoints", json=body, headers=headers), 201))


# -- finding 2: idempotency keys ------------------------------------------------------------------
def test_an_idempotency_key_used_at_secret_names_nothing_at_unclassified(probe: Probe) -> None:
    p = probe
    secret = _job(p, p.alice_s, "secret-sim", key="k-1")
    seq = audit_seq(p.ctx)
    lower = _job(p, p.alice_u, "public-sim", key="k-1")
    # A new job at the session label, made from what this request sent: nothing of SECRET's.
    assert lower["id"] != secret["id"] and lower["label"] == "UNCLASSIFIED"
    assert lower["name"] == "public-sim" and lower["command"] == ["echo", "public-sim"]
    assert lower["env"] == {"WHO": "public-sim"} and "secret" not in str(lower)
    assert audit_events_after(p.ctx, seq) == ["job.submitted"]  # made (and audited) like any job
    # The key still works as a key at each label, for its own job only.
    assert _job(p, p.alice_u, "again", key="k-1")["id"] == lower["id"]
    assert _job(p, p.alice_s, "again", key="k-1")["id"] == secret["id"]
    assert ok(p.client.get(f"/v1/jobs/{lower['id']}", headers=p.alice_u))["name"] == "public-sim"
    assert_same_404(
        p.client.get(f"/v1/jobs/{secret['id']}", headers=p.alice_u),
        secret["id"],
        p.client.get(f"/v1/jobs/{(other := str(uuid.uuid4()))}", headers=p.alice_u),
        other,
    )


# -- versions ---------------------------------------------------------------------------------
def test_dataset_and_model_versions_count_only_the_session_label(probe: Probe) -> None:
    p = probe
    for _ in range(2):
        ok(p.client.post("/v1/datasets", params={"name": "census"}, content=b"secret rows", headers=p.alice_s), 201)  # fmt: skip
        ok(p.client.post("/v1/registry/builtin-models", json={"name": "enc", "builtin": "minilm"}, headers=p.alice_s), 201)  # fmt: skip
    first = ok(
        p.client.post("/v1/datasets", params={"name": "census"}, content=b"rows", headers=p.dave_u), 201
    )
    model = ok(p.client.post("/v1/registry/builtin-models", json={"name": "enc", "builtin": "minilm"}, headers=p.dave_u), 201)  # fmt: skip
    assert first["version"] == 1 and model["version"] == 1  # was 3: two SECRET uploads counted
    second = ok(
        p.client.post("/v1/datasets", params={"name": "census"}, content=b"more", headers=p.alice_u), 201
    )
    assert second["version"] == 2
    assert ok(p.client.post("/v1/datasets", params={"name": "census"}, content=b"x", headers=p.alice_s), 201)["version"] == 3  # fmt: skip


# -- names and 409 -----------------------------------------------------------------------------
def test_an_endpoint_name_taken_at_secret_is_free_at_unclassified(probe: Probe) -> None:
    p = probe
    secret = _endpoint(p, p.alice_s, "chat")
    hidden = p.client.get("/v1/endpoints/chat", headers=p.dave_u)
    missing = p.client.get("/v1/endpoints/nobody", headers=p.dave_u)
    assert_same_404(hidden, "chat", missing, "nobody")
    lower = _endpoint(p, p.dave_u, "chat")  # was 409: "not available in this agency"
    assert lower["id"] != secret["id"] and lower["label"] == "UNCLASSIFIED"
    # The name means the endpoint at the session label, for reads and for gateway calls.
    assert ok(p.client.get("/v1/endpoints/chat", headers=p.dave_u))["id"] == lower["id"]
    assert ok(p.client.get("/v1/endpoints/chat", headers=p.alice_s))["id"] == secret["id"]
    models = ok(p.client.get("/v1/models", headers=p.dave_u))["data"]
    assert [(m["id"], m["enclave"]["label"]) for m in models] == [("chat", "UNCLASSIFIED")]
    # At the session label the name is taken, and says so only about that label.
    again = p.client.post("/v1/endpoints", json={"model": lower["model"], "name": "chat"}, headers=p.dave_u)
    assert_problem(again, 409, "not available at UNCLASSIFIED")


def test_a_model_name_taken_only_above_answers_like_a_missing_one(probe: Probe) -> None:
    p = probe
    _endpoint(p, p.alice_s, "secret-chat")
    body = {"input": "hello"}
    hidden = p.client.post("/v1/embeddings", json={**body, "model": "secret-chat"}, headers=p.dave_u)
    missing = p.client.post("/v1/embeddings", json={**body, "model": "no-chat"}, headers=p.dave_u)
    assert_same_404(hidden, "secret-chat", missing, "no-chat")


# -- sizes: the 413 -----------------------------------------------------------------------------
def test_the_413_says_nothing_of_uploads_at_other_labels(probe: Probe) -> None:
    p = probe
    ok(p.client.put("/v1/agencies/alpha/quotas", json={"storage_bytes": 100}))
    ok(p.client.post("/v1/artifacts", params={"name": "u"}, content=b"x" * 40, headers=p.dave_u), 201)

    def refusal() -> dict[str, Any]:
        r = p.client.post("/v1/artifacts", params={"name": "big"}, content=b"y" * 61, headers=p.dave_u)
        return assert_problem(r, 413)

    before = refusal()
    ok(p.client.post("/v1/artifacts", params={"name": "s"}, content=b"s" * 37, headers=p.alice_s), 201)
    after = refusal()
    assert {k: v for k, v in after.items() if k != "instance"} == {
        k: v for k, v in before.items() if k != "instance"
    }
    assert "60" in before["detail"] and "23" not in after["detail"]  # room at UNCLASSIFIED only
    # The UNCLASSIFIED room is whole: exactly what is left at that label fits.
    ok(p.client.post("/v1/artifacts", params={"name": "fits"}, content=b"z" * 60, headers=p.dave_u), 201)


# -- usage totals ----------------------------------------------------------------------------------
def test_usage_counts_only_labels_the_session_may_read(probe: Probe) -> None:
    p = probe
    _job(p, p.alice_u, "public")
    before_u = ok(p.client.get("/v1/agencies/alpha/usage", headers=p.dave_u))
    before_op = ok(p.client.get("/v1/agencies/alpha/usage", headers=p.admin))
    for i in range(3):
        _job(p, p.alice_s, f"secret-{i}")
    for headers, before in ((p.dave_u, before_u), (p.admin, before_op)):
        after = ok(p.client.get("/v1/agencies/alpha/usage", headers=headers))
        assert after == before
        assert after["jobs"] == 1 and [r["label"] for r in after["by_label"]] == ["UNCLASSIFIED"]
    # At SECRET the same reader sees both labels, row by row, and the totals are their sums.
    seen = ok(p.client.get("/v1/agencies/alpha/usage", headers=p.admin_s))
    assert [(r["label"], r["jobs"]) for r in seen["by_label"]] == [("UNCLASSIFIED", 1), ("SECRET", 3)]
    assert seen["jobs"] == 4 and seen["jobs_by_state"] == {"pending": 4}


# -- rate buckets -------------------------------------------------------------------------------
def test_secret_traffic_does_not_change_the_unclassified_rate_answer(probe: Probe) -> None:
    p = probe
    ok(p.client.put("/v1/agencies/alpha/quotas", json={"gateway_rpm": 2}))
    _endpoint(p, p.alice_s, "s-emb")
    _endpoint(p, p.dave_u, "u-emb")

    def call(headers: Headers, model: str) -> httpx.Response:
        return p.client.post("/v1/embeddings", json={"model": model, "input": "x"}, headers=headers)

    # No replica: an admitted call answers 503, a refused one 429 with Retry-After.
    assert [call(p.alice_s, "s-emb").status_code for _ in range(3)] == [503, 503, 429]
    first = call(p.dave_u, "u-emb")
    assert first.status_code == 503 and "retry-after" not in first.headers
    assert call(p.dave_u, "u-emb").status_code == 503
    third = call(p.dave_u, "u-emb")
    assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1


# -- /metrics ----------------------------------------------------------------------------------------
def test_metrics_are_for_operators_and_show_no_label_above_the_session(probe: Probe) -> None:
    p = probe
    _endpoint(p, p.alice_s, "s-metrics")
    anonymous = p.client.get("/metrics", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert_problem(p.client.get("/metrics", headers=p.dave_u), 403)  # a user, not an operator
    before = p.client.get("/metrics", headers=p.admin)
    assert before.status_code == 200
    for _ in range(3):
        r = p.client.post("/v1/embeddings", json={"model": "s-metrics", "input": "x"}, headers=p.alice_s)
        assert r.status_code == 503
    after = p.client.get("/metrics", headers=p.admin)
    assert 'label="SECRET"' not in after.text
    assert _series(after.text) == _series(before.text)
    at_secret = p.client.get("/metrics", headers=p.admin_s).text
    assert (
        'enclave_gateway_requests_total{label="SECRET",outcome="unavailable",route="embeddings"}' in at_secret
    )


def _series(text: str) -> list[str]:
    """The metric samples of a page (comments and creation timestamps left out)."""
    return sorted(line for line in text.splitlines() if line and not line.startswith("#") and "_created" not in line)  # fmt: skip


# -- time: a denial costs what a miss costs ------------------------------------------------------
def _medians(
    hidden: Callable[[], httpx.Response], missing: Callable[[], httpx.Response]
) -> tuple[float, float]:
    """Median seconds of each, measured interleaved (ABBA) after a warm-up."""
    times: dict[str, list[float]] = {"hidden": [], "missing": []}

    def timed(which: str, send: Callable[[], httpx.Response]) -> None:
        start = time.perf_counter()
        r = send()
        times[which].append(time.perf_counter() - start)
        assert r.status_code == 404, r.text

    for _ in range(20):
        timed("hidden", hidden), timed("missing", missing)
    times = {"hidden": [], "missing": []}
    for i in range(TIMING_TRIES):
        order = [("hidden", hidden), ("missing", missing)]
        for which, send in order if i % 2 else reversed(order):
            timed(which, send)
    return statistics.median(times["hidden"]), statistics.median(times["missing"])


def _assert_same_time(hidden: Callable[[], httpx.Response], missing: Callable[[], httpx.Response]) -> None:
    """Within TIMING_TOLERANCE; a busy machine gets two more rounds (a real difference — the
    old 1.5-4x — fails every one of them)."""
    ratios = []
    for _ in range(3):
        h, m = _medians(hidden, missing)
        ratios.append(h / m)
        if abs(h / m - 1) <= TIMING_TOLERANCE:
            return
    raise AssertionError(f"denial/miss median time ratios {ratios}")


def test_a_denied_job_id_costs_what_a_missing_one_costs(probe: Probe) -> None:
    p = probe
    secret = _job(p, p.alice_s, "secret")
    seq = audit_seq(p.ctx)
    _assert_same_time(
        lambda: p.client.get(f"/v1/jobs/{secret['id']}", headers=p.alice_u),
        lambda: p.client.get(f"/v1/jobs/{uuid.uuid4()}", headers=p.alice_u),
    )
    # The denials were still recorded — after the answers, none lost.
    denied = [e for e in audit_events_after(p.ctx, seq) if e == "access.denied"]
    assert len(denied) >= 20 + TIMING_TRIES


def test_a_secret_endpoint_name_costs_what_a_missing_one_costs(probe: Probe) -> None:
    p = probe
    _endpoint(p, p.alice_s, "hidden-ep")
    _assert_same_time(
        lambda: p.client.get("/v1/endpoints/hidden-ep", headers=p.dave_u),
        lambda: p.client.get("/v1/endpoints/missing-ep", headers=p.dave_u),
    )


def test_a_secret_model_name_at_the_gateway_costs_what_a_missing_one_costs(probe: Probe) -> None:
    p = probe
    _endpoint(p, p.alice_s, "hidden-model")
    _assert_same_time(
        lambda: p.client.post(
            "/v1/embeddings", json={"model": "hidden-model", "input": "x"}, headers=p.dave_u
        ),
        lambda: p.client.post(
            "/v1/embeddings", json={"model": "missing-model", "input": "x"}, headers=p.dave_u
        ),
    )
