"""Per-agency totals of what its jobs and gateway calls used, against its quotas.

Totals count only what the session may read: one row per label the session dominates
(``by_label``), and the totals are the sums of those rows. Usage at a label the session may
not read changes nothing it is shown — not a count, not a sum, not a row — so that volume at
SECRET cannot be read off the figures an UNCLASSIFIED session gets.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from enclave.errors import InvalidInput
from enclave.labels import Label
from enclave.policy import Action, Resource, Role, decide
from enclave.services.context import Context
from enclave.services.tenancy import ADMIN, agency_by_name, agency_view
from enclave.services.unit import Actor, unit
from enclave.store.models import GatewayUsage, Job

UNLABELLED = ""  # gateway usage metered before usage carried labels (store revision 0005)

_JOB_SUMS = ("jobs", "cpu_s", "gpu_s", "energy_kwh", "kgco2e", "cost")
_GATEWAY_SUMS = ("requests", "prompt_tokens", "completion_tokens", "energy_j", "tokens_today")


def agency_usage(ctx: Context, actor: Actor, agency_name: str) -> dict[str, Any]:
    """Members see their own agency's totals; admins and operators any agency's — in each
    case only over the labels the session may read (``by_label`` has one row per label)."""
    with unit(ctx) as u:
        if agency_name != actor.subject.agency and Role.OPERATOR not in actor.subject.roles:
            u.require(actor, Action.ADMINISTER, ADMIN)
        agency = agency_by_name(u.session, agency_name)
        jobs: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(_JOB_SUMS, 0.0))
        for label, count, cpu_s, kwh, kgco2e, cost in u.session.execute(
            select(
                Job.label,
                func.count(Job.seq),
                func.coalesce(func.sum(Job.cpu_s), 0.0),
                func.coalesce(func.sum(Job.energy_kwh), 0.0),
                func.coalesce(func.sum(Job.kgco2e), 0.0),
                func.coalesce(func.sum(Job.cost), 0.0),
            )
            .where(Job.agency_id == agency.id)
            .group_by(Job.label)
        ):
            sums = (count, cpu_s, kwh, kgco2e, cost)  # coalesced in SQL: never None
            jobs[label].update(
                zip(
                    ("jobs", "cpu_s", "energy_kwh", "kgco2e", "cost"),
                    (float(v or 0) for v in sums),
                    strict=True,
                )
            )
        for label, nodes, gpus, started, ended in u.session.execute(
            select(Job.label, Job.nodes, Job.gpus_per_node, Job.started_at, Job.ended_at).where(
                Job.agency_id == agency.id, Job.gpus_per_node > 0, Job.started_at.isnot(None)
            )
        ):
            if started is None:  # excluded by the query; keeps the types honest
                continue
            end = ended or ctx.now()
            jobs[label]["gpu_s"] += nodes * gpus * max(0.0, (end - started).total_seconds())
        states: dict[str, dict[str, int]] = defaultdict(dict)
        for label, state, count in u.session.execute(
            select(Job.label, Job.state, func.count(Job.seq))
            .where(Job.agency_id == agency.id)
            .group_by(Job.label, Job.state)
        ):
            states[label][str(state)] = int(count)
        gateway: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(_GATEWAY_SUMS, 0.0))
        today = ctx.now().strftime("%Y-%m-%d")
        for label, day, requests, prompt, completion, energy in u.session.execute(
            select(
                GatewayUsage.label,
                GatewayUsage.day,
                GatewayUsage.requests,
                GatewayUsage.prompt_tokens,
                GatewayUsage.completion_tokens,
                GatewayUsage.energy_j,
            ).where(GatewayUsage.agency_id == agency.id)
        ):
            row = gateway[label]
            row["requests"] += requests
            row["prompt_tokens"] += prompt
            row["completion_tokens"] += completion
            row["energy_j"] += energy
            if day == today:
                row["tokens_today"] += prompt + completion
        view = agency_view(agency)
    readable = sorted(
        (label for label in set(jobs) | set(gateway) if _may_read(ctx, actor, label)),
        key=lambda m: (_label_of(ctx, m).rank, m),
    )
    rows = [_row(label, jobs.get(label), states.get(label, {}), gateway.get(label)) for label in readable]
    return {
        "agency": agency_name,
        **_totals(rows),
        "by_label": rows,
        "quotas": view["quotas"],
    }


def _may_read(ctx: Context, actor: Actor, marking: str) -> bool:
    """Whether the session may see usage at ``marking`` (the policy gate decides). Usage
    metered before labels were recorded is shown only at the scheme's top label."""
    return decide(actor.subject, Action.READ, Resource(kind="usage", label=_label_of(ctx, marking))).allowed


def _label_of(ctx: Context, marking: str) -> Label:
    """A stored marking's label; an unknown one (unlabelled rows, a marking the scheme no
    longer knows) counts as the top label: fail closed."""
    if marking == UNLABELLED:
        return ctx.scheme.top
    try:
        return ctx.scheme.parse(marking)
    except InvalidInput:
        return ctx.scheme.top


def _row(
    label: str, jobs: dict[str, float] | None, states: dict[str, int], gateway: dict[str, float] | None
) -> dict[str, Any]:
    j = jobs or dict.fromkeys(_JOB_SUMS, 0.0)
    g = gateway or dict.fromkeys(_GATEWAY_SUMS, 0.0)
    return {
        "label": label,
        "jobs": int(j["jobs"]),
        "jobs_by_state": states,
        "cpu_hours": float(j["cpu_s"]) / 3600.0,
        "gpu_hours": float(j["gpu_s"]) / 3600.0,
        "energy_kwh": float(j["energy_kwh"]),
        "emissions_kgco2e": float(j["kgco2e"]),
        "cost": float(j["cost"]),
        "gateway": {
            "requests": int(g["requests"]),
            "prompt_tokens": int(g["prompt_tokens"]),
            "completion_tokens": int(g["completion_tokens"]),
            "energy_kwh": float(g["energy_j"]) / 3.6e6,
            "tokens_today": int(g["tokens_today"]),
        },
    }


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_state: dict[str, int] = defaultdict(int)
    for r in rows:
        for state, count in r["jobs_by_state"].items():
            by_state[state] += count
    empty = _row(UNLABELLED, None, {}, None)
    return {
        "jobs": sum(r["jobs"] for r in rows),
        "jobs_by_state": dict(by_state),
        **{
            k: sum(r[k] for r in rows)
            for k in ("cpu_hours", "gpu_hours", "energy_kwh", "emissions_kgco2e", "cost")
        },
        "gateway": {k: sum(r["gateway"][k] for r in rows) for k in empty["gateway"]},
    }
