"""Pages of artifacts, datasets, models, transfers, endpoints and training jobs (issue 13)
probed from a lower label and from another agency, through the HTTP API, on SQLite and
PostgreSQL: rows the session may not read — above its level, in a compartment it lacks, of
another agency, or shared with its agency above its label — change neither the items, the
totals, the cursors nor (with many of them, median of repeated tries) the time of a page
(SECURITY.md §3)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from enclave.api.app import create_app
from enclave.services.context import Context

from ..api.helpers import Headers, bearer, create_agency, create_user, missing_id, ok, token_header
from ..api.object_rows import EPOCH, PATHS, seed
from .test_listing_leaks import _assert_same_time_ok

LATER = EPOCH + timedelta(days=1)  # hidden rows are newer: they would lead every page


@dataclass
class World:
    client: TestClient
    ctx: Context
    alice_u: Headers  # alpha, UNCLASSIFIED
    eve_u: Headers  # beta, UNCLASSIFIED

    def get(self, headers: Headers, path: str, **params: Any) -> tuple[int, Any]:
        r = self.client.get(path, params=params, headers=headers)
        return r.status_code, r.json()


@pytest.fixture
def world(ctx: Context) -> Iterator[World]:
    with TestClient(create_app(ctx=ctx, run_jobs=False)) as c:
        c.headers.update(bearer((ctx.settings.home / "admin.token").read_text().strip()))
        create_agency(c, "alpha")
        create_agency(c, "beta")
        create_user(c, "alice", "alpha", "SECRET//SI")
        create_user(c, "eve", "beta", "SECRET//SI")
        yield World(c, ctx, token_header(c, "alice", "UNCLASSIFIED"), token_header(c, "eve", "UNCLASSIFIED"))


def _hide(w: World, what: str, n: int) -> dict[str, list[str]]:
    """``n`` rows alice's UNCLASSIFIED session may not read at each place they could hide."""
    hidden = {
        "secret": seed(w.ctx, what, "alpha", "alice", "SECRET", n, start=LATER),
        "compartment": seed(w.ctx, what, "alpha", "alice", "SECRET//SI", n, start=LATER),
        "other_agency": seed(w.ctx, what, "beta", "eve", "UNCLASSIFIED", n, start=LATER),
    }
    if what in ("artifacts", "datasets"):  # shared with alpha, but above alice's session
        hidden["shared_above"] = seed(
            w.ctx, what, "beta", "eve", "SECRET", n, start=LATER, shared_with="alpha"
        )
    return hidden


def _probes(w: World, path: str) -> list[tuple[int, Any]]:
    first = w.get(w.alice_u, path, limit=2)
    return [
        first,
        w.get(w.alice_u, path, limit=2, cursor=first[1]["next_cursor"]),
        w.get(w.alice_u, path, limit=1, offset=2),
        w.get(w.alice_u, path),
        w.get(w.alice_u, path, cursor=missing_id()),
    ]


@pytest.mark.parametrize("what", list(PATHS))
def test_rows_the_session_cannot_read_change_no_page_total_or_cursor(world: World, what: str) -> None:
    w, path = world, PATHS[what]
    mine = seed(w.ctx, what, "alpha", "alice", "UNCLASSIFIED", 3)
    before = _probes(w, path)
    assert before[3][1]["total"] == 3 and [i["id"] for i in before[3][1]["items"]] == mine[::-1]

    hidden = _hide(w, what, 3)
    after = _probes(w, path)
    assert after == before
    for ids in hidden.values():
        assert not any(h in str(body) for _status, body in after for h in ids)
        # a cursor naming a row above answers as a missing one does
        assert w.get(w.alice_u, path, cursor=ids[0]) == after[-1]


def test_an_artifact_shared_at_the_session_label_is_listed_with_its_agency(world: World) -> None:
    w = world
    mine = seed(w.ctx, "artifacts", "alpha", "alice", "UNCLASSIFIED", 2)
    shared = seed(w.ctx, "artifacts", "beta", "eve", "UNCLASSIFIED", 2, start=LATER, shared_with="alpha")
    seed(w.ctx, "artifacts", "beta", "eve", "SECRET", 2, start=LATER, shared_with="alpha")
    page = ok(w.client.get("/v1/artifacts", params={"limit": 3}, headers=w.alice_u))
    assert [i["id"] for i in page["items"]] == [shared[1], shared[0], mine[1]] and page["total"] == 4
    assert {i["agency"] for i in page["items"][:2]} == {"beta"}
    rest = ok(w.client.get("/v1/artifacts", params={"cursor": page["next_cursor"]}, headers=w.alice_u))
    assert [i["id"] for i in rest["items"]] == [mine[0]] and rest["next_cursor"] is None


@pytest.mark.parametrize("what", list(PATHS))
def test_a_page_costs_the_same_however_many_rows_are_above(world: World, what: str) -> None:
    """alice (alpha) and eve (beta) each see 50 UNCLASSIFIED rows; alpha also holds 20,000 rows
    above alice's session (and, for artifacts, 10,000 more of beta's shared with it above her
    session), all newer than hers. Her pages with their totals take the time eve's do."""
    w, path = world, PATHS[what]
    seed(w.ctx, what, "alpha", "alice", "UNCLASSIFIED", 50)
    seed(w.ctx, what, "beta", "eve", "UNCLASSIFIED", 50)
    seed(w.ctx, what, "alpha", "alice", "SECRET", 10_000, start=LATER)
    seed(w.ctx, what, "alpha", "alice", "SECRET//SI", 10_000, start=LATER)
    if what in ("artifacts", "datasets"):
        seed(w.ctx, what, "beta", "eve", "SECRET", 10_000, start=LATER, shared_with="alpha")
    assert ok(w.client.get(path, params={"limit": 1}, headers=w.alice_u))["total"] == 50
    cursors = {
        who: ok(w.client.get(path, params={"limit": 20}, headers=h))["next_cursor"]
        for who, h in (("alice", w.alice_u), ("eve", w.eve_u))
    }
    _assert_same_time_ok(
        lambda: w.client.get(path, params={"limit": 20}, headers=w.alice_u),
        lambda: w.client.get(path, params={"limit": 20}, headers=w.eve_u),
    )
    _assert_same_time_ok(
        lambda: w.client.get(path, params={"limit": 20, "cursor": cursors["alice"]}, headers=w.alice_u),
        lambda: w.client.get(path, params={"limit": 20, "cursor": cursors["eve"]}, headers=w.eve_u),
    )
