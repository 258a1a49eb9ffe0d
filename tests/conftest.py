"""Shared fixtures: a control-plane context on SQLite and on a real PostgreSQL server.

``scripts/test.sh`` starts a throwaway PostgreSQL and exports ``ENCLAVE_TEST_PG_URL``.
Tests that need it fail (not skip) when it is missing: the README's test command always
provides it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from enclave.api.app import create_app
from enclave.services.context import Context, Settings

PG_ENV = "ENCLAVE_TEST_PG_URL"


def pg_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.fail(f"{PG_ENV} is not set: run the suite with `bash scripts/test.sh` (it starts PostgreSQL)")
    return url


def reset_pg(url: str) -> None:
    """Drop everything so each test starts from an empty, freshly migrated schema."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+pysqlite:///{tmp_path / 'enclave.db'}"
    url = pg_url()
    reset_pg(url)
    return url


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def ctx(home: Path, db_url: str) -> Iterator[Context]:
    context = Context(Settings(home=home, db_url=db_url))
    yield context
    context.close()


@pytest.fixture
def sqlite_ctx(home: Path, tmp_path: Path) -> Iterator[Context]:
    context = Context(Settings(home=home, db_url=f"sqlite+pysqlite:///{tmp_path / 'enclave.db'}"))
    yield context
    context.close()


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    """The real app (bootstrapped) over the parametrised store; admin token on the client."""
    with TestClient(create_app(ctx=ctx)) as c:
        token = (ctx.settings.home / "admin.token").read_text().strip()
        c.headers["Authorization"] = f"Bearer {token}"
        yield c
