"""Issue 13, items 2-4 through the HTTP API, on SQLite and PostgreSQL: job lists that page
(with a total and filters), job arrays as objects of their own, and short id prefixes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from enclave.api.app import create_app
from enclave.services import jobs
from enclave.services.auth import authenticate
from enclave.services.context import Context
from enclave.services.jobs import JobState
from enclave.store.models import Job

from .helpers import (
    DENIED,
    Headers,
    assert_problem,
    audit_events_after,
    audit_seq,
    bearer,
    create_agency,
    create_user,
    missing_id,
    ok,
    token_header,
    unchanged,
)


@dataclass
class Api:
    client: TestClient
    ctx: Context
    alice: Headers  # alpha, UNCLASSIFIED
    bob: Headers  # alpha, UNCLASSIFIED

    def submit(self, headers: Headers, *specs: dict[str, Any]) -> list[dict[str, Any]]:
        body = {"jobs": [{"command": ["true"], **spec} for spec in specs]}
        return list(ok(self.client.post("/v1/jobs/batch", json=body, headers=headers), 201)["jobs"])

    def jobs(self, headers: Headers, **params: Any) -> dict[str, Any]:
        body = ok(self.client.get("/v1/jobs", params=params, headers=headers))
        assert body["count"] == len(body["items"])
        return dict(body)

    def rename(self, old: str, new: str) -> None:
        """Give a job a chosen id (prefix collisions are too rare to wait for)."""
        with self.ctx.sessions() as session, session.begin():
            session.execute(update(Job).where(Job.id == old).values(id=new))


@pytest.fixture
def api(ctx: Context) -> Iterator[Api]:
    """The real app without the live loop: jobs stay pending, so states are the test's own."""
    with TestClient(create_app(ctx=ctx, run_jobs=False)) as c:
        c.headers.update(bearer((ctx.settings.home / "admin.token").read_text().strip()))
        create_agency(c, "alpha")
        create_user(c, "alice", "alpha", "SECRET")
        create_user(c, "bob", "alpha", "UNCLASSIFIED")
        yield Api(c, ctx, token_header(c, "alice", "UNCLASSIFIED"), token_header(c, "bob", "UNCLASSIFIED"))


