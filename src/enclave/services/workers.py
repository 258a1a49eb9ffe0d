"""Region workers: their credentials, and the sync through which they take their region's work.

A region run by a worker (``backend = { ..., worker = true }`` in the fleet file) gets its jobs
placed by the control plane's scheduler as any other; the runner's executor for it
(:class:`enclave.executors.dispatch.DispatchExecutor`) leaves each one in the store, and the
region's worker — a separate process inside that region's network, see :mod:`enclave.worker`
— collects them here. The server, not the worker, decides what a worker may see: the region
comes from the credential, every job handed out is checked against the region's
accreditation, and anything asked outside that is refused and audited.

One call, :func:`sync`, carries the worker's reports (started, ended, could not start) and its
engine's health, and answers with new work, jobs to adopt after a restart, and cancellations.

A credential is one worker's: it is issued for a worker name, or bound to the name of its
first sync, and no other live credential of the region may act as that name. A job belongs
to the worker that claimed it: only that worker reports its state, end and output. Another
worker of the region — another credential — takes it over only after the holder's lease ran
out (no sync for :data:`enclave.executors.dispatch.WORKER_TIMEOUT_S`); before that, the job
is invisible to it, and anything it sends about the job is refused and audited.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from enclave.audit.events import AuditEvent, Outcome
from enclave.audit.log import Entry
from enclave.errors import Conflict, Forbidden, InvalidInput, NotAuthenticated, NotFound
from enclave.executors.dispatch import STREAMS, DispatchExecutor, DispatchState, live_since
from enclave.fleet import Region
from enclave.policy import (
    Action,
    Decision,
    Resource,
    worker_decision,
    worker_holds_job,
    worker_may_adopt,
    worker_name_decision,
)
from enclave.services import listing
from enclave.services.context import Context
from enclave.services.listing import Window
from enclave.services.readable import Source
from enclave.services.regions import executor_for
from enclave.services.unit import Actor, Unit, entry_for, unit
from enclave.store.models import Dispatch, RegionWorker, WorkerCredential

SECRET_PREFIX = "encw_"
MAX_CLAIM = 256  # jobs handed to a worker in one sync
HEARTBEAT_S = 2.0  # a worker's check-in is written at most this often when nothing else is


@dataclass(frozen=True)
class WorkerPrincipal:
    """An authenticated region worker: which credential, hence which region and which worker
    name (None until its first sync binds one)."""

    credential_id: str
    region: str
    worker: str | None = None


@dataclass(frozen=True)
class Report:
    job_id: str
    event: str  # started | running (out of the engine's queue) | ended | start_failed
    handle: dict[str, Any] | None = None
    exit_code: int | None = None
    signal: int | None = None
    cpu_s: float | None = None
    energy_j: float | None = None
    lost: bool = False
    error: str | None = None


@dataclass(frozen=True)
class SyncRequest:
    worker: str  # the worker's name: stable across its restarts
    session: str  # new each time the worker process starts
    capacity: int  # how many new jobs it takes now
    health: dict[str, Any] = field(default_factory=dict)
    reports: list[Report] = field(default_factory=list)
    holding: frozenset[str] = frozenset()  # jobs the worker holds (started or being started)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# -- credentials (administrators) -------------------------------------------------------------
def _credential_view(row: WorkerCredential) -> dict[str, Any]:
    return {
        "id": row.id,
        "region": row.region,
        "worker": row.worker,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


def create_credential(
    ctx: Context, actor: Actor, region: str, worker: str | None = None
) -> tuple[dict[str, Any], str]:
    """A new credential for one worker of ``region`` — named ``worker``, or whatever name its
    first sync gives; the secret is returned once, never stored. Region credentials are the
    deployment's: an operator's to make, list and revoke."""
    with unit(ctx) as u:
        u.require(actor, Action.ADMINISTER, Resource(kind="worker-credential"))
        target = ctx.fleet.region(region)  # InvalidInput for an unknown region
        if not target.backend.worker:
            raise InvalidInput(
                f"region {region} is not run by a region worker (its fleet back end has no worker = true)"
            )
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        row = WorkerCredential(
            id=str(uuid.uuid4()),
            region=region,
            worker=worker,
            secret_hash=_digest(secret),
            created_by=actor.subject.user,
            created_at=ctx.now(),
        )
        taken = f"worker {worker} of region {region} already has a live credential; revoke it first"
        if worker is not None and _live_credential_of(u.session, region, worker) is not None:
            raise Conflict(taken)
        u.session.add(row)
        try:
            u.session.flush()
        except IntegrityError as exc:  # the same name bound concurrently
            raise Conflict(taken) from exc
        u.record(
            entry_for(
                actor,
                AuditEvent.WORKER_CREDENTIAL_CREATED,
                Resource(kind="worker-credential"),
                row.id,
                details={"region": region, "worker": worker},
            )
        )
        return _credential_view(row), secret


def list_credentials(ctx: Context, actor: Actor, window: Window = Window()) -> dict[str, Any]:
    """A page of the worker credentials (an operator's list), oldest first; the cursor is an id."""
    sources = [Source(None, [], joined=WorkerCredential.__table__)]
    keys = [WorkerCredential.created_at, WorkerCredential.id]
    with unit(ctx) as u:
        u.require(actor, Action.ADMINISTER, Resource(kind="worker-credential"))
        found = listing.page_unlabelled(u, keys, sources, window)
        rows = u.session.execute(select(WorkerCredential).where(WorkerCredential.id.in_(found.ids))).scalars()
        return found.answer([_credential_view(r) for r in found.ordered(rows.all(), lambda r: r.id)])


def revoke_credential(ctx: Context, actor: Actor, credential_id: str) -> dict[str, Any]:
    with unit(ctx) as u:
        u.require(actor, Action.ADMINISTER, Resource(kind="worker-credential"))
        row = u.session.get(WorkerCredential, credential_id)
        if row is None:
            raise NotFound(f"worker credential {credential_id} not found")
        if row.revoked_at is None:
            row.revoked_at = ctx.now()
            u.record(
                entry_for(
                    actor,
                    AuditEvent.WORKER_CREDENTIAL_REVOKED,
                    Resource(kind="worker-credential"),
                    row.id,
                    details={"region": row.region},
                )
            )
        return _credential_view(row)


def authenticate(ctx: Context, secret: str) -> WorkerPrincipal:
    """Resolve a worker's bearer secret; any problem is the same 401."""
    if not secret.startswith(SECRET_PREFIX) or len(secret) > 128:
        raise NotAuthenticated("invalid or revoked worker credential")
    digest = _digest(secret)
    with ctx.read_sessions() as session:
        row = session.execute(
            select(WorkerCredential).where(WorkerCredential.secret_hash == digest)
        ).scalar_one_or_none()
    if row is None or not hmac.compare_digest(row.secret_hash, digest) or row.revoked_at is not None:
        raise NotAuthenticated("invalid or revoked worker credential")
    return WorkerPrincipal(row.id, row.region, row.worker)


def _live_credential_of(session: Session, region: str, worker: str) -> str | None:
    return session.execute(
        select(WorkerCredential.id).where(
            WorkerCredential.region == region,
            WorkerCredential.worker == worker,
            WorkerCredential.revoked_at.is_(None),
        )
    ).scalar_one_or_none()


# -- the worker's side ---------------------------------------------------------------------
def _refusal(
    principal: WorkerPrincipal,
    asked: str,
    decision: Decision,
    job_id: str | None = None,
    worker: str | None = None,
) -> Entry:
    return entry_for(
        None,
        AuditEvent.WORKER_REFUSED,
        Resource(kind="job" if job_id else "region"),
        job_id or asked,
        outcome=Outcome.DENY,
        details={
            "credential": principal.credential_id,
            "credential_region": principal.region,
            "credential_worker": principal.worker,
            "asked_region": asked,
            "worker": worker,
            "rule": decision.rule,
            "reason": decision.reason,
        },
    )


def _own_region(ctx: Context, principal: WorkerPrincipal, region: str) -> Region:
    """The region a request names, if the credential is for it; otherwise refused, audited."""
    decision = worker_decision(principal.region, region)
    if not decision.allowed:
        with unit(ctx) as u:
            u.record(_refusal(principal, region, decision))
        raise Forbidden(decision.reason)
    return ctx.fleet.region(region)


def _as_worker(ctx: Context, principal: WorkerPrincipal, region: str, worker: str) -> WorkerPrincipal:
    """The credential acting as ``worker``: its own name, or — unbound yet — bound to it now,
    unless another live credential of the region holds that name. Refused and audited else."""
    decision = worker_name_decision(principal.worker, worker)
    if decision.allowed and principal.worker is None:
        decision = _bind(ctx, principal, region, worker)
    if not decision.allowed:
        with unit(ctx) as u:
            u.record(_refusal(principal, region, decision, worker=worker))
        raise Forbidden(decision.reason)
    return WorkerPrincipal(principal.credential_id, principal.region, worker)


def _bind(ctx: Context, principal: WorkerPrincipal, region: str, worker: str) -> Decision:
    """Bind an unbound credential to ``worker`` (audited), unless the name is another live
    credential's — the partial unique index settles two credentials racing for one name."""
    try:
        with unit(ctx) as u:
            holder = _live_credential_of(u.session, region, worker)
            if holder is not None and holder != principal.credential_id:
                return worker_name_decision(None, worker, taken=True)
            bound = u.session.execute(
                update(WorkerCredential)
                .where(WorkerCredential.id == principal.credential_id, WorkerCredential.worker.is_(None))
                .values(worker=worker)
            ).rowcount
            if not bound:  # bound meanwhile by a concurrent sync of this credential
                now_bound = u.session.get(WorkerCredential, principal.credential_id)
                return worker_name_decision(now_bound.worker if now_bound else None, worker)
            u.session.flush()
            u.record(
                entry_for(
                    None,
                    AuditEvent.WORKER_BOUND,
                    Resource(kind="region"),
                    region,
                    details={"worker": worker, "credential": principal.credential_id},
                )
            )
            return worker_name_decision(worker, worker)
    except IntegrityError:
        return worker_name_decision(None, worker, taken=True)


def sync(ctx: Context, principal: WorkerPrincipal, region_name: str, req: SyncRequest) -> dict[str, Any]:
    region = _own_region(ctx, principal, region_name)
    principal = _as_worker(ctx, principal, region.name, req.worker)
    now = ctx.now()
    answer: dict[str, Any] = {"region": region.model_dump(mode="json"), "adopt": [], "acked": []}
    # A worker syncs several times a second; most of those change nothing. They are answered
    # from a read-only transaction, which on SQLite never waits for (nor holds up) a writer.
    if not req.reports:
        with ctx.read_sessions() as session:
            if _quiet(session, region.name, req, now):
                answer.update(_orders(session, region.name, req))
                return answer
    with unit(ctx) as u:
        _check_in(u, principal, region.name, req, now)
        answer["adopt"] = _take_over(u, region.name, req, now)
        answer["acked"] = _apply_reports(u, principal, req, now)
        u.session.flush()
        answer.update(_orders(u.session, region.name, req))
        room = req.capacity - len(answer["start"])
        if room > 0:
            accreditation = ctx.fleet.accreditation(region)
            answer["start"] += _claim(u, principal, region.name, accreditation, req, now, room)
    return answer


def _quiet(session: Session, region: str, req: SyncRequest, now: datetime) -> bool:
    """Nothing for this sync to write: a known worker process whose last check-in is recent
    and whose health is unchanged, no queued work it has room for, nothing to take over."""
    row = session.get(RegionWorker, (region, req.worker))
    if (
        row is None
        or row.session != req.session
        or row.health != req.health
        or (now - row.last_seen_at).total_seconds() >= HEARTBEAT_S
    ):
        return False
    if (
        req.capacity > 0
        and session.execute(
            select(Dispatch.job_id)
            .where(Dispatch.region == region, Dispatch.state == DispatchState.QUEUED)
            .limit(1)
        ).first()
    ):
        return False
    return not _orphans(session, region, req, now)


def _orphans(session: Session, region: str, req: SyncRequest, now: datetime) -> set[str] | None:
    """When jobs of the region are held by this worker's previous process or by a worker gone
    silent (this process's to take over), the workers still alive; else None."""
    holders = set(
        session.execute(
            select(Dispatch.worker)
            .where(
                Dispatch.region == region,
                Dispatch.state.in_([DispatchState.CLAIMED, DispatchState.STARTED]),
                Dispatch.session != req.session,
            )
            .distinct()
        ).scalars()
    )
    if not holders:
        return None  # the common case: every job of the region is held by this process
    alive = set(
        session.execute(
            select(RegionWorker.name).where(
                RegionWorker.region == region, RegionWorker.last_seen_at > live_since(now)
            )
        ).scalars()
    )
    return alive if req.worker in holders or not holders <= alive else None


def _orders(session: Session, region: str, req: SyncRequest) -> dict[str, Any]:
    """What the worker process is to do with jobs it holds: cancel, kill, and start again
    those whose answer it never got (a lost response) — they are its own, not started."""
    cancel: list[dict[str, Any]] = []
    kill: list[str] = []
    start: list[dict[str, Any]] = []
    rows = session.execute(
        select(Dispatch).where(
            Dispatch.region == region,
            Dispatch.worker == req.worker,  # a session id is the worker's word; its name is bound
            Dispatch.session == req.session,
            Dispatch.state.in_([DispatchState.CLAIMED, DispatchState.STARTED]),
        )
    ).scalars()
    for row in rows:
        if row.kill:
            kill.append(row.job_id)
        elif row.cancel_grace_s is not None:
            cancel.append({"job_id": row.job_id, "grace_s": row.cancel_grace_s})
        if row.state == DispatchState.CLAIMED and row.job_id not in req.holding:
            start.append({"job_id": row.job_id, "spec": row.spec})
    return {"cancel": cancel, "kill": kill, "start": start}


def _check_in(u: Unit, principal: WorkerPrincipal, region: str, req: SyncRequest, now: datetime) -> None:
    """Record that the worker is alive (and, audited, that a new worker process connected)."""
    row = u.session.get(RegionWorker, (region, req.worker))
    fresh = row is None or row.session != req.session
    recent = row is not None and (now - row.last_seen_at).total_seconds() < HEARTBEAT_S
    if row is not None and not fresh and recent and row.health == req.health:
        return  # nothing new to write
    if row is None:
        row = RegionWorker(region=region, name=req.worker, connected_at=now)
        u.session.add(row)
    row.session = req.session
    row.credential_id = principal.credential_id
    row.health = req.health
    row.last_seen_at = now
    if fresh:
        row.connected_at = now
        u.record(
            entry_for(
                None,
                AuditEvent.WORKER_CONNECTED,
                Resource(kind="region"),
                region,
                details={"worker": req.worker, "credential": principal.credential_id},
            )
        )


def _take_over(u: Unit, region: str, req: SyncRequest, now: datetime) -> list[dict[str, Any]]:
    """A worker takes what its own previous process, or a worker gone silent, held:
    jobs already running on the engine are adopted; jobs claimed but never started are lost
    (the runner requeues them) — they may not be started twice."""
    u.session.flush()
    alive = _orphans(u.session, region, req, now)
    if alive is None:
        return []
    adopt: list[dict[str, Any]] = []
    taken: dict[str, list[str]] = {}  # from a silent worker: its jobs, by that worker's name
    rows = u.session.execute(
        select(Dispatch)
        .where(
            Dispatch.region == region,
            Dispatch.state.in_([DispatchState.CLAIMED, DispatchState.STARTED]),
            Dispatch.session != req.session,
        )
        .with_for_update(skip_locked=True)
    ).scalars()
    for row in rows:
        if not worker_may_adopt(row.worker, req.worker, row.worker in alive).allowed:
            continue  # another worker of the region holds it and is alive
        if row.worker != req.worker:
            taken.setdefault(row.worker or "", []).append(row.job_id)
        if row.handle is None:
            row.state, row.lost, row.ended_at = DispatchState.ENDED, True, now
            row.detail = "lost: the region worker stopped before starting the job"
            continue
        row.worker, row.session = req.worker, req.session
        adopt.append({"job_id": row.job_id, "spec": row.spec, "handle": row.handle})
    for silent, jobs in sorted(taken.items()):
        u.record(
            entry_for(
                None,
                AuditEvent.WORKER_CLAIMED,
                Resource(kind="region"),
                region,
                details={"worker": req.worker, "jobs": jobs, "taken_over_from": silent},
            )
        )
    return adopt


def _apply_reports(u: Unit, principal: WorkerPrincipal, req: SyncRequest, now: datetime) -> list[str]:
    acked: list[str] = []
    ids = sorted({rep.job_id for rep in req.reports})  # one lock order whoever reports
    rows = {
        row.job_id: row
        for row in u.session.execute(
            select(Dispatch).where(Dispatch.job_id.in_(ids)).with_for_update()
        ).scalars()
    }
    for rep in req.reports:
        row = rows.get(rep.job_id)
        acked.append(rep.job_id)
        if row is None:
            continue  # already collected: a report repeated after a lost answer
        decision = worker_decision(principal.region, row.region)
        if decision.allowed:
            decision = worker_holds_job(row.worker, req.worker)
        if not decision.allowed:
            # Answered exactly as for a job that does not exist; the attempt is on record.
            u.record(_refusal(principal, row.region, decision, rep.job_id, req.worker))
            continue
        if rep.event == "started":
            if row.state == DispatchState.CLAIMED and row.session == req.session:
                row.state, row.handle = DispatchState.STARTED, rep.handle
        elif rep.event == "running":
            if row.state == DispatchState.STARTED and row.running_at is None:
                row.running_at = now
        elif row.state == DispatchState.ENDED:
            continue
        elif rep.event == "ended":
            row.state, row.ended_at = DispatchState.ENDED, now
            row.exit_code, row.signal = rep.exit_code, rep.signal
            row.cpu_s, row.energy_j, row.lost = rep.cpu_s, rep.energy_j, rep.lost
            if rep.lost:
                row.detail = "lost: the region's engine no longer knows this job"
        elif rep.event == "start_failed":
            row.state, row.ended_at, row.lost = DispatchState.ENDED, now, True
            row.detail = f"lost: the region worker could not start it: {rep.error or 'no reason given'}"
    return acked


def _claim(
    u: Unit,
    principal: WorkerPrincipal,
    region: str,
    accreditation: Any,
    req: SyncRequest,
    now: datetime,
    limit: int,
) -> list[dict[str, Any]]:
    rows = u.session.execute(
        select(Dispatch)
        .where(Dispatch.region == region, Dispatch.state == DispatchState.QUEUED)
        .order_by(Dispatch.dispatched_at)
        .limit(min(limit, MAX_CLAIM))
        .with_for_update(skip_locked=True)
    ).scalars()
    start: list[dict[str, Any]] = []
    for row in rows:
        label = u.ctx.scheme.parse(row.label) if row.label else None
        decision = worker_decision(principal.region, row.region, accreditation, label)
        if label is None or not decision.allowed:
            # Never happens through the scheduler (it places by accreditation); a defence in
            # depth against a store changed behind its back.
            u.record(_refusal(principal, row.region, decision, row.job_id))
            row.state, row.lost, row.ended_at = DispatchState.ENDED, True, now
            row.detail = "lost: refused to hand it to the region worker: " + decision.reason
            continue
        row.state, row.worker, row.session, row.claimed_at = (
            DispatchState.CLAIMED,
            req.worker,
            req.session,
            now,
        )
        start.append({"job_id": row.job_id, "spec": row.spec})
    if start:
        u.record(
            entry_for(
                None,
                AuditEvent.WORKER_CLAIMED,
                Resource(kind="region"),
                region,
                details={"worker": req.worker, "jobs": [s["job_id"] for s in start]},
            )
        )
    return start


def append_log(
    ctx: Context,
    principal: WorkerPrincipal,
    region_name: str,
    job_id: str,
    stream: str,
    offset: int,
    data: bytes,
) -> int:
    """Append a running job's output from ``offset`` on; returns the bytes now held. Repeats
    after a lost answer are harmless: what is already held is not written twice."""
    region = _own_region(ctx, principal, region_name)
    if stream not in STREAMS:
        raise InvalidInput(f"stream must be one of {', '.join(STREAMS)}")
    if offset < 0:
        raise InvalidInput("offset must not be negative")
    with ctx.read_sessions() as session:
        row = session.get(Dispatch, job_id)
        found, holder = (row.region, row.worker) if row is not None else (None, None)
    if found is None:
        raise NotFound(f"job {job_id} not found")
    decision = worker_decision(principal.region, found)
    if decision.allowed:
        decision = worker_holds_job(holder, principal.worker)
    if not decision.allowed:
        with unit(ctx) as u:
            u.record(_refusal(principal, found, decision, job_id, principal.worker))
        raise NotFound(f"job {job_id} not found")
    path = _log_path(ctx, region, job_id, stream)
    size = path.stat().st_size if path.exists() else 0
    if offset > size:
        raise Conflict(f"offset {offset} is past the {size} bytes held")
    tail = data[size - offset :]
    if tail:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as fh:
            fh.write(tail)
    return size + len(tail)


def _log_path(ctx: Context, region: Region, job_id: str, stream: str) -> Path:
    executor = executor_for(ctx, region)
    assert isinstance(executor, DispatchExecutor)
    return executor.log_paths({"dispatch": job_id})[stream]
