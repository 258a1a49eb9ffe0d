"""Pick a reader by file type, and the fleet a workload implies when none is given.

``.swf``/``.swf.gz``: an SWF trace, on one region sized from its header (:func:`trace_fleet`);
``.csv``: the Alibaba GPU v2023 pod list, on the ``gigawatt`` fleet; ``.toml``: a scenario
(a trace or the synthetic generator, with rules), on the fleet it names, else as its trace
implies, else ``gigawatt``.
"""

from __future__ import annotations

from pathlib import Path

from enclave.errors import InvalidInput
from enclave.fleet import Fleet, load_fleet, parse_fleet
from enclave.labels import LabelScheme
from enclave.sim.alibaba import load_alibaba
from enclave.sim.scenario import Scenario, build_workload, load_scenario, scenario_fleet
from enclave.sim.swf import load_swf
from enclave.sim.workload import Workload

DEFAULT_GPU_FLEET = "gigawatt"
KINDS = ".swf, .swf.gz, .csv (Alibaba GPU v2023) or .toml (scenario)"

TRACE_NODE_IDLE_W = 50.0  # a single-core node of a 1990s-style machine, for energy figures
TRACE_NODE_PEAK_W = 150.0


def load_workload(path: Path, scheme: LabelScheme) -> Workload:
    """The jobs of a trace or scenario file, labels parsed with ``scheme``."""
    kind = _kind(path)
    if kind == "swf":
        return load_swf(path, scheme.bottom)
    if kind == "alibaba":
        return load_alibaba(path, scheme.bottom)
    return build_workload(load_scenario(path), scheme, str(path))


def workload_and_fleet(path: Path, fleet: str | None = None) -> tuple[Workload, Fleet]:
    """The workload and the fleet to run it on: ``fleet`` (a built-in name or a file) when
    given, else the one the workload implies (see the module docstring)."""
    chosen = load_fleet(fleet) if fleet else None
    kind = _kind(path)
    if kind == "scenario":
        scenario = load_scenario(path)
        chosen = chosen or scenario_fleet(scenario)
        scheme = chosen.scheme if chosen else _implied_scheme(scenario)
        wl = build_workload(scenario, scheme, str(path))
        return wl, chosen or (trace_fleet(wl) if scenario.kind == "swf" else load_fleet(DEFAULT_GPU_FLEET))
    if kind == "alibaba":
        chosen = chosen or load_fleet(DEFAULT_GPU_FLEET)
        return load_alibaba(path, chosen.scheme.bottom), chosen
    wl = load_swf(path, (chosen.scheme if chosen else load_fleet("local").scheme).bottom)
    return wl, chosen or trace_fleet(wl)


def _implied_scheme(scenario: Scenario) -> LabelScheme:
    return load_fleet("local" if scenario.kind == "swf" else DEFAULT_GPU_FLEET).scheme


def _kind(path: Path) -> str:
    if not path.is_file():
        raise InvalidInput(f"no such workload file: {path}")
    name = path.name.lower()
    if name.endswith((".swf", ".swf.gz")):
        return "swf"
    if name.endswith(".csv"):
        return "alibaba"
    if name.endswith(".toml"):
        return "scenario"
    raise InvalidInput(f"{path.name}: unknown workload type (expected {KINDS})")


def trace_fleet(workload: Workload) -> Fleet:
    """One region of ``MaxProcs`` single-core nodes, as the trace's machine had."""
    if not workload.max_procs:
        raise InvalidInput("the trace header has no MaxProcs or MaxNodes: pass --fleet")
    return parse_fleet(
        f"""
name = "trace"
description = "one region sized from the trace header"
[[regions]]
name = "trace"
accreditation = "UNCLASSIFIED"
power_cap_mw = {workload.max_procs * TRACE_NODE_PEAK_W * 2 / 1e6}
pue = 1.2
[[regions.pools]]
name = "cpu"
count = {workload.max_procs}
cpus = 1
memory_mb = 1024
idle_w = {TRACE_NODE_IDLE_W}
peak_w = {TRACE_NODE_PEAK_W}
""",
        "trace header",
    )
