"""`enclave artifact|dataset|model|transfer|endpoint|train list` page like `job list` (issue 13):
`--limit`, `--page`, `--cursor`, `--all` and the footer under a table, against the API in
process (a live server per command would take seconds each)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from enclave.api.app import create_app
from enclave.cli import artifacts, datasets, endpoints, models, paging, train, transfers
from enclave.client import Client
from enclave.services.context import Context
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


@pytest.fixture
def cli(sqlite_ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Context, Any]]:
    with TestClient(create_app(ctx=sqlite_ctx, run_jobs=False)) as c:
        c.headers.update(bearer((sqlite_ctx.settings.home / "admin.token").read_text().strip()))
        create_agency(c, "alpha")
        create_user(c, "alice", "alpha", "SECRET")
        http = _Http(c, mint(c, "alice", "UNCLASSIFIED")["token"])

        def client(authenticated: bool = True) -> Client:
            api = Client("http://testserver")
            api._http.close()
            api._http = http  # type: ignore[assignment]
            return api

        monkeypatch.setattr(paging, "client", client)

        def run(what: str, *args: str) -> str:
            app: typer.Typer = COMMANDS[what].app
            result = CliRunner().invoke(app, ["list", *args], env={"COLUMNS": "250"})
            assert result.exit_code == 0, result.output
            return result.output

        yield sqlite_ctx, run


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
