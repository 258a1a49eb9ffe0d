"""The ``/metrics`` page: the operator role's, and only the series its session may read."""

from __future__ import annotations

from enclave.errors import InvalidInput
from enclave.gateway import metrics
from enclave.policy import Action, Resource, decide
from enclave.services.context import Context
from enclave.services.unit import Actor, unit

METRICS = Resource(kind="metrics")


def exposition(ctx: Context, actor: Actor) -> bytes:
    """Prometheus text for an operator: every series at a label the session dominates
    (the policy gate decides each label); series at other labels are left out entirely."""
    with unit(ctx) as u:
        u.require(actor, Action.READ_METRICS, METRICS)

    def may_read(marking: str) -> bool:
        try:
            label = ctx.scheme.parse(marking)
        except InvalidInput:
            return False  # a series without a readable label is nobody's to see
        return decide(actor.subject, Action.READ, Resource(kind="metrics", label=label)).allowed

    return metrics.exposition(may_read)
