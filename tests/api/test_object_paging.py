"""Every list route pages (issue 13): artifacts, datasets, models, transfers, endpoints and
training jobs, newest first, with ``total`` and an opaque ``next_cursor``, through the HTTP
API on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from enclave.api.app import create_app
from enclave.services.context import Context

from .helpers import Headers, assert_problem, bearer, create_agency, create_user, missing_id, ok, token_header
from .object_rows import EPOCH, PATHS, seed


@dataclass
class Api:
    client: TestClient
    ctx: Context
    alice: Headers  # alpha, UNCLASSIFIED

    def page(self, path: str, **params: Any) -> dict[str, Any]:
        body = ok(self.client.get(path, params=params, headers=self.alice))
        assert body["count"] == len(body["items"])
        return dict(body)

    def ids(self, path: str, **params: Any) -> list[str]:
        return [item["id"] for item in self.page(path, **params)["items"]]


@pytest.fixture
def api(ctx: Context) -> Iterator[Api]:
    with TestClient(create_app(ctx=ctx, run_jobs=False)) as c:
        c.headers.update(bearer((ctx.settings.home / "admin.token").read_text().strip()))
        create_agency(c, "alpha")
        create_user(c, "alice", "alpha", "SECRET")
        yield Api(c, ctx, token_header(c, "alice", "UNCLASSIFIED"))


@pytest.mark.parametrize("what", list(PATHS))
def test_a_listing_pages_newest_first_with_its_total(api: Api, what: str) -> None:
    path = PATHS[what]
    newest = seed(api.ctx, what, "alpha", "alice", "UNCLASSIFIED", 7)[::-1]

    first = api.page(path, limit=3)
    assert [i["id"] for i in first["items"]] == newest[:3]
    assert first["total"] == 7 and first["next_cursor"] == newest[2]
    second = api.page(path, limit=3, cursor=first["next_cursor"])
    assert [i["id"] for i in second["items"]] == newest[3:6] and second["total"] == 7
    last = api.page(path, limit=3, cursor=second["next_cursor"])
    assert [i["id"] for i in last["items"]] == newest[6:] and last["next_cursor"] is None
    assert api.ids(path, limit=3, offset=3) == newest[3:6]
    assert api.ids(path, limit=3, offset=9) == []
    whole = api.page(path)
    assert [i["id"] for i in whole["items"]] == newest and whole["next_cursor"] is None
    assert whole["total"] == whole["count"] == 7

    # A cursor keeps its place while newer rows come; the total counts them.
    newer = seed(api.ctx, what, "alpha", "alice", "UNCLASSIFIED", 2, start=EPOCH + timedelta(days=1))
    again = api.page(path, limit=3, cursor=first["next_cursor"])
    assert [i["id"] for i in again["items"]] == newest[3:6] and again["total"] == 9
    assert api.ids(path, limit=2) == newer[::-1]


@pytest.mark.parametrize("what", list(PATHS))
def test_a_bad_window_is_refused_and_a_strange_cursor_reads_as_missing(api: Api, what: str) -> None:
    path = PATHS[what]
    seed(api.ctx, what, "alpha", "alice", "UNCLASSIFIED", 2)
    for params in ({"limit": 0}, {"limit": 10_001}, {"offset": -1}, {"cursor": "x" * 65}):
        assert_problem(api.client.get(path, params=params, headers=api.alice), 422)
    missing = assert_problem(api.client.get(path, params={"cursor": missing_id()}, headers=api.alice), 422)
    strange = assert_problem(api.client.get(path, params={"cursor": "not-an-id"}, headers=api.alice), 422)
    assert missing["detail"] == strange["detail"]
