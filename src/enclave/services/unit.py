"""The unit of work: one transaction, the policy gate, and audit records inside it.

``with unit(ctx) as u:`` opens a transaction. ``u.require(...)`` asks the policy gate; a
denial rolls the transaction back, records ``access.denied`` (a denial must be audited even
though the action is not), and raises NotFound when the object is invisible or Forbidden
when it is visible. A Forbidden denial is committed, with its checkpoint, before the answer
goes (the answer already says the object exists). A NotFound denial must cost what a miss
costs, or its time would tell the object exists: it goes to ``ctx.denials``
(:mod:`enclave.audit.deferred`), committed off the request path within milliseconds. ``u.record(entry)`` appends an audit
record that commits with the action (all of a unit's records are written, in order, in one
statement just before the commit). After a commit that wrote records, the signed
checkpoint is refreshed so that truncating the log is detectable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from enclave.audit.events import AuditEvent, Outcome
from enclave.audit.log import Entry
from enclave.errors import NotFound
from enclave.policy import Action, Decision, Resource, Subject, decide, refusal
from enclave.services.context import Context


@dataclass(frozen=True)
class Actor:
    """An authenticated session: the policy subject plus the ids the store needs."""

    subject: Subject
    user_id: int
    agency_id: int
    token_id: str | None = None


class _Denied(Exception):
    def __init__(self, entry: Entry, public: Exception, visible: bool) -> None:
        self.entry = entry
        self.public = public
        self.visible = visible


class Unit:
    def __init__(self, ctx: Context, session: Session) -> None:
        self.ctx = ctx
        self.session = session
        self._records: list[tuple[Entry, datetime]] = []

    def record(self, entry: Entry, when: datetime | None = None) -> None:
        """Append an audit record to this unit's transaction. Records are kept in order and
        written together just before the commit (one statement, however many)."""
        self._records.append((entry, when or self.ctx.now()))

    def write_records(self) -> None:
        self.ctx.audit.append_all(self.session, self._records)
        self._records.clear()

    def require(self, actor: Actor | None, action: Action, resource: Resource, ref: str = "") -> Decision:
        if actor is None:
            raise NotFound(f"{resource.kind} {ref} not found".replace("  ", " "))
        decision = decide(actor.subject, action, resource)
        if decision.allowed:
            return decision
        public = refusal(decision, resource.kind, ref)
        entry = entry_for(
            actor,
            AuditEvent.ACCESS_DENIED,
            resource,
            ref,
            outcome=Outcome.DENY,
            details={"action": str(action), "rule": decision.rule, "reason": decision.reason},
        )
        raise _Denied(entry, public, decision.visible)


def entry_for(
    actor: Actor | None,
    event: AuditEvent,
    resource: Resource | None = None,
    ref: str | None = None,
    *,
    outcome: Outcome = Outcome.ALLOW,
    details: dict[str, object] | None = None,
) -> Entry:
    s = actor.subject if actor else None
    label = resource.label if resource else None
    return Entry(
        event=event,
        outcome=outcome,
        actor=s.user if s else None,
        agency=s.agency if s else None,
        session_label=s.session.marking if s else None,
        object_kind=resource.kind if resource else None,
        object_id=ref or None,
        object_label=label.marking if label else None,
        label_rank=label.rank if label else 0,
        details=dict(details or {}),
    )


@contextmanager
def unit(ctx: Context) -> Iterator[Unit]:
    head: tuple[int, str] | None = None
    try:
        with ctx.sessions() as session:
            with session.begin():
                u = Unit(ctx, session)
                yield u
                u.write_records()
            head = ctx.audit.appended_head(session)
    except _Denied as denied:
        if not denied.visible:  # answered like a miss: recorded off the request path
            ctx.denials.submit(denied.entry, ctx.now())
            raise denied.public from None
        with ctx.sessions() as session:
            with session.begin():
                ctx.audit.append(session, denied.entry, ctx.now())
            head = ctx.audit.appended_head(session)
        _checkpoint(ctx, head)
        raise denied.public from None
    _checkpoint(ctx, head)


def _checkpoint(ctx: Context, head: tuple[int, str] | None) -> None:
    """Sign the head a commit left, so that truncating the log past it is detectable."""
    if head is not None:
        ctx.audit.checkpoint(head[0], head[1], ctx.now())
