"""The batched append (DB-API statements, one head lock per transaction) used by the gateway's
call log: the same chain as appending one by one, on SQLite and PostgreSQL; all or nothing
with its transaction; and the gateway's calls are released only once their records are in."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from enclave.audit.chain import record_hash, signature_ok
from enclave.audit.events import AuditEvent, Outcome
from enclave.audit.log import DirectWriter, Entry
from enclave.services.bootstrap import bootstrap
from enclave.services.context import Context
from enclave.services.gateway import Call, CallLog
from enclave.services.unit import unit
from enclave.store.models import AuditHead, AuditRecord, GatewayUsage


def entry(n: int) -> Entry:
    return Entry(
        AuditEvent.GATEWAY_CALL,
        Outcome.ALLOW if n % 2 else Outcome.DENY,
        actor="alice",
        agency="system",
        session_label="CUI",
        object_kind="endpoint",
        object_id=f"ep-{n}",
        object_label="CUI",
        label_rank=1,
        details={"n": n, "text": "ünïcode", "nested": {"b": 2, "a": [1, 2]}},
    )


def rows(ctx: Context) -> list[AuditRecord]:
    with ctx.sessions() as s:
        return list(s.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars())


def keys(records: list[AuditRecord]) -> list[tuple[int, str]]:
    return [(r.seq, r.hash) for r in records]


def verify_ok(ctx: Context) -> None:
    with ctx.sessions() as s:
        result = ctx.audit.verify(s)
    assert result.ok, result


def test_a_batch_extends_the_chain_like_single_appends(ctx: Context) -> None:
    bootstrap(ctx)
    with unit(ctx) as u:  # one by one, through the ORM
        u.record(entry(0))
    before = rows(ctx)
    writer = DirectWriter(ctx.engine)
    with writer.transaction() as tx:
        head = ctx.audit.append_many(tx, [entry(n) for n in range(1, 6)], ctx.now)
    writer.close()
    ctx.audit.checkpoint(head[0], head[1], ctx.now())
    with unit(ctx) as u:  # and one by one again after the batch
        u.record(entry(6))
    after = rows(ctx)
    assert keys(after[: len(before)]) == keys(before)
    new = after[len(before) :]
    assert [r.seq for r in new] == list(range(before[-1].seq + 1, before[-1].seq + 7))
    assert [r.object_id for r in new] == [f"ep-{n}" for n in range(1, 7)]
    prev = before[-1].hash
    for r in new:
        fields = {c.name: getattr(r, c.name) for c in AuditRecord.__table__.columns}
        assert r.prev_hash == prev
        assert record_hash(prev, fields) == r.hash
        assert signature_ok(ctx.audit.public_key, r.hash, r.signature)
        prev = r.hash
    # the batch's records hold exactly what a single append stores for the same entry
    single, batched = after[len(before) - 1], new[0]
    for column in ("event", "actor", "agency", "session_label", "object_kind", "object_label", "label_rank"):
        assert getattr(single, column) == getattr(batched, column)
    assert batched.details == '{"n":1,"nested":{"a":[1,2],"b":2},"text":"ünïcode"}'
    assert batched.outcome == str(Outcome.ALLOW)
    with ctx.sessions() as s:
        h = s.execute(select(AuditHead)).scalar_one()
        assert (h.seq, h.hash) == (after[-1].seq, after[-1].hash)
    verify_ok(ctx)


def test_a_batch_commits_with_its_transaction_or_not_at_all(ctx: Context) -> None:
    bootstrap(ctx)
    before = rows(ctx)
    checkpoint = ctx.audit.read_checkpoint()
    writer = DirectWriter(ctx.engine)
    with pytest.raises(RuntimeError), writer.transaction() as tx:
        ctx.audit.append_many(tx, [entry(n) for n in range(3)], ctx.now)
        raise RuntimeError("crash before commit")
    assert keys(rows(ctx)) == keys(before)
    assert ctx.audit.read_checkpoint() == checkpoint
    verify_ok(ctx)
    with writer.transaction() as tx:  # the chain goes on from the same head (a new connection)
        seq, _hash = ctx.audit.append_many(tx, [entry(9)], ctx.now)
    writer.close()
    assert seq == before[-1].seq + 1
    verify_ok(ctx)


def test_the_call_log_releases_calls_only_after_their_records_and_usage_committed(ctx: Context) -> None:
    bootstrap(ctx)
    start = rows(ctx)[-1].seq
    log = CallLog(ctx)
    seen: list[tuple[int, BaseException | None]] = []
    released = threading.Event()
    day = datetime.now(UTC).date().isoformat()

    def done(error: BaseException | None) -> None:
        # At release, the call's record is committed: a fresh session sees it.
        with ctx.read_sessions() as s:
            seen.append((len(s.execute(select(AuditRecord.seq).where(AuditRecord.seq > start)).all()), error))
        if len(seen) == 20:
            released.set()

    try:
        for n in range(20):
            log.submit(
                Call(
                    1,
                    day,
                    "UNCLASSIFIED",
                    entry(n),
                    prompt_tokens=3,
                    completion_tokens=2,
                    energy_j=0.5,
                    done=done,
                )
            )
        assert released.wait(30)
    finally:
        log.close()
    assert all(error is None for _, error in seen)
    assert all(count >= i + 1 for i, (count, _) in enumerate(seen))
    with ctx.read_sessions() as s:
        usage = s.get_one(GatewayUsage, (1, day, "UNCLASSIFIED"))
        assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (20, 60, 40)
        assert usage.energy_j == pytest.approx(10.0)
    last = rows(ctx)[-1]
    assert [r.object_id for r in rows(ctx)[-20:]] == [f"ep-{n}" for n in range(20)]
    checkpoint = ctx.audit.read_checkpoint()
    assert checkpoint is not None and (checkpoint.seq, checkpoint.hash) == (last.seq, last.hash)
    verify_ok(ctx)


def test_the_call_log_checkpoints_a_quiet_log_without_waiting_for_more_calls(ctx: Context) -> None:
    """Checkpoints are written at most every CHECKPOINT_EVERY_S; the last commit's one must
    still come when no call follows it (else the newest records stay uncovered for good)."""
    bootstrap(ctx)
    log = CallLog(ctx)
    day = datetime.now(UTC).date().isoformat()
    try:
        for n in range(3):  # quicker than the interval: the later ones' checkpoints are deferred
            released = threading.Event()
            log.submit(
                Call(1, day, "UNCLASSIFIED", entry(n), 1, 1, 0.1, done=lambda _e, ev=released: ev.set())
            )
            assert released.wait(30)
        last = rows(ctx)[-1]
        deadline = time.monotonic() + 10
        while (cp := ctx.audit.read_checkpoint()) is None or cp.seq != last.seq:
            assert time.monotonic() < deadline, f"no checkpoint of {last.seq} while the log is open: {cp}"
            time.sleep(0.01)
        assert cp.hash == last.hash
        assert log._thread.is_alive()  # written by the open log's timer, not at its close
    finally:
        log.close()
    verify_ok(ctx)
