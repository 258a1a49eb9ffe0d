"""Pages, totals, cursors, id prefixes and arrays (issue 13) probed from a lower label and from
another agency, for real through the HTTP API, on SQLite and PostgreSQL.

The rule (SECURITY.md §3): nothing the session observes depends on what it may not read. So
each probe is made before and after jobs it may not read were put where they would show —
ids sharing its prefix, names matching its filter, jobs in its listing's range — and the
answers must be the same. Ids are set by the test (a shared 4-character prefix is too rare
to wait for), and the readers are: a lower level, the same level without a compartment, and
another agency.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from enclave.api.app import create_app
from enclave.services.context import Context
from enclave.store.models import Job

from ..api.helpers import (
    Headers,
    assert_problem,
    assert_same_404,
    bearer,
    create_agency,
    create_user,
    missing_id,
    ok,
    token_header,
)
from .test_side_channels import TIMING_TOLERANCE, TIMING_TRIES, _assert_same_time

PREFIX = "beef"


def _id(n: int) -> str:
    return f"{PREFIX}0000-0000-4000-8000-{n:012d}"


@dataclass
class World:
    client: TestClient
    ctx: Context
    admin: Headers  # operator, UNCLASSIFIED (reads the audit log)
    alice_u: Headers  # alpha, UNCLASSIFIED
    alice_s: Headers  # alpha, SECRET
    alice_si: Headers  # alpha, SECRET//SI
    eve_u: Headers  # beta, UNCLASSIFIED

    def submit(self, headers: Headers, name: str, **spec: Any) -> dict[str, Any]:
        body = {"name": name, "command": ["true"], **spec}
        return dict(ok(self.client.post("/v1/jobs", json=body, headers=headers), 201))

    def set_id(self, job: dict[str, Any], new: str) -> None:
        column = Job.array_id if job.get("array_id") else Job.id
        old = job["array_id"] or job["id"]
        with self.ctx.sessions() as session, session.begin():
            session.execute(update(Job).where(column == old).values({column.key: new}))

    def get(self, headers: Headers, path: str, **params: Any) -> tuple[int, Any]:
        r = self.client.get(path, params=params, headers=headers)
        is_json = r.headers["content-type"].split(";")[0].endswith("json")
        return r.status_code, r.json() if is_json else r.text


@pytest.fixture
def world(ctx: Context) -> Iterator[World]:
    with TestClient(create_app(ctx=ctx, run_jobs=False)) as c:
        admin = bearer((ctx.settings.home / "admin.token").read_text().strip())
        c.headers.update(admin)
        create_agency(c, "alpha")
        create_agency(c, "beta")
        create_user(c, "alice", "alpha", "SECRET//SI")
        create_user(c, "eve", "beta", "SECRET//SI")
        yield World(
            client=c,
            ctx=ctx,
            admin=admin,
            alice_u=token_header(c, "alice", "UNCLASSIFIED"),
            alice_s=token_header(c, "alice", "SECRET"),
            alice_si=token_header(c, "alice", "SECRET//SI"),
            eve_u=token_header(c, "eve", "UNCLASSIFIED"),
        )


def _hide_above(w: World) -> dict[str, str]:
    """Jobs and arrays alice's UNCLASSIFIED session may not read, all sharing its prefix and
    its name filter, and lying inside the range it lists."""
    made = {
        "secret": w.submit(w.alice_s, "sim-secret"),
        "compartment": w.submit(w.alice_si, "sim-si"),
        "other_agency": w.submit(w.eve_u, "sim-beta"),
        "secret_array": w.submit(w.alice_s, "sim-array", array=3),
        "compartment_array": w.submit(w.alice_si, "sim-si-array", array=2),
    }
    ids = {}
    for n, (what, job) in enumerate(made.items(), start=2):
        w.set_id(job, _id(n))
        ids[what] = _id(n)
    return ids


def _probes(w: World, mine: str) -> list[tuple[int, Any]]:
    """What alice's UNCLASSIFIED session sees of its own jobs, by prefix, page and total."""
    answers = [
        w.get(w.alice_u, f"/v1/jobs/{PREFIX}"),
        w.get(w.alice_u, f"/v1/jobs/{mine[:13]}"),
        w.get(w.alice_u, f"/v1/jobs/{mine[:20].upper()}"),
        w.get(w.alice_u, f"/v1/jobs/{mine[:8]}/logs"),
        w.get(w.alice_u, "/v1/jobs", limit=2),
        w.get(w.alice_u, "/v1/jobs", limit=2, offset=2),
        w.get(w.alice_u, "/v1/jobs", name="sim"),
        w.get(w.alice_u, "/v1/jobs", name="sim", limit=1),
        w.get(w.alice_u, "/v1/jobs", label="UNCLASSIFIED"),
        w.get(w.alice_u, "/v1/jobs", state="pending", limit=1),
        w.get(w.alice_u, "/v1/jobs", array=PREFIX),
    ]
    first = w.get(w.alice_u, "/v1/jobs", limit=1)[1]
    answers.append(w.get(w.alice_u, "/v1/jobs", limit=1, cursor=first["next_cursor"]))
    return answers


