"""The endpoint supervisor acts for the endpoint's owner at the endpoint's label: once the owner
may no longer work at that label, no new replica is started (and the endpoint says why)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from enclave.services import endpoints, models, tenancy
from enclave.services.auth import authenticate, mint_token
from enclave.services.bootstrap import bootstrap
from enclave.services.context import Context, Settings
from enclave.services.endpoints import DeploySpec, Supervisor
from enclave.store.models import Endpoint, Job


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    context = Context(Settings(home=tmp_path / "home", db_url=f"sqlite+pysqlite:///{tmp_path / 'e.db'}"))
    bootstrap(context)
    yield context
    context.close()


def _replicas(ctx: Context) -> int:
    with ctx.sessions() as s:
        return int(s.execute(select(func.count()).select_from(Job).where(Job.kind == "replica")).scalar_one())


def _row(ctx: Context) -> Endpoint:
    with ctx.sessions() as s:
        return s.execute(select(Endpoint)).scalar_one()


@pytest.mark.parametrize("change", [{"clearance": "CUI"}, {"disabled": True}])
def test_no_new_replicas_once_the_owner_may_not_work_at_the_label(ctx: Context, change: dict) -> None:
    admin = authenticate(ctx, (ctx.settings.home / "admin.token").read_text().strip())
    tenancy.create_agency(ctx, admin, "alpha")
    tenancy.create_user(ctx, admin, "alice", "alpha", "SECRET", ["user"])
    alice = authenticate(ctx, mint_token(ctx, admin, "alice", "SECRET")[1])
    model = models.register_builtin(ctx, alice, "minilm", "minilm")
    endpoints.deploy(ctx, alice, DeploySpec(model=model["id"], name="emb"))
    supervisor = Supervisor(ctx)
    supervisor._add_replicas(_row(ctx), 1, replaced=0)
    assert _replicas(ctx) == 1  # while cleared, the supervisor starts replicas for her
    tenancy.update_user(ctx, admin, "alice", **change)
    supervisor._add_replicas(_row(ctx), 1, replaced=0)
    assert _replicas(ctx) == 1  # ...and none after
    supervisor.stop()
    row = _row(ctx)
    assert row.state == "failed" and row.reason and row.reason.startswith("no new replicas:")
