"""Reading and verifying the audit log (auditors and admins only)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from enclave.audit.chain import Checkpoint, parse_public_key
from enclave.audit.events import AuditEvent
from enclave.audit.sink import SinkError, read_sink, to_check
from enclave.errors import InvalidInput
from enclave.policy import Action, Resource, Subject, decide
from enclave.services.context import Context
from enclave.services.unit import Actor, entry_for, unit
from enclave.store.models import AuditRecord

AUDIT = Resource(kind="audit")
MAX_LIST = 5000
MAX_SINK_CHECKPOINTS = 1000


def _view(r: AuditRecord) -> dict[str, Any]:
    return {
        "seq": r.seq,
        "ts": r.ts,
        "event": r.event,
        "outcome": r.outcome,
        "actor": r.actor,
        "agency": r.agency,
        "session_label": r.session_label,
        "object_kind": r.object_kind,
        "object_id": r.object_id,
        "object_label": r.object_label,
        "details": json.loads(r.details),
        "hash": r.hash,
    }


def list_records(
    ctx: Context, actor: Actor, after_seq: int = 0, limit: int = 100, event: str | None = None
) -> list[dict[str, Any]]:
    """Records whose object label the session dominates, oldest first, after ``after_seq``."""
    return list(page_records(ctx, actor, after_seq, limit, event)["items"])


ORDERS = ("asc", "desc")


def page_records(
    ctx: Context,
    actor: Actor,
    after_seq: int = 0,
    limit: int = 100,
    event: str | None = None,
    *,
    before_seq: int | None = None,
    order: str = "asc",
    with_total: bool = False,
) -> dict[str, Any]:
    """One page of the records the session may read, between ``after_seq`` and
    ``before_seq`` (exclusive), oldest (``asc``) or newest (``desc``) first.

    ``next_after`` (asc) or ``next_before`` (desc) is the ``after``/``before`` that asks for
    the next page, null on the last. ``total`` (asked for: it counts the whole log) is the
    number of readable records the event filter matches, wherever the page stands."""
    if not 1 <= limit <= MAX_LIST:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST}")
    if event is not None and event not in {e.value for e in AuditEvent}:
        raise InvalidInput(f"unknown audit event {event!r}")
    if order not in ORDERS:
        raise InvalidInput(f"order must be one of {', '.join(ORDERS)}")
    s = actor.subject
    ctx.denials.flush()  # denials recorded off the request path are read as written
    with unit(ctx) as u:
        u.require(actor, Action.READ_AUDIT, AUDIT)
        scope = [AuditRecord.label_rank <= s.session.rank]
        if event is not None:
            scope.append(AuditRecord.event == event)
        total = _total(ctx, u.session, s, scope) if with_total else None
        query = select(AuditRecord).where(*scope, AuditRecord.seq > after_seq)
        if before_seq is not None:
            query = query.where(AuditRecord.seq < before_seq)
        query = query.order_by(AuditRecord.seq.desc() if order == "desc" else AuditRecord.seq)
        out: list[dict[str, Any]] = []
        more = False
        # Streamed (a server-side cursor on PostgreSQL): closed explicitly, since the loop
        # stops early once a record past ``limit`` is found.
        with u.session.execute(query.execution_options(yield_per=500)) as result:
            for rec in result.scalars():
                if _readable(ctx, s, rec.object_label):
                    if len(out) >= limit:
                        more = True
                        break
                    out.append(_view(rec))
    last = out[-1]["seq"] if out and more else None
    return {
        "items": out,
        "count": len(out),
        "total": total,
        "next_after": last if order == "asc" else None,
        "next_before": last if order == "desc" else None,
    }


def _readable(ctx: Context, s: Subject, object_label: str | None) -> bool:
    label = ctx.scheme.parse(object_label) if object_label else None
    return decide(s, Action.READ_AUDIT, Resource(kind="audit", label=label)).allowed


def _total(ctx: Context, session: Session, s: Subject, scope: list[ColumnElement[bool]]) -> int:
    """Readable records in ``scope``: counted per object label, each label checked once."""
    counts = session.execute(
        select(AuditRecord.object_label, func.count()).where(*scope).group_by(AuditRecord.object_label)
    ).all()
    return sum(n for label, n in counts if _readable(ctx, s, label))


def public_key(ctx: Context, actor: Actor) -> dict[str, Any]:
    """The key this server signs with (what ``--pubkey`` should match)."""
    with unit(ctx) as u:
        u.require(actor, Action.READ_AUDIT, AUDIT)
    return {"public_key": ctx.audit.public_key_text}


def verify(
    ctx: Context, actor: Actor, pubkey: str | None = None, sink: Sequence[Checkpoint] = ()
) -> dict[str, Any]:
    """Check the whole chain and the signed checkpoints; the result names the first bad record.

    ``pubkey`` pins the verifying key (the one recorded at the first start). ``sink`` holds
    checkpoints an operator read from an append-only sink (:func:`enclave.audit.sink.to_check`
    picks them); the server's own sink file, when it has one, is read as well. The chain must
    match every one of them and reach the newest.
    """
    if len(sink) > MAX_SINK_CHECKPOINTS:
        raise InvalidInput(f"at most {MAX_SINK_CHECKPOINTS} sink checkpoints")
    try:
        pinned = parse_public_key(pubkey) if pubkey is not None else None
    except ValueError as exc:
        raise InvalidInput(f"pubkey: {exc}") from None
    ctx.denials.flush()  # the chain checked includes every denial answered so far
    with unit(ctx) as u:
        u.require(actor, Action.READ_AUDIT, AUDIT)
        own, own_problem = _own_sink(ctx)
        result = ctx.audit.verify(u.session, pinned, list(dict.fromkeys([*sink, *own])))
    outcome = {
        "ok": result.ok and own_problem is None,
        "records": result.records,
        "first_bad_seq": result.first_bad_seq,
        "problem": result.problem or own_problem,
    }
    if outcome["ok"]:
        # Recording a verification on a broken chain would only bury the break further.
        details: dict[str, Any] = {"records": result.records}
        if pinned is not None:
            details["pinned"] = True
        if sink or own:
            details["sink_seq"] = max(cp.seq for cp in [*sink, *own])
        with unit(ctx) as u:
            u.record(entry_for(actor, AuditEvent.AUDIT_VERIFIED, AUDIT, details=details))
    return outcome


def _own_sink(ctx: Context) -> tuple[list[Checkpoint], str | None]:
    """The checkpoints to check from the server's own sink file (if it has one and can read it)."""
    path = ctx.settings.audit_sink_file
    if path is None or not path.exists():
        return [], None
    try:
        return to_check(read_sink(path), MAX_SINK_CHECKPOINTS), None
    except SinkError as exc:
        return [], f"the audit sink {path} is damaged: {exc}"
    except OSError:
        return [], None  # write-only to this server (the operator's choice): --sink reads it
