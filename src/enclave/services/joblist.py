"""Listing jobs a page at a time, newest first, with filters and a total.

Only jobs the session may read are ever counted, returned or even read: the session's
agency, at the labels it dominates — worked out from the session's label alone and checked
by the policy gate, then read label by label on the ``(agency_id, label, seq)`` index
(:mod:`enclave.services.readable`). So the total, the page, its offset, its cursor and the
time they take never depend on a job the session cannot read.

A page is asked for by ``offset`` (``--page``) or by ``cursor``: the id of the last job of the
previous page (``next_cursor``), which keeps its place while new jobs are submitted. Job
``seq`` numbers are global across agencies and labels, so they are never handed out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select

from enclave.errors import InvalidInput
from enclave.policy import Action, Resource, decide
from enclave.services import jobs, readable
from enclave.services.context import Context
from enclave.services.jobs import JobState
from enclave.services.unit import Actor, Unit, unit
from enclave.store.models import Job, User

MAX_LIMIT = 10_000
MAX_OFFSET = 10_000_000


@dataclass(frozen=True)
class JobFilter:
    """What to list; every field narrows, ``None`` leaves it open."""

    state: JobState | None = None
    name: str | None = None  # part of the name, any case (array tasks are ``name[i]``)
    array: str | None = None  # an array id or a prefix of one
    region: str | None = None  # where it runs, else where it asked to
    label: str | None = None  # exactly this label
    owner: str | None = None  # a user name
    since: datetime | None = None  # submitted at or after
    until: datetime | None = None  # submitted before
    kind: str | None = None  # batch, train or replica


def page(
    ctx: Context,
    actor: Actor,
    where: JobFilter | None = None,
    limit: int = 1000,
    offset: int = 0,
    cursor: str | None = None,
) -> dict[str, Any]:
    """``{"items", "count", "total", "next_cursor"}``: ``total`` counts every job the filter
    matches (not only those after the cursor); ``next_cursor`` is null on the last page."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput(f"offset must be between 0 and {MAX_OFFSET}")
    where = where or JobFilter()
    agency = actor.subject.agency
    with unit(ctx) as u:
        clauses = _clauses(u, actor, where)
        markings = _readable_markings(u, actor)
        total = u.session.execute(
            select(func.count()).select_from(Job).where(*clauses, Job.label.in_(markings))
        ).scalar_one()
        if cursor is not None:
            clauses.append(Job.seq < _cursor_seq(u, actor, cursor))
        seqs = readable.page_seqs(u.session, Job.seq, Job.label, clauses, markings, offset, limit + 1)
        found = list(
            u.session.execute(select(Job).where(Job.seq.in_(seqs)).order_by(Job.seq.desc())).scalars()
        )
        items = [jobs.view(ctx, job, agency) for job in found[:limit]]
    more = len(found) > limit
    return {
        "items": items,
        "count": len(items),
        "total": total,
        "next_cursor": items[-1]["id"] if more else None,
    }


def _readable_markings(u: Unit, actor: Actor) -> list[str]:
    """Every label the session may read jobs at (see :mod:`.readable`), checked by the gate."""
    session = actor.subject.session
    markings = readable.dominated_markings(u.ctx.scheme, session)
    if markings is None:  # a session holding many compartments: the labels jobs have
        markings = list(
            u.session.execute(
                select(Job.label)
                .distinct()
                .where(Job.agency_id == actor.agency_id, Job.label_rank <= session.rank)
            ).scalars()
        )
    return [m for m in markings if _readable(u, actor, m)]


def _readable(u: Unit, actor: Actor, label: str) -> bool:
    res = Resource(kind="job", label=u.ctx.scheme.parse(label), agency=actor.subject.agency)
    return decide(actor.subject, Action.READ, res).allowed


def _clauses(u: Unit, actor: Actor, f: JobFilter) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = [Job.agency_id == actor.agency_id]
    if f.state is not None:
        out.append(Job.state == str(f.state))
    if f.name:
        out.append(func.lower(Job.name).contains(f.name.lower(), autoescape=True))
    if f.array is not None:
        out.append(Job.array_id == _array_id(u, actor, f.array))
    if f.region:
        out.append(
            or_(Job.region == f.region, and_(Job.region.is_(None), Job.region_request == f.region))
            if f.region != "auto"
            else and_(Job.region.is_(None), Job.region_request.is_(None))
        )
    if f.label is not None:
        out.append(Job.label == u.ctx.scheme.parse(f.label).marking)  # InvalidInput if not a label
    if f.owner is not None:
        out.append(Job.owner_id.in_(select(User.id).where(User.name == f.owner)))
    if f.since is not None:
        out.append(Job.submitted_at >= _utc(f.since))
    if f.until is not None:
        out.append(Job.submitted_at < _utc(f.until))
    if f.kind is not None:
        out.append(Job.kind == f.kind)
    return out


def _array_id(u: Unit, actor: Actor, ref: str) -> str:
    """The readable array ``ref`` (its id or a prefix) names; NotFound or ambiguous otherwise."""
    named = [n for n in jobs.named_by(u, actor, ref) if n.kind == "array"]
    return jobs.pick_one(named, ref, "array").id


def _cursor_seq(u: Unit, actor: Actor, cursor: str) -> int:
    """Where a cursor (the id of a job the session may read) stands; anything else is refused
    with the same words, whether it does not exist, is invisible or is not a job id."""
    row = u.session.execute(
        select(Job.seq, Job.label).where(Job.id == cursor, Job.agency_id == actor.agency_id)
    ).first()
    if row is None or not _readable(u, actor, row.label):
        raise InvalidInput("cursor is not one this listing gave: start again without it")
    return int(row.seq)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
