"""Fixtures for the API tests: a populated world of agencies, users and tokens, a movable
clock, and a server with a small upload limit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from enclave.api.app import create_app
from enclave.services.context import Context, Settings

from .helpers import Headers, create_agency, create_user, token_header

SMALL_UPLOAD_BYTES = 64


@dataclass
class World:
    """Agency ``alpha``: alice (SECRET, user), bob and carol (TOP SECRET, release
    authorities), dave (UNCLASSIFIED, user). Agency ``beta``: eve (top label, user).
    Each header is a bearer token for one user at one session label."""

    client: TestClient
    ctx: Context
    alice_s: Headers  # alice @ SECRET
    alice_u: Headers  # alice @ UNCLASSIFIED
    bob_s: Headers  # bob @ SECRET
    carol_s: Headers  # carol @ SECRET
    dave_u: Headers  # dave @ UNCLASSIFIED
    eve_top: Headers  # eve @ TOP SECRET with every compartment
    eve_u: Headers  # eve @ UNCLASSIFIED


@pytest.fixture
def world(client: TestClient, ctx: Context) -> World:
    create_agency(client, "alpha")
    create_agency(client, "beta")
    top = ctx.scheme.top.marking
    create_user(client, "alice", "alpha", "SECRET")
    create_user(client, "bob", "alpha", "TOP SECRET", ("user", "release-authority"))
    create_user(client, "carol", "alpha", "TOP SECRET", ("user", "release-authority"))
    create_user(client, "dave", "alpha", "UNCLASSIFIED")
    create_user(client, "eve", "beta", top, ("user", "release-authority"))
    return World(
        client=client,
        ctx=ctx,
        alice_s=token_header(client, "alice", "SECRET"),
        alice_u=token_header(client, "alice", "UNCLASSIFIED"),
        bob_s=token_header(client, "bob", "SECRET"),
        carol_s=token_header(client, "carol", "SECRET"),
        dave_u=token_header(client, "dave", "UNCLASSIFIED"),
        eve_top=token_header(client, "eve", top),
        eve_u=token_header(client, "eve", "UNCLASSIFIED"),
    )


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Moves the server's clock (tokens expire, lock-outs end) without sleeping."""
    c = Clock()
    real = ctx.now

    def now() -> datetime:
        return real() + c.offset

    monkeypatch.setattr(ctx, "now", now)
    return c


@pytest.fixture
def small_ctx(tmp_path: Path, db_url: str) -> Iterator[Context]:
    home = tmp_path / "small-home"
    home.mkdir()
    context = Context(Settings(home=home, db_url=db_url, max_upload_bytes=SMALL_UPLOAD_BYTES))
    yield context
    context.close()


@pytest.fixture
def small_client(small_ctx: Context) -> Iterator[TestClient]:
    """Like ``client`` but the server accepts uploads of at most SMALL_UPLOAD_BYTES."""
    with TestClient(create_app(ctx=small_ctx, run_jobs=False)) as c:
        token = (small_ctx.settings.home / "admin.token").read_text().strip()
        c.headers["Authorization"] = f"Bearer {token}"
        yield c
