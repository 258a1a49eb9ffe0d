from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from enclave.api.deps import ActorDep, CtxDep
from enclave.errors import NotFound
from enclave.fleet import Region
from enclave.policy import may_place
from enclave.services.context import Context
from enclave.services.unit import Actor

router = APIRouter(tags=["regions"])


def region_view(ctx: Context, actor: Actor, r: Region) -> dict[str, Any]:
    accreditation = ctx.fleet.accreditation(r)
    return {
        "name": r.name,
        "accreditation": accreditation.marking,
        "accepts_session_label": may_place(actor.subject.session, accreditation),
        "backend": r.backend.model_dump(),
        # The local executor runs inside this process: serving the request proves it is up.
        # Remote back ends (Slurm, Ray) report their own health once they exist.
        "healthy": r.backend.type == "local",
        "power_cap_mw": r.power_cap_mw,
        "pue": r.pue,
        "carbon_g_per_kwh": r.carbon_g_per_kwh,
        "price_per_kwh": r.price_per_kwh,
        "capacity": {
            "nodes": r.nodes,
            "cpus": r.cpus,
            "gpus": r.gpus,
            "peak_facility_mw": round(r.peak_facility_mw, 6),
            "idle_facility_mw": round(r.idle_facility_mw, 6),
        },
        "pools": [p.model_dump() for p in r.pools],
    }


@router.get("/regions")
def list_regions(ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    items = [region_view(ctx, actor, r) for r in ctx.fleet.regions]
    return {"fleet": ctx.fleet.name, "items": items, "count": len(items)}


@router.get("/regions/{name}")
def get_region(name: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    for r in ctx.fleet.regions:
        if r.name == name:
            return region_view(ctx, actor, r)
    raise NotFound(f"region {name} not found")
