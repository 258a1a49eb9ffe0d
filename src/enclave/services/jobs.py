"""Labelled batch jobs: submission, listing, cancellation, logs, and the state machine.

States: ``pending → admitted → running → completed | failed | cancelled | timeout``, and
``running → preempted → pending`` (requeued). Every transition goes through
:func:`transition`, which checks it is allowed and audits it in the same transaction.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import SimpleNamespace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from enclave.audit.events import AuditEvent
from enclave.errors import Conflict, InvalidInput, NotFound, RateLimited
from enclave.labels import Label
from enclave.policy import Action, Resource, decide, may_place
from enclave.scheduler.model import QOS
from enclave.services.context import Context
from enclave.services.tenancy import project_id_of
from enclave.services.unit import Actor, Unit, entry_for, unit
from enclave.store.db import bulk_insert
from enclave.store.models import Agency, Job, User

MAX_ARGS = 256
MAX_ARG_CHARS = 4096
MAX_ENV = 64
MAX_WALLTIME_S = 30 * 24 * 3600
MAX_ARRAY = 10_000
MAX_BATCH = 10_000
PENDING_RETRY_S = 30  # Retry-After when the pending-jobs cap refuses a submission
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class JobState(StrEnum):
    PENDING = "pending"
    ADMITTED = "admitted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    PREEMPTED = "preempted"


TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT})
ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.ADMITTED, JobState.CANCELLED, JobState.FAILED}),
    JobState.ADMITTED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.PENDING, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMEOUT,
            JobState.PREEMPTED,
            JobState.PENDING,
        }
    ),
    JobState.PREEMPTED: frozenset({JobState.PENDING}),
}


class DependencyType(StrEnum):
    AFTEROK = "afterok"  # start after the job completed successfully
    AFTERANY = "afterany"  # start after the job ended, however


@dataclass(frozen=True)
class JobSpec:
    """A validated submission (API schemas build it; the CLI and SDK send the same JSON)."""

    name: str
    command: list[str]
    label: str | None = None  # default: the session label
    walltime_s: int = 3600
    nodes: int = 1
    cpus_per_node: int = 1
    memory_mb: int = 1024
    gpus_per_node: int = 0
    region: str | None = None  # None or "auto": any accredited region
    qos: QOS = QOS.NORMAL
    env: dict[str, str] = field(default_factory=dict)
    depends_on: list[tuple[DependencyType, str]] = field(default_factory=list)
    array: int | None = None
    idempotency_key: str | None = None
    project: str | None = None
    kind: str = "batch"  # set by services only: train (services.training), replica (endpoints)
    parent_id: str | None = None  # the endpoint a replica serves


def label_key(marking: str) -> str:
    """A directory-safe digest of a label (sandboxes are grouped by label, names not shown)."""
    return hashlib.sha256(marking.encode()).hexdigest()[:24]


def resource_of(ctx: Context, job: Job, agency: str) -> Resource:
    return Resource(kind="job", label=ctx.scheme.parse(job.label), agency=agency)


def _accreditations(ctx: Context) -> dict[str, Label]:
    """Each region's accreditation, parsed once per submission (``Fleet.accreditation``
    rebuilds the label scheme on every call: ~0.1 ms, paid per job and region)."""
    return {r.name: ctx.scheme.parse(r.accreditation) for r in ctx.fleet.regions}


def _validate(ctx: Context, spec: JobSpec, label: Label, accreditation: dict[str, Label]) -> None:
    if not spec.command or len(spec.command) > MAX_ARGS:
        raise InvalidInput(f"command must have 1-{MAX_ARGS} arguments")
    if any((not isinstance(a, str)) or len(a) > MAX_ARG_CHARS or "\x00" in a for a in spec.command):
        raise InvalidInput(f"command arguments must be strings of at most {MAX_ARG_CHARS} characters")
    if not spec.command[0]:
        raise InvalidInput("command[0] must name a program")
    if not spec.name.strip() or len(spec.name) > 256:
        raise InvalidInput("name must be 1-256 characters")
    if not 1 <= spec.walltime_s <= MAX_WALLTIME_S:
        raise InvalidInput(f"walltime_s must be between 1 and {MAX_WALLTIME_S}")
    for what, value, low in (
        ("nodes", spec.nodes, 1),
        ("cpus_per_node", spec.cpus_per_node, 1),
        ("memory_mb", spec.memory_mb, 1),
        ("gpus_per_node", spec.gpus_per_node, 0),
    ):
        if value < low:
            raise InvalidInput(f"{what} must be at least {low}")
    if len(spec.env) > MAX_ENV or any(
        not _ENV_KEY.match(k) or len(v) > MAX_ARG_CHARS or "\x00" in v for k, v in spec.env.items()
    ):
        raise InvalidInput(
            f"env: at most {MAX_ENV} variables with names like NAME_1 and values up to {MAX_ARG_CHARS} "
            "chars, none holding a NUL character"
        )
    if spec.array is not None and not 1 <= spec.array <= MAX_ARRAY:
        raise InvalidInput(f"array must be between 1 and {MAX_ARRAY}")
    regions = ctx.fleet.regions
    if spec.region not in (None, "auto"):
        region = ctx.fleet.region(spec.region)  # InvalidInput: unknown region
        if not may_place(label, accreditation[region.name]):
            raise InvalidInput(f"region {region.name} is not accredited for {label}")
        regions = [region]
    accredited = [r for r in regions if may_place(label, accreditation[r.name])]
    if not accredited:
        raise InvalidInput(f"no region is accredited for {label}")
    fits = any(
        p.count >= spec.nodes
        and p.cpus >= spec.cpus_per_node
        and p.memory_mb >= spec.memory_mb
        and p.gpus >= spec.gpus_per_node
        for r in accredited
        for p in r.pools
    )
    if not fits:
        raise InvalidInput("no node pool of an accredited region can hold these resources")


def submit(ctx: Context, actor: Actor, specs: Iterable[JobSpec]) -> list[dict[str, Any]]:
    """Submit one or more jobs in one transaction; an idempotency key returns the job it made
    before for the same owner, agency and label (at another label it makes a new job)."""
    specs = list(specs)
    if not 1 <= len(specs) <= MAX_BATCH:
        raise InvalidInput(f"submit 1-{MAX_BATCH} jobs at a time")
    try:
        return _submit(ctx, actor, specs)
    except IntegrityError:
        # Two requests with one idempotency key raced; the loser's insert hit the unique
        # constraint. Running again finds the winner's job and returns it.
        if not any(spec.idempotency_key for spec in specs):
            raise
        return _submit(ctx, actor, specs)


def _submit(ctx: Context, actor: Actor, specs: list[JobSpec]) -> list[dict[str, Any]]:
    with unit(ctx) as u:
        out = add(u, actor, specs)
        labels = {spec.label and ctx.scheme.parse(spec.label).marking for spec in specs}
        _cap_pending(u, actor, {m or actor.subject.session.marking for m in labels})
    ctx.notify_jobs()
    return out


WAITING = (JobState.PENDING, JobState.ADMITTED, JobState.PREEMPTED)  # submitted, not started


def _cap_pending(u: Unit, actor: Actor, markings: set[str]) -> None:
    """Refuse (429, the whole submission rolled back) when the agency would hold more than
    ``max_pending_jobs`` jobs waiting to start at one label: every job of a batch or array
    counts. Counted per label, not across labels, so that the answer a session gets never
    depends on jobs at labels it may not read. Jobs asked to cancel do not count. Counted
    after the insert, in the same transaction: an idempotent re-send adds nothing.
    (Concurrent submissions on PostgreSQL may overshoot by what they insert at once; the
    next ones are refused.)"""
    cap = u.ctx.settings.max_pending_jobs
    for marking in sorted(markings):
        waiting = u.session.execute(
            select(func.count())
            .select_from(Job)
            .where(
                Job.agency_id == actor.agency_id,
                Job.label == marking,
                Job.state.in_(WAITING),
                Job.cancel_requested.is_(False),  # on its way out: the live loop ends it
            )
        ).scalar_one()
        if waiting > cap:
            raise RateLimited(
                f"too many pending jobs: agency {actor.subject.agency} may have at most {cap} jobs "
                f"waiting to start at {marking}; wait for some to start or cancel some",
                retry_after_s=PENDING_RETRY_S,
            )


def add(u: Unit, actor: Actor, specs: list[JobSpec]) -> list[dict[str, Any]]:
    """Validate, insert and audit jobs inside the caller's transaction (a training job
    commits with its training record). The caller wakes the live loop after the commit."""
    ctx = u.ctx
    now = ctx.now()
    out: list[dict[str, Any]] = []
    accreditation = _accreditations(ctx)
    rows: list[dict[str, Any]] = []  # inserted together, in submission order
    audited: list[tuple[Resource, dict[str, Any]]] = []
    by_key: dict[str, dict[str, Any]] = {}  # idempotency keys seen earlier in this batch
    for spec in specs:
        label = ctx.scheme.parse(spec.label) if spec.label else actor.subject.session
        res = Resource(kind="job", label=label, agency=actor.subject.agency)
        u.require(actor, Action.CREATE, res)
        if spec.qos is QOS.URGENT:
            u.require(actor, Action.USE_URGENT_QOS, Resource(kind="qos"))
        _validate(ctx, spec, label, accreditation)
        if spec.idempotency_key:
            if spec.idempotency_key in by_key:
                out.append(by_key[spec.idempotency_key])
                continue
            # Scoped by owner, agency and label: a key first used at another label names
            # nothing here (it must not hand a SECRET job to an UNCLASSIFIED session).
            existing = u.session.execute(
                select(Job).where(
                    Job.owner_id == actor.user_id,
                    Job.agency_id == actor.agency_id,
                    Job.label == label.marking,
                    Job.idempotency_key == spec.idempotency_key,
                )
            ).scalar_one_or_none()
            if existing is not None:
                out.append(view(ctx, existing, actor.subject.agency))
                continue
        deps = [(kind, visible_job(u, actor, dep, prefix=True).id) for kind, dep in spec.depends_on]
        project_id = project_id_of(u.session, actor.agency_id, actor.subject.agency, spec.project)
        count = spec.array or 1
        array_id = str(uuid.uuid4()) if spec.array else None
        made = []
        for index in range(count):
            env = dict(spec.env)
            if array_id is not None:
                env["ENCLAVE_ARRAY_INDEX"] = str(index)
            row = {
                **_UNSET,
                "id": str(uuid.uuid4()),
                "kind": spec.kind,
                "parent_id": spec.parent_id,
                "name": spec.name if array_id is None else f"{spec.name}[{index}]",
                "label": label.marking,
                "label_rank": label.rank,
                "agency_id": actor.agency_id,
                "project_id": project_id,
                "owner_id": actor.user_id,
                "command": list(spec.command),
                "env": env,
                "nodes": spec.nodes,
                "cpus_per_node": spec.cpus_per_node,
                "memory_mb": spec.memory_mb,
                "gpus_per_node": spec.gpus_per_node,
                "walltime_s": spec.walltime_s,
                "qos": str(spec.qos),
                "region_request": None if spec.region in (None, "auto") else spec.region,
                "depends_on": [{"type": str(k), "job": j} for k, j in deps],
                "array_id": array_id,
                "array_index": index if array_id else None,
                "idempotency_key": spec.idempotency_key if index == 0 else None,
                "state": JobState.PENDING,
                "reason": "awaiting admission",
                "attempts": 0,
                "cancel_requested": False,
                "submitted_at": now,
                "log_artifacts": {},
            }
            made.append(row)
            audited.append((res, row))
        rows.extend(made)
        first = view(ctx, SimpleNamespace(**made[0]), actor.subject.agency)  # type: ignore[arg-type]
        if array_id is not None:
            first["array_jobs"] = [r["id"] for r in made]
        if spec.idempotency_key:
            by_key[spec.idempotency_key] = first
        out.append(first)
    # One multi-row insert for the batch (plain rows, no ORM objects: at thousands of jobs a
    # request those cost more than the database does); the audit records go in one more.
    if rows:
        bulk_insert(u.session, Job.__table__, rows)
    for res, row in audited:
        u.record(
            entry_for(
                actor,
                AuditEvent.JOB_SUBMITTED,
                res,
                row["id"],
                details={
                    "name": row["name"],
                    "command": row["command"][0],
                    "nodes": row["nodes"],
                    "qos": row["qos"],
                    "kind": row["kind"],
                },
            )
        )
    return out


# Columns a new job starts without (set as it runs), for the rows inserted by ``add``.
_UNSET: dict[str, Any] = dict.fromkeys(
    (
        "region",
        "placement",
        "handle",
        "exit_code",
        "started_at",
        "ended_at",
        "cpu_s",
        "energy_kwh",
        "energy_source",
        "kgco2e",
        "cost",
    )
)


def visible_job(
    u: Unit, actor: Actor, job_id: str, action: Action = Action.READ, *, prefix: bool = False
) -> Job:
    """The job ``job_id`` names; with ``prefix``, a short prefix of the id of a job the session
    may read is taken too (callers that store the id they were given leave it off)."""
    if prefix and len(job_id) < ID_LEN:
        job_id = one_named(u, actor, job_id, arrays=False).id
    row = u.session.execute(
        select(Job, Agency.name).join(Agency, Job.agency_id == Agency.id).where(Job.id == job_id)
    ).first()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    job, agency = row
    u.require(actor, action, resource_of(u.ctx, job, agency), job_id)
    return job


ID_LEN = 36  # a full id (a UUID); anything shorter is read as a prefix
_PREFIX = re.compile(r"[0-9a-f-]{4,36}")  # no LIKE wildcard can get through
MAX_CANDIDATES_SHOWN = 10


@dataclass(frozen=True, order=True)
class Named:
    """A job or an array (``kind``) whose id starts with a prefix the session gave."""

    kind: str  # "job" or "array"
    id: str
    name: str


def named_by(u: Unit, actor: Actor, prefix: str, *, arrays: bool = True) -> list[Named]:
    """The jobs (and arrays) whose id starts with ``prefix``, among those the session may read.

    Only readable objects are kept — the session's own agency, labels it dominates
    (compartments checked by the policy gate) — so a job above the session or of another
    agency never turns a prefix ambiguous, and never shows in the candidates. The rows are
    found by the id's prefix index alone (migration 0007), so the time taken does not grow
    with the jobs the session cannot read, only with those sharing the prefix (random ids:
    a handful). A prefix that is not one (under 4 characters, or not ``[0-9a-f-]``) names
    nothing."""
    ref = prefix.lower()
    if not _PREFIX.fullmatch(ref):
        return []
    pattern = ref + "%"  # ``ref`` holds no LIKE wildcard
    rows = [
        ("job", *row)
        for row in u.session.execute(
            select(Job.id, Job.name, Job.label, Job.agency_id, Job.label_rank).where(Job.id.like(pattern))
        )
    ]
    if arrays:
        columns = (Job.array_id, Job.label, Job.agency_id, Job.label_rank)
        rows += [
            ("array", array_id, name.rsplit("[", 1)[0], label, agency_id, rank)
            for array_id, name, label, agency_id, rank in u.session.execute(
                select(Job.array_id, func.min(Job.name), *columns[1:])
                .where(Job.array_id.like(pattern))
                .group_by(*columns)
            )
        ]
    readable: dict[str, bool] = {}
    found = set()
    for kind, id_, name, label, agency_id, rank in rows:
        if agency_id != actor.agency_id or rank > actor.subject.session.rank or id_ is None:
            continue
        if label not in readable:
            res = Resource(kind="job", label=u.ctx.scheme.parse(label), agency=actor.subject.agency)
            readable[label] = decide(actor.subject, Action.READ, res).allowed
        if readable[label]:
            found.add(Named(kind, id_, name))
    return sorted(found)


def one_named(u: Unit, actor: Actor, prefix: str, *, arrays: bool = True) -> Named:
    """The one job (or array) ``prefix`` names, among those the session may read."""
    return pick_one(named_by(u, actor, prefix, arrays=arrays), prefix)


def pick_one(found: list[Named], prefix: str, what: str = "job") -> Named:
    """NotFound for none; for several, InvalidInput listing them (all readable by the session)."""
    if not found:
        raise NotFound(f"{what} {prefix} not found")
    if len(found) > 1:
        shown = ", ".join(f"{n.kind} {n.id} ({n.name})" for n in found[:MAX_CANDIDATES_SHOWN])
        more = f" and {len(found) - MAX_CANDIDATES_SHOWN} more" if len(found) > MAX_CANDIDATES_SHOWN else ""
        raise InvalidInput(f"id prefix {prefix} is ambiguous: it matches {shown}{more}; give more characters")
    return found[0]


def view(ctx: Context, job: Job, agency: str, owner: str | None = None) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "name": job.name,
        "label": job.label,
        "agency": agency,
        "owner": owner,
        "state": job.state,
        "reason": job.reason,
        "command": job.command,
        "env": job.env,
        "resources": {
            "nodes": job.nodes,
            "cpus_per_node": job.cpus_per_node,
            "memory_mb": job.memory_mb,
            "gpus_per_node": job.gpus_per_node,
        },
        "walltime_s": job.walltime_s,
        "qos": job.qos,
        "region": job.region or job.region_request or "auto",
        "region_request": job.region_request or "auto",
        "placement": job.placement,
        "depends_on": job.depends_on,
        "array_id": job.array_id,
        "array_index": job.array_index,
        "idempotency_key": job.idempotency_key,
        "exit_code": job.exit_code,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "submitted_at": job.submitted_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
        "cpu_s": job.cpu_s,
        "energy": {
            "kwh": job.energy_kwh,
            "kgco2e": job.kgco2e,
            "cost": job.cost,
            "source": job.energy_source,
        },
        "logs": job.log_artifacts,
    }


def full_id(ctx: Context, actor: Actor, job_id: str) -> str:
    """The full id of the job ``job_id`` (an id or a prefix) names, for services that take only
    full ids; a full id is returned as given (its service checks it)."""
    if len(job_id) >= ID_LEN:
        return job_id
    with unit(ctx) as u:
        return one_named(u, actor, job_id, arrays=False).id


def show(ctx: Context, actor: Actor, job_id: str) -> dict[str, Any]:
    with unit(ctx) as u:
        job = visible_job(u, actor, job_id)
        owner = u.session.get_one(User, job.owner_id).name
        return view(ctx, job, _agency_name(u.session, job.agency_id), owner)


def _agency_name(session: Session, agency_id: int) -> str:
    return session.execute(select(Agency.name).where(Agency.id == agency_id)).scalar_one()


def list_visible(
    ctx: Context, actor: Actor, state: JobState | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs the session may read (one page of :mod:`.joblist`)."""
    from enclave.services import joblist  # builds on this module

    where = joblist.JobFilter(state=state)
    return list(joblist.page(ctx, actor, where, min(limit, joblist.MAX_LIMIT))["items"])


