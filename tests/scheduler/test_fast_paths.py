"""The simulator's fast paths change nothing: ``explain=False`` and the reservation kept from
one pass to the next start the same jobs at the same times with the same reservations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.policies import make_policy

from .driver import simulate
from .strategies import Scenario, scenarios


def forget_reservation(state: ClusterState) -> None:
    state.reservation_cache = None


@settings(max_examples=200, deadline=None)
@given(
    scenarios(max_regions=2, tight_power=True, labelled=True, name_regions=True),
    st.sampled_from(["fcfs", "easy", "priority"]),
)
def test_same_schedule_without_explanations_and_without_the_kept_reservation(
    scenario: Scenario, policy: str
) -> None:
    def run(explain: bool, forget: bool) -> tuple[object, ...]:
        state = ClusterState.from_fleet(scenario.fleet)
        before = forget_reservation if forget else None
        trace = simulate(state, make_policy(policy), scenario.work, before_pass=before, explain=explain)
        return (trace.starts, trace.placements, trace.reservations, trace.never_started)

    reference = run(explain=True, forget=True)
    assert run(explain=True, forget=False) == reference
    assert run(explain=False, forget=False) == reference
