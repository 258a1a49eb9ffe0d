"""Job arrays as first-class objects, and the one place a job reference is resolved.

``submit --array N`` makes N tasks sharing an ``array_id`` (and one label, agency and owner).
Wherever a job id is accepted by :func:`show` and :func:`cancel`, an array id is too, and
either may be shortened to a prefix (:func:`enclave.services.jobs.named_by`). An array's
view sums its tasks; cancelling it asks every task still running or waiting to stop, in one
transaction, audited per task as single cancels are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, or_, select, update

from enclave.audit.events import AuditEvent
from enclave.errors import Conflict, NotFound
from enclave.policy import Action
from enclave.services import jobs
from enclave.services.context import Context
from enclave.services.jobs import TERMINAL, JobState, resource_of
from enclave.services.unit import Actor, Unit, entry_for, unit
from enclave.store.models import Agency, Job, User

# An array's state: the first of these any task is in (live ones first, then the worst end).
_STATE_ORDER = (
    JobState.RUNNING,
    JobState.ADMITTED,
    JobState.PREEMPTED,
    JobState.PENDING,
    JobState.FAILED,
    JobState.TIMEOUT,
    JobState.CANCELLED,
    JobState.COMPLETED,
)


@dataclass(frozen=True)
class JobArray:
    id: str
    first: Job  # its first task: label, agency, owner and spec are the same for all
    agency: str


def resolve(u: Unit, actor: Actor, ref: str, action: Action = Action.READ) -> Job | JobArray:
    """The job or array ``ref`` names: a full id of either (one indexed query, so a miss costs
    what a hit does), or a prefix (among readable objects only). Invisible ⇒ NotFound."""
    if len(ref) < jobs.ID_LEN:
        named = jobs.one_named(u, actor, ref)
        if named.kind == "job":
            return jobs.visible_job(u, actor, named.id, action)
        ref = named.id
    row = u.session.execute(
        select(Job, Agency.name)
        .join(Agency, Job.agency_id == Agency.id)
        .where(or_(Job.id == ref, Job.array_id == ref))
        .order_by(Job.seq)
        .limit(1)
    ).first()
    if row is None:
        raise NotFound(f"job {ref} not found")
    job, agency = row
    u.require(actor, action, resource_of(u.ctx, job, agency), ref)
    return job if job.id == ref else JobArray(ref, job, agency)


def show(ctx: Context, actor: Actor, ref: str) -> dict[str, Any]:
    """A job's view, or an array's (``"kind": "array"``, with per-state task counts)."""
    with unit(ctx) as u:
        target = resolve(u, actor, ref)
        first = target.first if isinstance(target, JobArray) else target
        owner = u.session.get_one(User, first.owner_id).name
        if isinstance(target, JobArray):
            return view(u, target, owner)
        return jobs.view(ctx, target, u.session.get_one(Agency, target.agency_id).name, owner)


def cancel(ctx: Context, actor: Actor, ref: str) -> dict[str, Any]:
    """Cancel a job, or every task of an array that has not ended (``cancelled``: how many)."""
    with unit(ctx) as u:
        target = resolve(u, actor, ref, Action.WRITE)
        if isinstance(target, JobArray):
            result = cancel_array(u, actor, target)
        else:
            result = jobs.cancel_job(u, actor, target)
    ctx.notify_jobs()
    return result


def cancel_array(u: Unit, actor: Actor, array: JobArray) -> dict[str, Any]:
    ids = list(
        u.session.execute(
            update(Job)
            .where(
                Job.array_id == array.id,
                Job.state.not_in([str(s) for s in TERMINAL]),
                Job.cancel_requested.is_(False),
            )
            .values(cancel_requested=True)
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        ).scalars()
    )
    result = view(u, array, None)
    if not ids and result["state"] in TERMINAL:
        raise Conflict(f"array is already {result['state']}")
    res = resource_of(u.ctx, array.first, array.agency)
    for job_id in ids:
        u.record(entry_for(actor, AuditEvent.JOB_CANCEL_REQUESTED, res, job_id))
    return {**result, "cancelled": len(ids)}


def view(u: Unit, array: JobArray, owner: str | None) -> dict[str, Any]:
    """The array as one object: the first task's spec, its tasks counted per state, energy summed."""
    rows = u.session.execute(
        select(
            Job.state,
            func.count(),
            func.sum(Job.energy_kwh),
            func.sum(Job.kgco2e),
            func.sum(Job.cost),
            func.max(Job.ended_at),
            func.sum(case((Job.cancel_requested, 1), else_=0)),
        )
        .where(Job.array_id == array.id)
        .group_by(Job.state)
    ).all()
    states = {str(r[0]): int(r[1]) for r in rows}
    state = next(s for s in _STATE_ORDER if s in states)
    ended = state in TERMINAL
    asked = sum(int(r[6] or 0) for r in rows)
    kwh, kgco2e, cost = (_sum(r[i] for r in rows) for i in (2, 3, 4))
    ended_at = max((r[5] for r in rows if r[5] is not None), default=None) if ended else None
    base = jobs.view(u.ctx, array.first, array.agency, owner)
    return {
        **base,
        "id": array.id,
        "kind": "array",
        "name": array.first.name.rsplit("[", 1)[0],
        "state": str(state),
        "reason": ", ".join(f"{n} {s}" for s, n in sorted(states.items())),
        "tasks": sum(states.values()),
        "states": states,
        "array_index": None,
        "env": {k: v for k, v in base["env"].items() if k != "ENCLAVE_ARRAY_INDEX"},
        "idempotency_key": array.first.idempotency_key,
        "exit_code": 0 if state is JobState.COMPLETED else None,
        "attempts": None,
        "cancel_requested": bool(asked)
        and not any(  # every task still to end was asked to
            int(r[1]) > int(r[6] or 0) for r in rows if JobState(r[0]) not in TERMINAL
        ),
        "started_at": None,
        "ended_at": ended_at.isoformat() if ended_at else None,
        "cpu_s": None,
        "energy": {"kwh": kwh, "kgco2e": kgco2e, "cost": cost, "source": "sum of tasks" if kwh else None},
        "placement": None,
        "logs": {},
    }


def _sum(values: Any) -> float | None:
    present = [v for v in values if v is not None]
    return float(sum(present)) if present else None
