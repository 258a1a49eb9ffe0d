"""`enclave artifact|dataset|model|transfer|endpoint|train list` and the `enclave admin` lists
page like `job list` (issue 13): `--limit`, `--page`, `--cursor`, `--all` and the footer under
a table, against the API in process (a live server per command would take seconds each)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from enclave.api.app import create_app
from enclave.cli import admin, artifacts, datasets, endpoints, models, paging, train, transfers
from enclave.client import Client
from enclave.services.context import Context
from tests.api import admin_rows
from tests.api.helpers import bearer, create_agency, create_user, mint
from tests.api.object_rows import seed

COMMANDS: dict[str, Any] = {
    "artifacts": artifacts,
    "datasets": datasets,
    "models": models,
    "transfers": transfers,
    "endpoints": endpoints,
    "training": train,
}


class _Http:
    """The in-process app behind the CLI's client, shared by its calls (never closed by one)."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client, self.headers = client, {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.client.request(method, path, headers=self.headers, **kwargs)

    def close(self) -> None:
        pass


def _through(c: TestClient, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The list commands call the in-process app ``c`` with ``token``."""
    http = _Http(c, token)

    def client(authenticated: bool = True) -> Client:
        api = Client("http://testserver")
        api._http.close()
        api._http = http  # type: ignore[assignment]
        return api

    monkeypatch.setattr(paging, "client", client)


def _run(app: typer.Typer, *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def cli(sqlite_ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Context, Any]]:
    with TestClient(create_app(ctx=sqlite_ctx, run_jobs=False)) as c:
        c.headers.update(bearer((sqlite_ctx.settings.home / "admin.token").read_text().strip()))
        create_agency(c, "alpha")
        create_user(c, "alice", "alpha", "SECRET")
        _through(c, mint(c, "alice", "UNCLASSIFIED")["token"], monkeypatch)
        yield sqlite_ctx, lambda what, *args: _run(COMMANDS[what].app, "list", *args)


@pytest.mark.parametrize("what", list(COMMANDS))
def test_a_list_command_pages_with_a_footer(cli: tuple[Context, Any], what: str) -> None:
    ctx, run = cli
    newest = seed(ctx, what, "alpha", "alice", "UNCLASSIFIED", 5)[::-1]
    assert "showing 1-2 of 5, newest first; next: --page 2" in run(what, "--limit", "2")
    assert "showing 5-5 of 5, newest first" in run(what, "--limit", "2", "--page", "3")
    second = json.loads(run(what, "--limit", "2", "--page", "2", "--json"))
    assert [i["id"] for i in second] == newest[2:4]  # machine output: the items, no footer
    after = run(what, "--limit", "2", "--cursor", newest[1])
    assert f"showing 2 of 5, newest first; next: --cursor {newest[3]}" in after
    everything = json.loads(run(what, "--limit", "2", "--all", "-o", "json"))
    assert [i["id"] for i in everything] == newest
    assert "showing 1-5 of 5, newest first\n" in run(what, "--limit", "2", "--all")
    refused = CliRunner().invoke(COMMANDS[what].app, ["list", "--page", "2", "--all"])
    assert refused.exit_code != 0


# `enclave admin ... list`: the command, the list's order as the footer says it, what it lists by
ADMIN_COMMANDS = {
    "agencies": (["agency", "list"], "by name", "name"),
    "projects": (["project", "list", "alpha"], "by name", "name"),
    "users": (["user", "list"], "by name", "name"),
    "clearance-requests": (["user", "clearance-requests"], "oldest first", "id"),
    "worker-credentials": (["worker-credential", "list"], "oldest first", "id"),
}


@pytest.fixture
def admin_cli(sqlite_ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`enclave admin` as the deployment's operator, against alpha (the only other agency)."""
    with TestClient(create_app(ctx=sqlite_ctx, run_jobs=False)) as c:
        token = (sqlite_ctx.settings.home / "admin.token").read_text().strip()
        c.headers.update(bearer(token))
        create_agency(c, "alpha")
        _through(c, token, monkeypatch)
        yield sqlite_ctx, lambda *args: _run(admin.app, *args)


@pytest.mark.parametrize("what", list(ADMIN_COMMANDS))
def test_an_admin_list_command_pages_with_a_footer(admin_cli: tuple[Context, Any], what: str) -> None:
    ctx, run = admin_cli
    command, order, key = ADMIN_COMMANDS[what]
    made = admin_rows.seed(ctx, what, "alpha", [f"m{i}" for i in range(5)])
    listed = json.loads(run(*command, "--json"))
    assert [i[key] for i in listed][-5:] == made  # what there was already sorts before "m0"
    n = len(listed)
    assert f"showing 1-2 of {n}, {order}; next: --page 2" in run(*command, "--limit", "2")
    second = json.loads(run(*command, "--limit", "2", "--page", "2", "--json"))
    assert second == listed[2:4]  # machine output: the items, no footer
    after = run(*command, "--limit", "2", "--cursor", listed[1][key])
    assert f"showing 2 of {n}, {order}; next: --cursor {listed[3][key]}" in after
    assert json.loads(run(*command, "--limit", "2", "--all", "-o", "json")) == listed
    assert f"showing 1-{n} of {n}, {order}\n" in run(*command, "--limit", "2", "--all")
    refused = CliRunner().invoke(admin.app, [*command, "--page", "2", "--all"])
    assert refused.exit_code != 0
