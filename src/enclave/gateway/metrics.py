"""Prometheus metrics of the gateway, served at ``/metrics`` to the operator role.

Every series carries the session label of the calls it counts (``label``), and nothing
else that names who called or what was said: label values are routes, outcomes, token
kinds and markings, never prompts, users or endpoint names. :func:`exposition` leaves out
every series whose label the reader's session may not read, so an operator at UNCLASSIFIED
sees UNCLASSIFIED traffic only — SECRET calls change nothing on that page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "enclave_gateway_requests",
    "Gateway calls by route, outcome and session label",
    ["route", "outcome", "label"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "enclave_gateway_latency_seconds",
    "Time from receiving a call to its last byte, by route and session label",
    ["route", "label"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
TOKENS = Counter(
    "enclave_gateway_tokens",
    "Tokens metered, by kind and session label",
    ["kind", "label"],
    registry=REGISTRY,
)
ENERGY = Counter(
    "enclave_gateway_energy_joules",
    "Modelled IT energy of gateway calls, by session label",
    ["label"],
    registry=REGISTRY,
)


@cache
def requests(route: str, outcome: str, label: str) -> Counter:
    """The REQUESTS child of a route, outcome and label (labels() costs a lock and a lookup per call)."""
    return REQUESTS.labels(route, outcome, label)


@cache
def latency(route: str, label: str) -> Histogram:
    return LATENCY.labels(route, label)


@cache
def tokens(kind: str, label: str) -> Counter:
    return TOKENS.labels(kind, label)


@cache
def energy(label: str) -> Counter:
    return ENERGY.labels(label)


class _Filtered:
    """The registry as seen from one session: series at labels it may not read left out."""

    def __init__(self, may_read: Callable[[str], bool]) -> None:
        self._may_read = may_read

    def collect(self) -> Iterable[Metric]:
        allowed: dict[str, bool] = {}
        for family in REGISTRY.collect():
            kept = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                marking = sample.labels.get("label", "")
                if marking not in allowed:
                    allowed[marking] = self._may_read(marking)
                if allowed[marking]:
                    kept.samples.append(sample)
            yield kept


def exposition(may_read: Callable[[str], bool]) -> bytes:
    """The metrics page in Prometheus' text format, only series whose label ``may_read``."""
    return generate_latest(_Filtered(may_read))