def cancel(ctx: Context, actor: Actor, job_id: str) -> dict[str, Any]:
    """Ask for cancellation; the live loop stops a running job (grace signal, then kill)."""
    with unit(ctx) as u:
        result = cancel_job(u, actor, visible_job(u, actor, job_id, Action.WRITE, prefix=True))
    ctx.notify_jobs()
    return result


def cancel_job(u: Unit, actor: Actor, job: Job) -> dict[str, Any]:
    """Mark a job the session may write for cancellation, audited, in the caller's unit."""
    if JobState(job.state) in TERMINAL:
        raise Conflict(f"job is already {job.state}")
    job.cancel_requested = True
    res = resource_of(u.ctx, job, actor.subject.agency)
    u.record(entry_for(actor, AuditEvent.JOB_CANCEL_REQUESTED, res, job.id))
    return view(u.ctx, job, actor.subject.agency)


def transition(u: Unit, job: Job, to: JobState, reason: str | None, now: datetime, **fields: Any) -> None:
    """The one way a job changes state: checked against ALLOWED and audited."""
    current = JobState(job.state)
    if to not in ALLOWED.get(current, frozenset()):
        raise Conflict(f"job {job.id} cannot go from {current} to {to}")
    job.state = str(to)
    job.reason = reason
    for key, value in fields.items():
        setattr(job, key, value)
    if to is JobState.RUNNING:
        job.started_at = now
    if to in TERMINAL:
        job.ended_at = now
    label = u.ctx.scheme.parse(job.label)
    u.record(
        entry_for(
            None,
            AuditEvent.JOB_TRANSITION,
            Resource(kind="job", label=label),
            job.id,
            details={"from": str(current), "to": str(to), "reason": reason},
        ),
        now,
    )
