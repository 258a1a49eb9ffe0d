"""The egress rules (enclave.egress): what a region's network_allow list lets through.

Pure decisions, property-tested; the relay and bridge themselves are attacked with real
processes in tests/resilience/test_egress.py.
"""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave import egress
from enclave.errors import InvalidInput
from enclave.fleet import parse_fleet
from enclave.services import models

LABEL = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)
NAME = st.lists(LABEL, min_size=2, max_size=4).map(".".join)
PORT = st.integers(1, 65535)
SPECIAL = st.sampled_from(
    [
        "127.0.0.1",
        "127.8.9.10",
        "169.254.169.254",
        "0.0.0.0",  # noqa: S104 - an address a name must not lead to, nothing bound
        "224.0.0.1",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
    ]
)
PUBLIC = st.ip_addresses(v=4).filter(lambda a: not egress.special(a))


def test_rules_are_parsed_or_refused_with_the_entry_named() -> None:
    assert egress.parse_rule("PyPI.org.:443") == egress.Rule(443, name="pypi.org")
    assert egress.parse_rule("*.example.org:8443") == egress.Rule(8443, name="example.org", wildcard=True)
    assert egress.parse_rule("10.1.0.0/16:8000").network == ipaddress.ip_network("10.1.0.0/16")
    assert egress.parse_rule("[fd00::5]:443").network == ipaddress.ip_network("fd00::5/128")
    for bad in (
        "pypi.org",
        "pypi.org:0",
        "pypi.org:65536",
        "pypi.org:http",
        "a b:1",
        "*:443",
        "10.0.0:80",
        "10.1.0.1/16:80",
        "ex*ample.org:1",
        "*.*.org:1",
        "http://x:1",
        ":443",
        "x_y.org:1",
    ):
        with pytest.raises(ValueError, match=r"network_allow|host"):
            egress.parse_rule(bad)


@given(NAME, PORT, st.lists(PUBLIC, min_size=1, max_size=3))
def test_a_listed_name_reaches_what_it_resolves_to_on_its_port_only(
    name: str, port: int, addrs: list
) -> None:
    rules = egress.parse_rules([f"{name}:{port}"])
    assert egress.permitted(rules, name.upper(), port, addrs) == addrs
    assert egress.permitted(rules, name, port % 65535 + 1, addrs) == []
    assert egress.permitted(rules, "x" + name, port, addrs) == []  # not a suffix match
    assert egress.permitted(rules, "sub." + name, port, addrs) == []  # no wildcard: exact only


@given(NAME, PORT, LABEL, st.lists(PUBLIC, min_size=1, max_size=3))
def test_a_wildcard_reaches_names_below_the_domain_never_the_domain_itself(
    name: str, port: int, sub: str, addrs: list
) -> None:
    rules = egress.parse_rules([f"*.{name}:{port}"])
    assert egress.permitted(rules, f"{sub}.{name}", port, addrs) == addrs
    assert egress.permitted(rules, name, port, addrs) == []
    assert egress.permitted(rules, f"{sub}{name}", port, addrs) == []  # "evilexample.org"


@given(NAME, PORT, SPECIAL, PUBLIC)
def test_a_name_never_leads_to_this_machine_or_cloud_metadata(name: str, port: int, bad: str, good) -> None:
    """DNS the job's author controls (a wildcard's subdomain, a rebinding name) must not turn
    a listed name into the host's loopback services or 169.254.169.254."""
    rules = egress.parse_rules([f"*.{name}:{port}", f"{name}:{port}"])
    address = ipaddress.ip_address(bad)
    for host in (name, f"rebind.{name}"):
        assert egress.permitted(rules, host, port, [address, good]) == [good]
        assert egress.permitted(rules, host, port, [address]) == []


@given(PORT, st.integers(0, 255), st.integers(0, 255))
def test_a_network_rule_admits_literal_and_resolved_addresses_inside_it_only(
    port: int, c: int, d: int
) -> None:
    rules = egress.parse_rules([f"10.1.0.0/16:{port}", f"127.0.0.1:{port}"])
    inside, outside = ipaddress.ip_address(f"10.1.{c}.{d}"), ipaddress.ip_address(f"10.2.{c}.{d}")
    assert egress.permitted(rules, str(inside), port, [inside]) == [inside]
    assert egress.permitted(rules, str(outside), port, [outside]) == []
    assert egress.permitted(rules, "svc.internal", port, [outside, inside]) == [inside]  # pinned
    loop = ipaddress.ip_address("127.0.0.1")
    assert egress.permitted(rules, "127.0.0.1", port, [loop]) == [loop]  # listed outright
    assert egress.permitted(rules, "127.0.0.1", port % 65535 + 1, [loop]) == []


def test_deploy_time_check_needs_the_rules_to_name_the_destination() -> None:
    rules = egress.parse_rules(["llm.internal:8000", "10.9.0.0/24:443"])
    assert egress.lists(rules, "LLM.internal", 8000)
    assert not egress.lists(rules, "llm.internal", 80)
    assert egress.lists(rules, "10.9.0.7", 443) and not egress.lists(rules, "10.9.1.7", 443)
    assert not egress.lists(rules, "other.internal", 8000)


FLEET = """
name = "t"
[[regions]]
name = "r"
accreditation = "SECRET"
power_cap_mw = 1
upstream_allow = ["http://llm.internal:8000/v1", "http://elsewhere:9000/v1"]
[regions.backend]
type = "local"
{backend}
[[regions.pools]]
name = "p"
count = 1
cpus = 2
memory_mb = 1024
idle_w = 10
peak_w = 20
"""


@pytest.mark.parametrize(
    "backend",
    [
        'network = "allow"',
        'network_allow = ["x.org:443"]',
        'network = "none"\nnetwork_allow = ["x.org:443"]',
        'network = "allow"\nnetwork_allow = ["x.org"]',
        'network = "everything"',
    ],
)
def test_the_fleet_file_refuses_a_list_without_allow_and_allow_without_a_list(backend: str) -> None:
    with pytest.raises(InvalidInput, match="network"):
        parse_fleet(FLEET.format(backend=backend))


def test_an_upstream_model_is_served_where_network_allow_names_its_url() -> None:
    fleet = parse_fleet(FLEET.format(backend='network = "allow"\nnetwork_allow = ["llm.internal:8000"]'))
    ctx = SimpleNamespace(fleet=fleet)

    def model(url: str) -> SimpleNamespace:
        return SimpleNamespace(runtime="openai-upstream", meta={models.UPSTREAM_URL: url})

    models.check_upstream(ctx, model("http://llm.internal:8000/v1"), "r")  # type: ignore[arg-type]
    # On upstream_allow but not reachable through the region's egress list: refused at deploy.
    with pytest.raises(InvalidInput, match="network_allow"):
        models.check_upstream(ctx, model("http://elsewhere:9000/v1"), "r")  # type: ignore[arg-type]
    closed = SimpleNamespace(fleet=parse_fleet(FLEET.format(backend='network = "none"')))
    with pytest.raises(InvalidInput, match="no network"):
        models.check_upstream(closed, model("http://llm.internal:8000/v1"), "r")  # type: ignore[arg-type]
