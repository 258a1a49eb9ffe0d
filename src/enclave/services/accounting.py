"""Per-agency totals of what its jobs and gateway calls used, against its quotas."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from enclave.policy import Action, Role
from enclave.services.context import Context
from enclave.services.tenancy import ADMIN, agency_by_name, agency_view
from enclave.services.unit import Actor, unit
from enclave.store.models import GatewayUsage, Job


def agency_usage(ctx: Context, actor: Actor, agency_name: str) -> dict[str, Any]:
    """Members see their own agency's totals; admins and operators any agency's.

    Totals are aggregates over all of the agency's jobs (labels included), which is why they
    are limited to members and administrators: they reveal volume, never content.
    """
    with unit(ctx) as u:
        if agency_name != actor.subject.agency and Role.OPERATOR not in actor.subject.roles:
            u.require(actor, Action.ADMINISTER, ADMIN)
        agency = agency_by_name(u.session, agency_name)
        row = u.session.execute(
            select(
                func.count(Job.seq),
                func.coalesce(func.sum(Job.cpu_s), 0.0),
                func.coalesce(func.sum(Job.energy_kwh), 0.0),
                func.coalesce(func.sum(Job.kgco2e), 0.0),
                func.coalesce(func.sum(Job.cost), 0.0),
            ).where(Job.agency_id == agency.id)
        ).one()
        gpu_s = 0.0
        for nodes, gpus, started, ended in u.session.execute(
            select(Job.nodes, Job.gpus_per_node, Job.started_at, Job.ended_at).where(
                Job.agency_id == agency.id, Job.gpus_per_node > 0, Job.started_at.isnot(None)
            )
        ):
            end = ended or ctx.now()
            gpu_s += nodes * gpus * max(0.0, (end - started).total_seconds())
        by_state = dict(
            u.session.execute(
                select(Job.state, func.count(Job.seq)).where(Job.agency_id == agency.id).group_by(Job.state)
            ).all()
        )
        view = agency_view(agency)
        gateway = u.session.execute(
            select(
                func.coalesce(func.sum(GatewayUsage.requests), 0),
                func.coalesce(func.sum(GatewayUsage.prompt_tokens), 0),
                func.coalesce(func.sum(GatewayUsage.completion_tokens), 0),
                func.coalesce(func.sum(GatewayUsage.energy_j), 0.0),
            ).where(GatewayUsage.agency_id == agency.id)
        ).one()
        today = u.session.get(GatewayUsage, (agency.id, ctx.now().strftime("%Y-%m-%d")))
    jobs, cpu_s, kwh, kgco2e, cost = row
    return {
        "agency": agency_name,
        "jobs": int(jobs),
        "jobs_by_state": {str(k): int(v) for k, v in by_state.items()},
        "cpu_hours": float(cpu_s) / 3600.0,
        "gpu_hours": gpu_s / 3600.0,
        "energy_kwh": float(kwh),
        "emissions_kgco2e": float(kgco2e),
        "cost": float(cost),
        "gateway": {
            "requests": int(gateway[0]),
            "prompt_tokens": int(gateway[1]),
            "completion_tokens": int(gateway[2]),
            "energy_kwh": float(gateway[3]) / 3.6e6,
            "tokens_today": (today.prompt_tokens + today.completion_tokens) if today else 0,
        },
        "quotas": view["quotas"],
    }
