"""The store on both back ends (SQLite and a real PostgreSQL, via the ``ctx``/``db_url``
fixtures): migrations, constraints, timestamps and concurrent audit appends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text

from enclave.errors import Conflict
from enclave.services import artifacts, auth, tenancy
from enclave.services.bootstrap import bootstrap
from enclave.services.context import Context, Settings
from enclave.services.unit import Actor
from enclave.store.db import alembic_config, migrate
from enclave.store.models import Agency, AuditHead, AuditRecord, Token, User

TABLES = {
    "agencies",
    "projects",
    "users",
    "tokens",
    "login_throttle",
    "artifacts",
    "shares",
    "transfers",
    "transfer_reviews",
    "audit_records",
    "audit_head",
    "alembic_version",
}


def admin_of(ctx: Context) -> Actor:
    bootstrap(ctx)
    return auth.authenticate(ctx, (ctx.settings.home / "admin.token").read_text().strip())


def actor_for(ctx: Context, admin: Actor, user: str, marking: str) -> Actor:
    _row, secret = auth.mint_token(ctx, admin, user, marking)
    return auth.authenticate(ctx, secret)


async def stream(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 5):
        yield data[i : i + 5]


def put(ctx: Context, actor: Actor, name: str, data: bytes) -> dict[str, Any]:
    return asyncio.run(artifacts.put(ctx, actor, name, stream(data)))


def audit_seqs(ctx: Context) -> list[int]:
    with ctx.sessions() as s:
        return list(s.execute(select(AuditRecord.seq).order_by(AuditRecord.seq)).scalars())


def verify(ctx: Context) -> Any:
    with ctx.sessions() as s:
        return ctx.audit.verify(s)


# -- migrations ---------------------------------------------------------------------------
def test_migrations_are_idempotent(ctx: Context, home: Path, db_url: str) -> None:
    admin_of(ctx)
    before = audit_seqs(ctx)
    migrate(ctx.engine)
    migrate(ctx.engine)
    assert set(inspect(ctx.engine).get_table_names()) >= TABLES
    with ctx.sessions() as s:
        versions = s.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        heads = s.execute(select(AuditHead.id, AuditHead.seq)).all()
    assert versions == [ScriptDirectory.from_config(alembic_config(ctx.engine)).get_current_head()]
    assert [tuple(h) for h in heads] == [(1, before[-1])]  # the genesis head row is not re-inserted
    # A second process over the same home and database migrates again and sees the same state.
    again = Context(Settings(home=home, db_url=db_url))
    try:
        assert bootstrap(again) is False
        assert audit_seqs(again) == before
        assert verify(again).ok
    finally:
        again.close()


def test_a_fresh_store_starts_with_an_empty_chain(ctx: Context) -> None:
    with ctx.sessions() as s:
        head = s.execute(select(AuditHead)).scalar_one()
        assert (head.id, head.seq, head.hash) == (1, 0, "0" * 64)
        assert s.execute(select(func.count()).select_from(AuditRecord)).scalar_one() == 0
    assert verify(ctx).ok


# -- constraints --------------------------------------------------------------------------
def test_duplicate_names_are_conflicts(ctx: Context) -> None:
    admin = admin_of(ctx)
    tenancy.create_agency(ctx, admin, "nasa")
    tenancy.create_agency(ctx, admin, "noaa")
    tenancy.create_user(ctx, admin, "alice", "nasa", "SECRET", ["user"])
    tenancy.create_project(ctx, admin, "nasa", "climate")
    tenancy.create_project(ctx, admin, "noaa", "climate")  # project names are per agency
    records = audit_seqs(ctx)

    with pytest.raises(Conflict, match="agency nasa already exists"):
        tenancy.create_agency(ctx, admin, "nasa")
    with pytest.raises(Conflict, match="user alice already exists"):
        tenancy.create_user(ctx, admin, "alice", "noaa", "CUI", ["user"])  # names are global
    with pytest.raises(Conflict, match="project climate already exists"):
        tenancy.create_project(ctx, admin, "nasa", "climate")

    assert audit_seqs(ctx) == records  # a refused action records nothing
    with ctx.sessions() as s:
        assert (
            s.execute(select(func.count()).select_from(Agency).where(Agency.name == "nasa")).scalar_one() == 1
        )


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda now: Agency(name="enclave", created_at=now), id="agency name"),
        pytest.param(
            lambda now: User(name="admin", agency_id=1, clearance="CUI", roles=[], created_at=now),
            id="user name",
        ),
    ],
)
def test_the_database_itself_enforces_unique_names(ctx: Context, make: Callable[[datetime], Any]) -> None:
    admin_of(ctx)
    with pytest.raises(sqlalchemy.exc.IntegrityError), ctx.sessions() as s, s.begin():
        s.add(make(ctx.now()))


@pytest.mark.parametrize("kind", ["agency", "user", "project"])
def test_concurrent_creation_of_one_name_gives_one_conflict(ctx: Context, kind: str) -> None:
    """Both requests pass the existence check before either inserts: the loser must still get
    Conflict (409), not a raw database error (500). SQLite serialises the two transactions
    up front, so the race only really happens on PostgreSQL."""
    admin = admin_of(ctx)
    tenancy.create_agency(ctx, admin, "nasa")
    race = ctx.engine.dialect.name == "postgresql"
    barrier = threading.Barrier(2, timeout=10)
    real_now = ctx.now
    local = threading.local()

    def now() -> datetime:
        # The first clock read in each thread comes after the existence check and before the
        # insert: hold both threads there so that both have passed the check.
        if race and not getattr(local, "waited", False):
            local.waited = True
            barrier.wait()
        return real_now()

    def create(_: int) -> str:
        try:
            if kind == "agency":
                tenancy.create_agency(ctx, admin, "noaa")
            elif kind == "project":
                tenancy.create_project(ctx, admin, "nasa", "climate")
            else:
                tenancy.create_user(ctx, admin, "bob", "nasa", "SECRET", ["user"])
        except Conflict:
            return "conflict"
        return "created"

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ctx, "now", now)
        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(create, range(2)))

    assert outcomes == ["conflict", "created"]
    assert verify(ctx).ok


# -- timestamps ---------------------------------------------------------------------------
IST = timezone(timedelta(hours=5, minutes=30))
WHEN = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=IST)


@pytest.fixture
def local_tz_ctx(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    """A context whose clock and PostgreSQL session both run in a zone that is not UTC."""
    monkeypatch.setenv("PGTZ", "America/St_Johns")  # libpq: the session time zone (UTC-3:30)
    context = Context(Settings(home=tmp_path / "home-tz", db_url=db_url), clock=lambda: WHEN)
    yield context
    context.close()


def test_aware_datetimes_round_trip_as_utc(local_tz_ctx: Context) -> None:
    ctx = local_tz_ctx
    admin = admin_of(ctx)
    tenancy.create_agency(ctx, admin, "nasa")
    with ctx.sessions() as s:
        created = s.execute(select(Agency.created_at).where(Agency.name == "nasa")).scalar_one()
        token = s.execute(select(Token).limit(1)).scalar_one()
    assert created == WHEN  # the same instant...
    assert created.utcoffset() == timedelta(0)  # ...handed back in UTC on both back ends
    assert created.isoformat() == "2024-02-29T18:29:58.123456+00:00"
    assert token.expires_at - token.created_at == timedelta(days=365)
    assert token.expires_at.utcoffset() == timedelta(0)


def test_sql_compares_and_orders_by_instant(ctx: Context) -> None:
    """Filters and ORDER BY run in SQL: every back end must compare instants, not wall times."""
    base = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    stamps = {  # name: the same or nearby instants written in different zones
        "a-utc": base,
        "b-east": (base + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=9))),
        "c-west": (base + timedelta(minutes=2)).astimezone(timezone(timedelta(hours=-8))),
    }
    with ctx.sessions() as s, s.begin():
        s.add_all(Agency(name=name, created_at=when) for name, when in stamps.items())
    with ctx.sessions() as s:
        ordered = s.execute(select(Agency.name).order_by(Agency.created_at)).scalars().all()
        later = (
            s.execute(select(Agency.name).where(Agency.created_at > base).order_by(Agency.name))
            .scalars()
            .all()
        )
        back = {name: when for name, when in s.execute(select(Agency.name, Agency.created_at))}
    assert ordered == ["a-utc", "b-east", "c-west"]
    assert later == ["b-east", "c-west"]
    assert back == stamps
    assert all(v.tzinfo is not None and v.utcoffset() == timedelta(0) for v in back.values())


def test_naive_datetimes_are_refused(ctx: Context) -> None:
    with pytest.raises(sqlalchemy.exc.StatementError, match="naive datetime"), ctx.sessions() as s, s.begin():
        s.add(Agency(name="naive", created_at=datetime(2024, 1, 1)))


# -- concurrency --------------------------------------------------------------------------
THREADS = 4
PER_THREAD = 25


def test_concurrent_appends_extend_one_unbroken_chain(ctx: Context) -> None:
    admin = admin_of(ctx)
    tenancy.create_agency(ctx, admin, "nasa")
    tenancy.create_user(ctx, admin, "alice", "nasa", "SECRET", ["user"])
    alice = actor_for(ctx, admin, "alice", "SECRET")
    start = len(audit_seqs(ctx))

    def work(t: int) -> list[str]:
        made = []
        for i in range(PER_THREAD):
            if (t + i) % 2:
                made.append(tenancy.create_agency(ctx, admin, f"agency-{t}-{i}")["name"])
            else:
                made.append(put(ctx, alice, f"file-{t}-{i}", f"content {t} {i}".encode())["id"])
        return made

    with ThreadPoolExecutor(THREADS) as pool:
        made = [x for xs in pool.map(work, range(THREADS)) for x in xs]

    assert len(set(made)) == THREADS * PER_THREAD
    seqs = audit_seqs(ctx)
    assert seqs == list(range(1, start + THREADS * PER_THREAD + 1))  # no gaps, no forks
    result = verify(ctx)
    assert (result.ok, result.records, result.problem) == (True, len(seqs), None)
    with ctx.sessions() as s:
        head = s.execute(select(AuditHead)).scalar_one()
        last = s.execute(select(AuditRecord).where(AuditRecord.seq == seqs[-1])).scalar_one()
    assert (head.seq, head.hash) == (last.seq, last.hash)
    checkpoint = ctx.audit.read_checkpoint()
    assert checkpoint is not None
    assert (checkpoint.seq, checkpoint.hash) == (head.seq, head.hash)  # the newest head wins
    assert len(artifacts.list_visible(ctx, alice)) == THREADS * PER_THREAD // 2