def test_prefixes_pages_and_totals_ignore_what_the_session_cannot_read(world: World) -> None:
    w = world
    mine = w.submit(w.alice_u, "sim-mine")
    w.set_id(mine, _id(1))
    older = w.submit(w.alice_u, "sim-older-array", array=2)
    w.set_id(older, f"{PREFIX}1111-0000-4000-8000-000000000099")
    for n in range(3):
        w.submit(w.alice_u, f"other-{n}")
    before = _probes(w, _id(1))
    assert before[0][0] == 422 and _id(1) in before[0][1]["detail"]  # its own two ids: ambiguous
    assert before[1][1]["id"] == _id(1) and before[4][1]["total"] == 6

    hidden = _hide_above(w)
    after = _probes(w, _id(1))
    assert after == before
    for _status, body in after:
        assert not any(i in str(body) for i in hidden.values()), body

    # The same holds across an agency: eve's prefix names her own job, alone.
    assert ok(w.client.get(f"/v1/jobs/{PREFIX}", headers=w.eve_u))["id"] == hidden["other_agency"]
    # And across a compartment at one level: SECRET sees its own, never the SECRET//SI ones.
    problem = assert_problem(w.client.get(f"/v1/jobs/{PREFIX}0", headers=w.alice_s), 422, "ambiguous")
    assert hidden["secret"] in problem["detail"] and hidden["secret_array"] in problem["detail"]
    for unseen in (hidden["compartment"], hidden["compartment_array"], hidden["other_agency"]):
        assert unseen not in problem["detail"]
    secret_page = ok(w.client.get("/v1/jobs", params={"name": "-si"}, headers=w.alice_s))
    assert secret_page["total"] == 0 and secret_page["items"] == []
    assert ok(w.client.get("/v1/jobs", params={"name": "-si"}, headers=w.alice_si))["total"] == 3


def test_a_cursor_or_an_array_above_answers_like_one_that_never_was(world: World) -> None:
    w = world
    w.submit(w.alice_u, "mine")
    hidden = _hide_above(w)
    other = missing_id()
    for what in ("secret", "compartment", "other_agency"):
        seen = assert_problem(
            w.client.get("/v1/jobs", params={"cursor": hidden[what]}, headers=w.alice_u), 422
        )
        missing = assert_problem(w.client.get("/v1/jobs", params={"cursor": other}, headers=w.alice_u), 422)
        assert seen == missing
    for what in ("secret_array", "compartment_array"):
        ref = hidden[what]
        for method, template in (("GET", "/v1/jobs/{id}"), ("POST", "/v1/jobs/{id}/cancel")):
            assert_same_404(
                w.client.request(method, template.format(id=ref), headers=w.alice_u),
                ref,
                w.client.request(method, template.format(id=other), headers=w.alice_u),
                other,
            )
        assert_same_404(
            w.client.get("/v1/jobs", params={"array": ref}, headers=w.alice_u),
            ref,
            w.client.get("/v1/jobs", params={"array": other}, headers=w.alice_u),
            other,
        )
        assert_same_404(
            w.client.get(f"/v1/jobs/{ref[:12]}", headers=w.alice_u),
            ref[:12],
            w.client.get(f"/v1/jobs/{other[:12]}", headers=w.alice_u),
            other[:12],
        )
    # Nothing above was cancelled by the attempts.
    secret = ok(w.client.get(f"/v1/jobs/{hidden['secret_array']}", headers=w.alice_s))
    assert secret["kind"] == "array" and secret["cancel_requested"] is False


