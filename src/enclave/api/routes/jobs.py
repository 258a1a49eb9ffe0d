from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from enclave.api.deps import ActorDep, CtxDep
from enclave.api.schemas import JobBatchIn, JobIn
from enclave.scheduler.model import QOS
from enclave.services import jobarrays, joblist, joblogs, jobs
from enclave.services.joblist import JobFilter
from enclave.services.jobs import DependencyType, JobSpec, JobState

router = APIRouter(tags=["jobs"])


def to_spec(body: JobIn) -> JobSpec:
    r = body.resources
    return JobSpec(
        name=body.name,
        command=body.command,
        label=body.label,
        walltime_s=body.walltime_s,
        nodes=r.nodes,
        cpus_per_node=r.cpus_per_node,
        memory_mb=r.memory_mb,
        gpus_per_node=r.gpus_per_node,
        region=body.region,
        qos=QOS(body.qos),
        env=dict(body.env),
        depends_on=[(DependencyType(d.type), d.job) for d in body.depends_on],
        array=body.array,
        idempotency_key=body.idempotency_key,
        project=body.project,
    )


@router.post("/jobs", status_code=201)
def submit(body: JobIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return jobs.submit(ctx, actor, [to_spec(body)])[0]


@router.post("/jobs/batch", status_code=201)
def submit_batch(body: JobBatchIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """Submit many jobs in one transaction (all or none)."""
    items = jobs.submit(ctx, actor, [to_spec(j) for j in body.jobs])
    return {"jobs": items, "count": len(items)}


@router.get("/jobs")
def list_(
    ctx: CtxDep,
    actor: ActorDep,
    state: Annotated[JobState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=joblist.MAX_LIMIT)] = 1000,
    offset: Annotated[int, Query(ge=0, le=joblist.MAX_OFFSET, description="Jobs to skip (a page)")] = 0,
    cursor: Annotated[
        str | None, Query(max_length=64, description="`next_cursor` of the previous page: the jobs after it")
    ] = None,
    name: Annotated[str | None, Query(max_length=256, description="Part of the name, any case")] = None,
    array: Annotated[str | None, Query(max_length=64, description="An array id, or a prefix of one")] = None,
    region: Annotated[str | None, Query(max_length=64, description="Where it runs, else asked to")] = None,
    label: Annotated[str | None, Query(max_length=256, description="Exactly this label")] = None,
    owner: Annotated[str | None, Query(max_length=64, description="The submitting user's name")] = None,
    since: Annotated[datetime | None, Query(description="Submitted at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="Submitted before (ISO 8601)")] = None,
    kind: Annotated[Literal["batch", "train", "replica"] | None, Query()] = None,
) -> dict[str, Any]:
    """Jobs the session may read, newest first, a page at a time.

    The answer is ``{"items", "count", "total", "next_cursor"}``: ``count`` jobs on this page,
    ``total`` matching the filters in all (never counting a job the session cannot read),
    ``next_cursor`` to pass as ``cursor`` for the next page (null on the last)."""
    where = JobFilter(state, name, array, region, label, owner, since, until, kind)
    return joblist.page(ctx, actor, where, limit, offset, cursor)


@router.get("/jobs/{job_id}")
def show(job_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """A job, or a job array (``"kind": "array"``, its tasks counted per state in ``states``).
    ``job_id`` may be a prefix (4 characters or more) of a job's or an array's id; a prefix
    that names several answers 422, listing them."""
    return jobarrays.show(ctx, actor, job_id)


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """Cancel a job, or every task of an array that has not ended (``cancelled``: how many).
    ``job_id`` may be a prefix, as for ``GET /jobs/{job_id}``."""
    return jobarrays.cancel(ctx, actor, job_id)


@router.get("/jobs/{job_id}/logs", response_class=PlainTextResponse)
def logs(
    job_id: str,
    ctx: CtxDep,
    actor: ActorDep,
    stream: Annotated[Literal["stdout", "stderr"], Query()] = "stdout",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> PlainTextResponse:
    """The job's output from ``offset`` (bytes): live while it runs, from the log artifact after.
    ``job_id`` may be a prefix of a job's id."""
    text, next_offset = joblogs.read(ctx, actor, jobs.full_id(ctx, actor, job_id), stream, offset)
    return PlainTextResponse(text, headers={"X-Next-Offset": str(next_offset)})