# -- paging -------------------------------------------------------------------------------------
def test_paging_across_2500_jobs_by_cursor_and_by_offset(api: Api) -> None:
    array = api.submit(api.alice, {"name": "sweep", "array": 2000})[0]
    singles = api.submit(api.alice, *({"name": f"single-{i}"} for i in range(500)))
    submitted = [*array["array_jobs"], *(j["id"] for j in singles)]
    assert len(set(submitted)) == 2500
    newest_first = submitted[::-1]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 300} | ({"cursor": cursor} if cursor else {})
        page = api.jobs(api.alice, **params)
        assert page["total"] == 2500
        seen += [j["id"] for j in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert cursor == page["items"][-1]["id"]
    assert seen == newest_first and pages == 9  # 8 full pages of 300 and one of 100

    by_offset = [j["id"] for n in range(9) for j in api.jobs(api.alice, limit=300, offset=300 * n)["items"]]
    assert by_offset == newest_first
    last = api.jobs(api.alice, limit=300, offset=2400)
    assert last["count"] == 100 and last["next_cursor"] is None
    assert api.jobs(api.alice, limit=300, offset=2500) == {
        "items": [],
        "count": 0,
        "total": 2500,
        "next_cursor": None,
    }


def test_a_cursor_keeps_its_place_while_jobs_are_submitted(api: Api) -> None:
    made = [j["id"] for j in api.submit(api.alice, *({"name": f"j{i}"} for i in range(10)))]
    first = api.jobs(api.alice, limit=4)
    api.submit(api.alice, {"name": "late"})
    second = api.jobs(api.alice, limit=4, cursor=first["next_cursor"])
    assert [j["id"] for j in first["items"] + second["items"]] == made[::-1][:8]
    assert second["total"] == 11  # the total is of the whole listing, now


def test_filters(api: Api) -> None:
    sweep = api.submit(api.alice, {"name": "Sweep", "array": 3})[0]
    other = api.submit(api.alice, {"name": "sweep-other", "array": 2})[0]
    api.submit(api.alice, {"name": "plot", "region": "gov-east"})
    api.submit(api.bob, {"name": "bobs"})
    everything = api.jobs(api.alice)
    assert everything["total"] == 7 == everything["count"]

    def names(**params: Any) -> set[str]:
        page = api.jobs(api.alice, **params)
        assert page["total"] == page["count"]
        return {j["name"] for j in page["items"]}

    assert names(name="SWEEP") == {"Sweep[0]", "Sweep[1]", "Sweep[2]", "sweep-other[0]", "sweep-other[1]"}
    assert names(name="%") == set()  # LIKE wildcards are matched as themselves
    assert names(array=sweep["array_id"]) == {"Sweep[0]", "Sweep[1]", "Sweep[2]"}
    assert names(array=other["array_id"][:8]) == {"sweep-other[0]", "sweep-other[1]"}
    assert names(region="gov-east") == {"plot"}
    assert names(owner="bob") == {"bobs"} and names(owner="nobody") == set()
    assert names(label="unclassified") == {j["name"] for j in everything["items"]}
    assert names(label="SECRET") == set()
    assert names(state="pending", kind="batch") == {j["name"] for j in everything["items"]}
    assert names(state="running") == set()
    cut = everything["items"][2]["submitted_at"]  # newest first: two jobs were submitted after it
    later = {j["name"] for j in everything["items"] if j["submitted_at"] >= cut}
    assert names(since=cut) == later
    assert names(until=cut) == {j["name"] for j in everything["items"]} - later

    # The service other listings build on (training) gives the same jobs, newest first.
    alice = authenticate(api.ctx, api.alice["Authorization"].removeprefix("Bearer "))
    assert jobs.list_visible(api.ctx, alice, limit=3) == everything["items"][:3]
    assert [j["name"] for j in jobs.list_visible(api.ctx, alice, JobState.PENDING)] == [
        j["name"] for j in everything["items"]
    ]
    assert ok(api.client.get("/v1/training", params={"limit": 10_000}, headers=api.alice))["items"] == []


def test_bad_list_parameters_are_problems_and_change_nothing(api: Api) -> None:
    api.submit(api.alice, {"name": "one"})
    with unchanged(api.ctx):
        for params, status, words in (
            ({"limit": 0}, 422, None),
            ({"limit": 10_001}, 422, None),
            ({"offset": -1}, 422, None),
            ({"cursor": missing_id()}, 422, "cursor"),
            ({"cursor": "x" * 65}, 422, None),
            ({"label": "BOGUS"}, 422, None),
            ({"since": "yesterday"}, 422, None),
            ({"state": "sleeping"}, 422, None),
            ({"kind": "cron"}, 422, None),
            ({"name": "a\x00b"}, 422, "NUL"),
            ({"owner": "\x00"}, 422, "NUL"),
            ({"region": "r\x00"}, 422, "NUL"),
            ({"array": missing_id()}, 404, "not found"),
            ({"array": "zz"}, 404, "not found"),
        ):
            assert_problem(api.client.get("/v1/jobs", params=params, headers=api.alice), status, words)


# -- arrays -------------------------------------------------------------------------------------
def test_an_array_is_shown_listed_and_cancelled_by_its_id(api: Api) -> None:
    made = api.submit(api.alice, {"name": "grid", "array": 5, "env": {"K": "v"}})[0]
    array_id, tasks = made["array_id"], made["array_jobs"]
    shown = ok(api.client.get(f"/v1/jobs/{array_id}", headers=api.alice))
    assert shown["kind"] == "array" and shown["id"] == array_id and shown["name"] == "grid"
    assert shown["tasks"] == 5 and shown["states"] == {"pending": 5} and shown["state"] == "pending"
    assert shown["env"] == {"K": "v"} and shown["owner"] == "alice"
    listed = api.jobs(api.alice, array=array_id)
    assert [j["id"] for j in listed["items"]] == tasks[::-1] and listed["total"] == 5

    ok(api.client.post(f"/v1/jobs/{tasks[0]}/cancel", headers=api.alice))  # one task first
    with api.ctx.sessions() as session, session.begin():  # and one has ended
        session.execute(update(Job).where(Job.id == tasks[1]).values(state="completed"))
    shown = ok(api.client.get(f"/v1/jobs/{array_id}", headers=api.alice))
    assert shown["states"] == {"pending": 4, "completed": 1} and shown["cancel_requested"] is False
    seq = audit_seq(api.ctx)
    cancelled = ok(api.client.post(f"/v1/jobs/{array_id}/cancel", headers=api.alice))
    assert cancelled["cancelled"] == 3 and cancelled["kind"] == "array"
    assert audit_events_after(api.ctx, seq) == ["job.cancel_requested"] * 3
    listed = api.jobs(api.alice, array=array_id)["items"]
    assert [j["cancel_requested"] for j in listed] == [j["id"] != tasks[1] for j in listed]
    assert ok(api.client.get(f"/v1/jobs/{array_id}", headers=api.alice))["cancel_requested"] is True
    # Bob (same agency and label, not the owner) sees it as alice's array.
    assert ok(api.client.get(f"/v1/jobs/{array_id}", headers=api.bob))["owner"] == "alice"


def test_an_ended_array_refuses_cancel(api: Api) -> None:
    made = api.submit(api.alice, {"name": "done", "array": 3})[0]
    with api.ctx.sessions() as session, session.begin():
        session.execute(update(Job).where(Job.array_id == made["array_id"]).values(state="completed"))
    shown = ok(api.client.get(f"/v1/jobs/{made['array_id']}", headers=api.alice))
    assert shown["state"] == "completed" and shown["exit_code"] == 0
    with unchanged(api.ctx):
        assert_problem(api.client.post(f"/v1/jobs/{made['array_id']}/cancel", headers=api.alice), 409)


# -- short id prefixes --------------------------------------------------------------------------
def test_prefixes_name_jobs_and_arrays_and_ambiguity_lists_candidates(api: Api) -> None:
    a, b, c = (j["id"] for j in api.submit(api.alice, {"name": "a"}, {"name": "b"}, {"name": "c"}))
    api.rename(a, "abcd0000-0000-4000-8000-000000000001")
    api.rename(b, "abcd0000-0000-4000-8000-000000000012")
    assert ok(api.client.get(f"/v1/jobs/{c[:8]}", headers=api.alice))["id"] == c
    assert ok(api.client.get(f"/v1/jobs/{c[:8].upper()}", headers=api.alice))["id"] == c
    full_b = "abcd0000-0000-4000-8000-000000000012"
    assert ok(api.client.get(f"/v1/jobs/{full_b[:-1]}2", headers=api.alice))["name"] == "b"
    with unchanged(api.ctx):
        problem = assert_problem(api.client.get("/v1/jobs/abcd", headers=api.alice), 422, "ambiguous")
    assert "abcd0000-0000-4000-8000-000000000001 (a)" in problem["detail"] and full_b in problem["detail"]
    assert_problem(api.client.post("/v1/jobs/abcd0000/cancel", headers=api.alice), 422, "ambiguous")
    assert ok(api.client.post(f"/v1/jobs/{full_b[:35]}/cancel", headers=api.alice))["cancel_requested"]
    text = api.client.get(f"/v1/jobs/{c[:6]}/logs", headers=api.alice)
    assert text.status_code == 200 and text.text == ""
    # A dependency may name its job by a prefix; the full id is what is stored.
    dep = api.submit(api.alice, {"name": "d", "depends_on": [{"type": "afterok", "job": c[:8]}]})[0]
    assert dep["depends_on"] == [{"type": "afterok", "job": c}]

    array = api.submit(api.alice, {"name": "arr", "array": 2})[0]
    assert ok(api.client.get(f"/v1/jobs/{array['array_id'][:7]}", headers=api.alice))["kind"] == "array"
    assert ok(api.client.get(f"/v1/jobs/{array['array_jobs'][1][:9]}", headers=api.alice))["name"] == "arr[1]"


def test_what_is_not_a_prefix_is_not_found(api: Api) -> None:
    api.submit(api.alice, {"name": "x"})
    with unchanged(api.ctx, audit=None):
        for ref in ("abc", "a%", "____", "zzzzzzzz", missing_id()[:12]):
            assert_problem(api.client.get(f"/v1/jobs/{ref}", headers=api.alice), 404, "not found")
            assert_problem(api.client.get(f"/v1/jobs/{ref}/logs", headers=api.alice), 404, "not found")
            assert_problem(api.client.post(f"/v1/jobs/{ref}/cancel", headers=api.alice), 404, "not found")


def test_a_full_id_denied_is_still_audited(api: Api) -> None:
    secret = api.submit(token_header(api.client, "alice", "SECRET"), {"name": "s", "array": 2})[0]
    for ref in (secret["array_id"], secret["array_jobs"][0]):
        with unchanged(api.ctx, audit=DENIED):
            assert_problem(api.client.get(f"/v1/jobs/{ref}", headers=api.alice), 404)
