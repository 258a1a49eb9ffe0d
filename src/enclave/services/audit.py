"""Reading and verifying the audit log (auditors and admins only)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from enclave.audit.events import AuditEvent
from enclave.errors import InvalidInput
from enclave.policy import Action, Resource, decide
from enclave.services.context import Context
from enclave.services.unit import Actor, entry_for, unit
from enclave.store.models import AuditRecord

AUDIT = Resource(kind="audit")
MAX_LIST = 5000


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
    if not 1 <= limit <= MAX_LIST:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST}")
    if event is not None and event not in {e.value for e in AuditEvent}:
        raise InvalidInput(f"unknown audit event {event!r}")
    s = actor.subject
    with unit(ctx) as u:
        u.require(actor, Action.READ_AUDIT, AUDIT)
        query = (
            select(AuditRecord)
            .where(AuditRecord.seq > after_seq, AuditRecord.label_rank <= s.session.rank)
            .order_by(AuditRecord.seq)
        )
        if event is not None:
            query = query.where(AuditRecord.event == event)
        out: list[dict[str, Any]] = []
        # Streamed (a server-side cursor on PostgreSQL): closed explicitly, since the loop
        # stops early once ``limit`` records are found.
        with u.session.execute(query.execution_options(yield_per=500)) as result:
            for rec in result.scalars():
                label = ctx.scheme.parse(rec.object_label) if rec.object_label else None
                if decide(s, Action.READ_AUDIT, Resource(kind="audit", label=label)).allowed:
                    out.append(_view(rec))
                    if len(out) >= limit:
                        break
        return out


def verify(ctx: Context, actor: Actor) -> dict[str, Any]:
    """Check the whole chain and the signed checkpoint; the result names the first bad record."""
    with unit(ctx) as u:
        u.require(actor, Action.READ_AUDIT, AUDIT)
        result = ctx.audit.verify(u.session)
    outcome = {
        "ok": result.ok,
        "records": result.records,
        "first_bad_seq": result.first_bad_seq,
        "problem": result.problem,
    }
    if result.ok:
        # Recording a verification on a broken chain would only bury the break further.
        with unit(ctx) as u:
            u.record(entry_for(actor, AuditEvent.AUDIT_VERIFIED, AUDIT, details={"records": result.records}))
    return outcome
