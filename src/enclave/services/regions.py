"""Regions of the fleet as a session sees them, with their back end's health.

Health asks each region's executor (``sinfo`` for Slurm, the Ray head for Ray); answers are
kept for HEALTH_TTL_S so that listing regions stays cheap however often it is asked.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from enclave.errors import EnclaveError, NotFound
from enclave.executors.base import Executor, Health
from enclave.executors.registry import make_executor
from enclave.fleet import Region
from enclave.policy import may_place
from enclave.services.context import Context
from enclave.services.unit import Actor

HEALTH_TTL_S = 5.0
_lock = threading.Lock()
_health: dict[tuple[int, str], tuple[float, Health]] = {}


def executor_for(ctx: Context, region: Region) -> Executor:
    """This control plane's executor for ``region`` (see make_executor)."""
    return make_executor(region, ctx.settings.home / "sandboxes", ctx.sessions, ctx.read_sessions, ctx.now)


def health(ctx: Context, region: Region) -> Health:
    key = (id(ctx), region.name)
    now = time.monotonic()
    with _lock:
        hit = _health.get(key)
    if hit is not None and now - hit[0] < HEALTH_TTL_S:
        return hit[1]
    try:
        answer = executor_for(ctx, region).health()
    except (EnclaveError, OSError) as exc:
        answer = Health(False, str(exc))
    with _lock:
        _health[key] = (now, answer)
    return answer


def view(ctx: Context, actor: Actor, r: Region) -> dict[str, Any]:
    accreditation = ctx.fleet.accreditation(r)
    state = health(ctx, r)
    return {
        "name": r.name,
        "accreditation": accreditation.marking,
        "accepts_session_label": may_place(actor.subject.session, accreditation),
        "backend": {"type": r.backend.type, **r.backend.model_dump(exclude_defaults=True)},
        "healthy": state.healthy,
        "health": state.detail,
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


def list_all(ctx: Context, actor: Actor) -> list[dict[str, Any]]:
    return [view(ctx, actor, r) for r in ctx.fleet.regions]


def show(ctx: Context, actor: Actor, name: str) -> dict[str, Any]:
    for r in ctx.fleet.regions:
        if r.name == name:
            return view(ctx, actor, r)
    raise NotFound(f"region {name} not found")
