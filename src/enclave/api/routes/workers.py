"""Region workers: credentials (administrators) and the worker's own sync and log routes.

A worker authenticates with its region credential (``Authorization: Bearer encw_...``), not
a user token; which region it may act for, and which worker name it acts as, come from that
credential, on the server.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from enclave.api.deps import ActorDep, CtxDep, WindowDep, bearer
from enclave.api.schemas import WorkerCredentialIn, WorkerSyncIn
from enclave.services import workers
from enclave.services.context import Context
from enclave.services.workers import Report, SyncRequest, WorkerPrincipal

router = APIRouter(tags=["workers"])


def current_worker(request: Request, ctx: CtxDep) -> WorkerPrincipal:
    return workers.authenticate(ctx, bearer(request))


WorkerDep = Annotated[WorkerPrincipal, Depends(current_worker)]


@router.post("/worker-credentials", status_code=201)
def create_credential(body: WorkerCredentialIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    view, secret = workers.create_credential(ctx, actor, body.region, body.worker)
    return {**view, "secret": secret}


@router.get("/worker-credentials")
def list_credentials(ctx: CtxDep, actor: ActorDep, window: WindowDep) -> dict[str, Any]:
    """Region worker credentials (operators; never their secrets), oldest first, a page at a
    time (``next_cursor``: a credential's id)."""
    return workers.list_credentials(ctx, actor, window)


@router.delete("/worker-credentials/{credential_id}")
def revoke_credential(credential_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return workers.revoke_credential(ctx, actor, credential_id)


@router.post("/workers/{region}/sync")
def sync(region: str, body: WorkerSyncIn, ctx: CtxDep, worker: WorkerDep) -> dict[str, Any]:
    request = SyncRequest(
        worker=body.worker,
        session=str(body.session),
        capacity=body.capacity,
        health=body.health.model_dump(),
        reports=[Report(**r.model_dump()) for r in body.reports],
        holding=frozenset(body.holding),
    )
    return workers.sync(ctx, worker, region, request)


@router.put("/workers/{region}/jobs/{job_id}/logs/{stream}")
async def append_log(
    region: str,
    job_id: str,
    stream: str,
    request: Request,
    worker: WorkerDep,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    ctx: Context = request.app.state.ctx
    data = await request.body()  # bounded by the server's JSON body limit (BodyLimit)
    size = await run_in_threadpool(workers.append_log, ctx, worker, region, job_id, stream, offset, data)
    return {"size": size}
