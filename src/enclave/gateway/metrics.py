"""Prometheus metrics of the gateway, served at ``/metrics``.

Label values are endpoint names and outcomes only: never prompts, users or markings, so
the metrics page carries nothing above the lowest label (it needs no token).
"""

from __future__ import annotations

from functools import cache

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "enclave_gateway_requests",
    "Gateway calls by route and outcome",
    ["route", "outcome"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "enclave_gateway_latency_seconds",
    "Time from receiving a call to its last byte, by route",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
TOKENS = Counter("enclave_gateway_tokens", "Tokens metered, by kind", ["kind"], registry=REGISTRY)
ENERGY = Counter("enclave_gateway_energy_joules", "Modelled IT energy of gateway calls", registry=REGISTRY)
PROMPT_TOKENS = TOKENS.labels("prompt")
COMPLETION_TOKENS = TOKENS.labels("completion")


@cache
def requests(route: str, outcome: str) -> Counter:
    """The REQUESTS child of a route and outcome (labels() costs a lock and a lookup per call)."""
    return REQUESTS.labels(route, outcome)


@cache
def latency(route: str) -> Histogram:
    return LATENCY.labels(route)
