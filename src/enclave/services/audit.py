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
from enclave.services import readable
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
        markings = _readable_markings(ctx, u.session, s)
        scope = [AuditRecord.label_rank <= s.session.rank]  # as before; the labels imply it
        if event is not None:
            scope.append(AuditRecord.event == event)
        total = _total(u.session, scope, markings) if with_total else None
        window = [*scope, AuditRecord.seq > after_seq]
        if before_seq is not None:
            window.append(AuditRecord.seq < before_seq)
        label = AuditRecord.object_label
        seqs = readable.page_seqs(
            u.session, AuditRecord.seq, label, window, markings, 0, limit + 1, newest_first=order == "desc"
        )
        records = u.session.execute(select(AuditRecord).where(AuditRecord.seq.in_(seqs))).scalars()
        by_seq = {r.seq: _view(r) for r in records}
        out = [by_seq[n] for n in seqs[:limit]]
    last = out[-1]["seq"] if len(seqs) > limit else None
    return {
        "items": out,
        "count": len(out),
        "total": total,
        "next_after": last if order == "asc" else None,
        "next_before": last if order == "desc" else None,
    }


def _readable_markings(ctx: Context, session: Session, s: Subject) -> list[str | None]:
    """The object labels whose records the session may read (None: records of no object),
    worked out from the session's label (:mod:`enclave.services.readable`), so that the
    records above it are never read, not even skipped."""
    found = readable.dominated_markings(ctx.scheme, s.session)
    if found is None:  # a session holding many compartments: the labels records have
        query = select(AuditRecord.object_label).distinct().where(AuditRecord.label_rank <= s.session.rank)
        found = [m for m in session.execute(query).scalars() if m is not None]
    return [m for m in [None, *found] if _readable(ctx, s, m)]


def _readable(ctx: Context, s: Subject, object_label: str | None) -> bool:
    label = ctx.scheme.parse(object_label) if object_label else None
    return decide(s, Action.READ_AUDIT, Resource(kind="audit", label=label)).allowed


def _total(session: Session, scope: list[ColumnElement[bool]], markings: list[str | None]) -> int:
    """Readable records in ``scope``: one count at the named labels, one of the unlabelled."""
    named = [m for m in markings if m is not None]
    label = AuditRecord.object_label
    count = select(func.count()).select_from(AuditRecord).where(*scope)
    total = session.execute(count.where(label.in_(named))).scalar_one() if named else 0
    if None in markings:
        total += session.execute(count.where(label.is_(None))).scalar_one()
    return int(total)


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
