"""``bulk_insert`` (PostgreSQL: COPY; SQLite: a Core multi-row insert) stores exactly what an
INSERT stores, on both back ends: every column type the job and audit rows use, text that
COPY's format must escape, JSON null against SQL NULL; and a constraint violation is the
IntegrityError the callers retry on, leaving the transaction to roll back whole."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import insert, select

from enclave.services.bootstrap import bootstrap
from enclave.services.context import Context
from enclave.store.db import bulk_insert
from enclave.store.models import Agency, AuditRecord, Job, User

AWKWARD = "tab\there, new\nline, back\\slash, \\N, quote ' \" , ünïcode ✓, \\., \r"


def job_row(agency_id: int, owner_id: int, **changes: Any) -> dict[str, Any]:
    row = {c.name: None for c in Job.__table__.columns if c.name != "seq"}
    row.update(
        id=str(uuid.uuid4()),
        kind="batch",
        name=AWKWARD,
        label="SECRET//SI",
        label_rank=2,
        agency_id=agency_id,
        owner_id=owner_id,
        command=["sh", "-c", AWKWARD],
        env={"A": AWKWARD, "EMPTY": ""},
        nodes=2,
        cpus_per_node=4,
        memory_mb=1 << 30,
        gpus_per_node=0,
        walltime_s=3600,
        qos="normal",
        depends_on=[{"type": "afterok", "job": "x"}],
        placement=None,  # JSON column, Python None
        state="pending",
        reason=AWKWARD,
        attempts=0,
        cancel_requested=False,
        submitted_at=datetime(2026, 12, 5, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-5))),
        cpu_s=1.5e-7,
        log_artifacts={},
    )
    row.update(changes)
    return row


def stored(ctx: Context, job_id: str) -> dict[str, Any]:
    with ctx.sessions() as s:
        job = s.execute(select(Job).where(Job.id == job_id)).scalar_one()
        return {c.name: getattr(job, c.name) for c in Job.__table__.columns if c.name not in ("seq", "id")}


def owner(ctx: Context) -> tuple[int, int]:
    with ctx.sessions() as s:
        agency = s.execute(select(Agency.id)).scalars().first()
        user = s.execute(select(User.id)).scalars().first()
    assert agency is not None and user is not None
    return agency, user


def test_rows_read_back_exactly_as_an_insert_would_store_them(ctx: Context) -> None:
    bootstrap(ctx)
    agency_id, owner_id = owner(ctx)
    bulk = [job_row(agency_id, owner_id, idempotency_key=f"k{i}", array_index=i) for i in range(3)]
    plain = job_row(agency_id, owner_id, idempotency_key="k3", array_index=0)
    with ctx.sessions() as s, s.begin():
        bulk_insert(s, Job.__table__, bulk)
        s.execute(insert(Job.__table__), [plain])
    assert stored(ctx, bulk[0]["id"]) | {"idempotency_key": "k3"} == stored(ctx, plain["id"])
    got = stored(ctx, bulk[1]["id"])
    assert got["name"] == got["reason"] == AWKWARD and got["command"] == ["sh", "-c", AWKWARD]
    assert got["env"] == {"A": AWKWARD, "EMPTY": ""} and got["placement"] is None
    assert got["submitted_at"] == bulk[1]["submitted_at"] and got["submitted_at"].tzinfo is not None
    assert got["submitted_at"].astimezone(UTC).hour == 15 and got["cpu_s"] == 1.5e-7
    assert got["array_index"] == 1 and got["cancel_requested"] is False
    with ctx.sessions() as s:  # the order of the rows is kept (seq follows it)
        ids = s.execute(select(Job.id).where(Job.id.in_([r["id"] for r in bulk])).order_by(Job.seq)).scalars()
        assert list(ids) == [r["id"] for r in bulk]


def test_a_violated_constraint_is_an_integrity_error_and_nothing_stays(ctx: Context) -> None:
    bootstrap(ctx)
    agency_id, owner_id = owner(ctx)
    with ctx.sessions() as s, s.begin():
        bulk_insert(s, Job.__table__, [job_row(agency_id, owner_id, idempotency_key="same")])
    clash = [
        job_row(agency_id, owner_id, idempotency_key="fresh"),
        job_row(agency_id, owner_id, idempotency_key="same"),
    ]
    with pytest.raises(sqlalchemy.exc.IntegrityError), ctx.sessions() as s, s.begin():
        bulk_insert(s, Job.__table__, clash)
    with ctx.sessions() as s:
        keys = s.execute(select(Job.idempotency_key).where(Job.owner_id == owner_id)).scalars().all()
    assert sorted(k for k in keys if k) == ["same"]  # "fresh" went with its transaction
    with ctx.sessions() as s, s.begin():  # and the store takes the next batch
        bulk_insert(s, Job.__table__, [job_row(agency_id, owner_id, idempotency_key="fresh")])


def test_nothing_to_insert_touches_nothing(ctx: Context) -> None:
    bootstrap(ctx)
    with ctx.sessions() as s, s.begin():
        bulk_insert(s, AuditRecord.__table__, [])


def test_a_value_the_column_cannot_hold_is_refused_as_an_insert_would_refuse_it(ctx: Context) -> None:
    """PostgreSQL's INTEGER is 32 bits: SQLAlchemy's DataError, as from an INSERT. SQLite
    stores any integer there: the value reads back."""
    bootstrap(ctx)
    agency_id, owner_id = owner(ctx)
    too_big = job_row(agency_id, owner_id, memory_mb=1 << 40)
    if ctx.engine.dialect.name == "postgresql":
        for write in (
            lambda s: bulk_insert(s, Job.__table__, [too_big]),
            lambda s: s.execute(insert(Job.__table__), [too_big]),
        ):
            with pytest.raises(sqlalchemy.exc.DataError), ctx.sessions() as s, s.begin():
                write(s)
    else:
        with ctx.sessions() as s, s.begin():
            bulk_insert(s, Job.__table__, [too_big])
        assert stored(ctx, too_big["id"])["memory_mb"] == 1 << 40
