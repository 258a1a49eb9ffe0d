"""The administrative lists page too (issue 13): agencies, an agency's projects, users,
clearance requests and worker credentials, with ``total`` and an opaque ``next_cursor`` (a
name or an id, never a sequence number), in each list's documented order (by name; clearance
requests and worker credentials oldest first), through the HTTP API on SQLite and PostgreSQL.

What an agency admin may not see (another agency's users, projects and clearance requests)
is left out by the query itself, so it changes neither the items, the totals nor the cursors.
These tables are small and carry no label (nothing is read per label), so unlike the labelled
listings (tests/resilience/test_object_listing_leaks.py) no timing is measured here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from enclave.api.app import create_app
from enclave.labels import Label
from enclave.policy import Action, Resource, Role, Subject, administered_agency, decide
from enclave.services.context import Context

from .admin_rows import EPOCH, ROUTES, seed
from .helpers import Headers, assert_problem, bearer, create_agency, create_user, missing_id, ok, token_header

OPERATORS = ("agencies", "worker-credentials")  # the operator's lists; the others ada's (alpha's admin)
BY_TIME = ("clearance-requests", "worker-credentials")  # oldest first; the others by name


@dataclass
class World:
    client: TestClient
    ctx: Context
    operator: Headers
    ada: Headers  # alpha's admin, SECRET

    def who(self, what: str) -> Headers:
        return self.operator if what in OPERATORS else self.ada

    def get(self, headers: Headers, what: str, **params: Any) -> tuple[int, Any]:
        r = self.client.get(ROUTES[what][0].format(agency="alpha"), params=params, headers=headers)
        return r.status_code, r.json()

    def page(self, what: str, **params: Any) -> dict[str, Any]:
        status, body = self.get(self.who(what), what, **params)
        assert status == 200, body
        assert body["count"] == len(body["items"])
        return dict(body)

    def keys(self, what: str, **params: Any) -> list[str]:
        return [item[ROUTES[what][1]] for item in self.page(what, **params)["items"]]


@pytest.fixture
def world(ctx: Context) -> Iterator[World]:
    with TestClient(create_app(ctx=ctx, run_jobs=False)) as c:
        operator = bearer((ctx.settings.home / "admin.token").read_text().strip())
        c.headers.update(operator)
        create_agency(c, "alpha")
        create_agency(c, "beta")
        create_user(c, "ada", "alpha", "SECRET", roles=("admin",))
        create_user(c, "bea", "beta", "SECRET", roles=("admin",))
        yield World(c, ctx, operator, token_header(c, "ada", "SECRET"))


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(n)]


def _already(what: str) -> list[str]:
    """What the list holds before the test adds to it, in its order."""
    return {"agencies": ["alpha", "beta", "enclave"], "users": ["ada"]}.get(what, [])


@pytest.mark.parametrize("what", list(ROUTES))
def test_an_admin_list_pages_in_its_order_with_its_total(world: World, what: str) -> None:
    w = world
    made = seed(w.ctx, what, "alpha", _names("m", 7))
    listed = made if what in BY_TIME else sorted(_already(what) + made)
    n = len(listed)

    first = w.page(what, limit=3)
    assert [i[ROUTES[what][1]] for i in first["items"]] == listed[:3]
    assert first["total"] == n and first["next_cursor"] == listed[2]
    second = w.page(what, limit=3, cursor=first["next_cursor"])
    assert [i[ROUTES[what][1]] for i in second["items"]] == listed[3:6] and second["total"] == n
    rest = w.page(what, limit=n, cursor=second["next_cursor"])
    assert [i[ROUTES[what][1]] for i in rest["items"]] == listed[6:] and rest["next_cursor"] is None
    assert w.keys(what, limit=3, offset=3) == listed[3:6]
    assert w.keys(what, limit=3, offset=n) == []
    whole = w.page(what)
    assert [i[ROUTES[what][1]] for i in whole["items"]] == listed and whole["next_cursor"] is None
    assert whole["total"] == whole["count"] == n

    # A cursor keeps its place while rows come before it; the total counts them.
    earlier = seed(w.ctx, what, "alpha", _names("a", 2), start=EPOCH - timedelta(days=1))
    again = w.page(what, limit=3, cursor=first["next_cursor"])
    assert [i[ROUTES[what][1]] for i in again["items"]] == listed[3:6] and again["total"] == n + 2
    assert w.keys(what, limit=2) == earlier


@pytest.mark.parametrize("what", list(ROUTES))
def test_a_bad_window_is_refused_and_a_strange_cursor_reads_as_missing(world: World, what: str) -> None:
    w = world
    seed(w.ctx, what, "alpha", _names("m", 2))
    for params in ({"limit": 0}, {"limit": 10_001}, {"offset": -1}, {"cursor": "x" * 65}):
        assert w.get(w.who(what), what, **params)[0] == 422
    answers = [w.get(w.who(what), what, cursor=c) for c in (missing_id(), "nobody", "not a name!")]
    assert [status for status, _ in answers] == [422] * 3
    assert len({body["detail"] for _, body in answers}) == 1


# -- what an agency admin may not see --------------------------------------------------------
def _probes(w: World, what: str) -> list[tuple[int, Any]]:
    first = w.get(w.ada, what, limit=2)
    return [
        first,
        w.get(w.ada, what, limit=2, cursor=first[1]["next_cursor"]),
        w.get(w.ada, what, limit=1, offset=2),
        w.get(w.ada, what),
        w.get(w.ada, what, state="pending") if what == "clearance-requests" else first,
        w.get(w.ada, what, cursor=missing_id()),
    ]


@pytest.mark.parametrize("what", ["projects", "users", "clearance-requests"])
def test_another_agencys_rows_change_no_page_total_or_cursor(world: World, what: str) -> None:
    w = world
    seed(w.ctx, what, "alpha", _names("m", 4))
    before = _probes(w, what)
    assert before[0][0] == 200 and before[0][1]["next_cursor"] is not None
    path = ROUTES[what][0].format(agency="alpha")
    operator_total = ok(w.client.get(path, headers=w.operator))["total"]

    # beta's rows sort first, between alpha's and last: each would move a page if it counted
    hidden = [
        *seed(w.ctx, what, "beta", ["a0", "a1"], start=EPOCH - timedelta(days=1)),
        *seed(w.ctx, what, "beta", ["m00x", "m01x"], start=EPOCH + timedelta(milliseconds=500)),
        *seed(w.ctx, what, "beta", ["zz"], start=EPOCH + timedelta(days=1)),
    ]
    assert _probes(w, what) == before
    # a hidden row's name or id is no cursor: refused in the words of a missing one
    missing = w.get(w.ada, what, cursor=missing_id())
    for key in hidden:
        assert w.get(w.ada, what, cursor=key) == missing
    # an operator administers every agency: it sees beta's users and requests (not in alpha's projects)
    seen = ok(w.client.get(path, headers=w.operator))["total"]
    assert seen == operator_total + (0 if what == "projects" else len(hidden))


@pytest.mark.parametrize("what", OPERATORS)
def test_an_agency_admin_is_refused_the_operators_lists_whatever_they_hold(world: World, what: str) -> None:
    w = world
    refused = assert_problem(w.client.get(ROUTES[what][0], headers=w.ada), 403)
    seed(w.ctx, what, "beta", _names("b", 3))
    assert assert_problem(w.client.get(ROUTES[what][0], headers=w.ada), 403) == refused
    assert assert_problem(w.client.get(ROUTES[what][0], params={"limit": 1}, headers=w.ada), 403) == refused


def test_the_lists_scope_is_the_policy_gates() -> None:
    """The clause each list's query holds (:func:`administered_agency`) lets through exactly
    the rows the gate would let an admin administer, one by one."""
    top = Label(1, "TOP", frozenset())
    for roles in ({Role.ADMIN}, {Role.OPERATOR}, {Role.ADMIN, Role.OPERATOR}):
        s = Subject("ada", "alpha", top, top, frozenset(roles))
        scope = administered_agency(s)
        for agency in ("alpha", "beta"):
            allowed = decide(s, Action.ADMINISTER, Resource(kind="user", agency=agency)).allowed
            assert allowed == (scope is None or scope == agency)
