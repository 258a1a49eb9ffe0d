from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter

from enclave.api.deps import ActorDep, CtxDep, WindowDep
from enclave.api.schemas import AgencyIn, ClearanceIn, PasswordIn, ProjectIn, QuotasIn, UserIn, UserPatch
from enclave.services import accounting, tenancy

router = APIRouter(tags=["tenancy"])


def _quotas(q: QuotasIn) -> tenancy.Quotas:
    return tenancy.Quotas(
        q.gpu_hours, q.kwh, q.storage_bytes, q.gateway_rpm, q.gateway_tpm, q.gateway_token_budget
    )


@router.post("/agencies", status_code=201)
def create_agency(body: AgencyIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return tenancy.create_agency(ctx, actor, body.name, _quotas(body.quotas))


@router.get("/agencies")
def list_agencies(ctx: CtxDep, actor: ActorDep, window: WindowDep) -> dict[str, Any]:
    """Every agency (operators), by name, a page at a time (``next_cursor``: a name)."""
    return tenancy.list_agencies(ctx, actor, window)


@router.get("/agencies/{name}")
def get_agency(name: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return tenancy.get_agency(ctx, actor, name)


@router.put("/agencies/{name}/quotas")
def set_quotas(name: str, body: QuotasIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return tenancy.update_quotas(ctx, actor, name, _quotas(body))


@router.get("/agencies/{name}/usage")
def usage(name: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """Energy, carbon, cost, CPU- and GPU-hours of the agency's jobs, beside its quotas."""
    return accounting.agency_usage(ctx, actor, name)


@router.post("/agencies/{name}/projects", status_code=201)
def create_project(name: str, body: ProjectIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return tenancy.create_project(ctx, actor, name, body.name)


@router.get("/agencies/{name}/projects")
def list_projects(name: str, ctx: CtxDep, actor: ActorDep, window: WindowDep) -> dict[str, Any]:
    """The agency's projects, by name, a page at a time (``next_cursor``: a name)."""
    return tenancy.list_projects(ctx, actor, name, window)


@router.post("/users", status_code=201)
def create_user(body: UserIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return tenancy.create_user(ctx, actor, body.name, body.agency, body.clearance, body.roles, body.password)


@router.get("/users")
def list_users(ctx: CtxDep, actor: ActorDep, window: WindowDep) -> dict[str, Any]:
    """The users the caller administers (an agency admin: its agency's; an operator: all), by
    name, a page at a time (``next_cursor``: a name)."""
    return tenancy.list_users(ctx, actor, window)


@router.get("/users/{name}")
def get_user(name: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return tenancy.get_user(ctx, actor, name)


@router.patch("/users/{name}")
def update_user(name: str, body: UserPatch, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return tenancy.update_user(ctx, actor, name, body.clearance, body.roles, body.disabled)


@router.put("/users/{name}/password", status_code=204)
def set_password(name: str, body: PasswordIn, ctx: CtxDep, actor: ActorDep) -> None:
    tenancy.set_password(ctx, actor, name, body.new_password, body.current_password)


@router.post("/users/{name}/clearance", status_code=201)
def request_clearance(name: str, body: ClearanceIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """Ask for a change of ``name``'s clearance: a lowering applies at once (``applied``); a
    raise is ``pending`` until an admin other than the requester and the user approves it."""
    return tenancy.request_clearance(ctx, actor, name, body.clearance)


@router.get("/clearance-requests")
def list_clearance_requests(
    ctx: CtxDep,
    actor: ActorDep,
    window: WindowDep,
    state: Literal["pending", "approved", "refused", "applied"] | None = None,
) -> dict[str, Any]:
    """Clearance changes of the users the caller administers, oldest first, a page at a time
    (``next_cursor``: a request's id)."""
    return tenancy.list_clearance_requests(ctx, actor, state, window)


@router.post("/clearance-requests/{request_id}/approve")
def approve_clearance(request_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return tenancy.approve_clearance(ctx, actor, request_id)


@router.post("/clearance-requests/{request_id}/refuse")
def refuse_clearance(request_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return tenancy.refuse_clearance(ctx, actor, request_id)