def test_the_audit_total_counts_only_readable_records(world: World) -> None:
    w = world
    w.submit(w.alice_u, "mine")

    def page() -> dict[str, Any]:
        params = {"total": "true", "order": "desc", "limit": 3, "event": "job.submitted"}
        return dict(ok(w.client.get("/v1/audit", params=params, headers=w.admin)))

    before = page()
    assert before["total"] == 1 and before["count"] == 1
    hidden = _hide_above(w)
    ok(w.client.post(f"/v1/jobs/{hidden['secret_array']}/cancel", headers=w.alice_s))
    after = page()  # the operator reads every agency's log: beta's UNCLASSIFIED job is in
    assert after["total"] == 2 and [r["object_id"] for r in after["items"]][1:] == [
        before["items"][0]["object_id"]
    ]
    assert {r["object_label"] for r in after["items"]} == {"UNCLASSIFIED"}
    admin_s = token_header(w.client, "admin", "SECRET")
    above = ok(w.client.get("/v1/audit", params={"total": "true", "event": "job.submitted"}, headers=admin_s))
    assert above["total"] == 1 + 1 + 1 + 3  # mine, the other agency's, the SECRET job and array


def test_a_prefix_costs_the_same_however_many_jobs_are_above(world: World) -> None:
    """alpha holds 20,000 jobs above alice's UNCLASSIFIED session, beta none: a prefix lookup
    that names nothing takes the same time in both (the prefix index reads only the rows
    sharing the prefix; reading the agency's jobs would take milliseconds more in alpha)."""
    w = world
    for headers in (w.alice_s, w.alice_si):
        body = {"name": "hidden", "command": ["true"], "array": 10_000}
        ok(w.client.post("/v1/jobs", json=body, headers=headers), 201)
    _assert_same_time(
        lambda: w.client.get(f"/v1/jobs/{missing_id()[:8]}", headers=w.alice_u),
        lambda: w.client.get(f"/v1/jobs/{missing_id()[:8]}", headers=w.eve_u),
    )


def _assert_same_time_ok(a: Callable[[], httpx.Response], b: Callable[[], httpx.Response]) -> None:
    """Two successful requests take the same median time (interleaved, as for denials)."""
    ratios = []
    for _ in range(3):
        times: dict[int, list[float]] = {0: [], 1: []}
        for i in range(20 + TIMING_TRIES):
            for which in (0, 1) if i % 2 else (1, 0):
                start = time.perf_counter()
                assert (a, b)[which]().status_code == 200
                if i >= 20:
                    times[which].append(time.perf_counter() - start)
        ratios.append(statistics.median(times[0]) / statistics.median(times[1]))
        if abs(ratios[-1] - 1) <= TIMING_TOLERANCE:
            return
    raise AssertionError(f"median time ratios {ratios}")


def test_a_page_costs_the_same_however_many_jobs_are_above(world: World) -> None:
    """alice (alpha) and eve (beta) each see 50 UNCLASSIFIED jobs; alpha also holds 20,000
    jobs above alice's session, newer than hers. Her pages, totals and filters take the time
    eve's do: only rows at labels the session dominates are read."""
    w = world
    for headers in (w.alice_u, w.eve_u):
        ok(
            w.client.post(
                "/v1/jobs", json={"name": "mine", "command": ["true"], "array": 50}, headers=headers
            ),
            201,
        )
    for headers in (w.alice_s, w.alice_si):
        body = {"name": "hidden", "command": ["true"], "array": 10_000}
        ok(w.client.post("/v1/jobs", json=body, headers=headers), 201)
    for params in ({"limit": 20}, {"limit": 20, "offset": 20, "name": "mine"}):
        _assert_same_time_ok(
            lambda params=params: w.client.get("/v1/jobs", params=params, headers=w.alice_u),
            lambda params=params: w.client.get("/v1/jobs", params=params, headers=w.eve_u),
        )


def test_an_audit_page_costs_the_same_however_many_records_are_above(world: World) -> None:
    """The operator's UNCLASSIFIED session sees 50 ``job.submitted`` and 50
    ``job.cancel_requested`` records; 20,000 more ``job.submitted`` are SECRET. Pages of the
    two events, with their totals, take the same time."""
    w = world
    made = ok(w.client.post("/v1/jobs", json={"name": "u", "command": ["true"], "array": 50}, headers=w.alice_u), 201)  # fmt: skip
    ok(w.client.post(f"/v1/jobs/{made['array_id']}/cancel", headers=w.alice_u))
    for headers in (w.alice_s, w.alice_si):
        body = {"name": "hidden", "command": ["true"], "array": 10_000}
        ok(w.client.post("/v1/jobs", json=body, headers=headers), 201)
    w.ctx.denials.flush()

    def page(event: str) -> httpx.Response:
        params = {"event": event, "order": "desc", "limit": 20, "total": "true"}
        return w.client.get("/v1/audit", params=params, headers=w.admin)

    assert page("job.submitted").json()["total"] == page("job.cancel_requested").json()["total"] == 50
    _assert_same_time_ok(lambda: page("job.submitted"), lambda: page("job.cancel_requested"))
