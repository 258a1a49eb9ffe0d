"""Pick a reader by file type, and the fleet a trace implies when none is given."""

from __future__ import annotations

from pathlib import Path

from enclave.errors import InvalidInput
from enclave.fleet import Fleet, parse_fleet
from enclave.labels import LabelScheme
from enclave.sim.swf import load_swf
from enclave.sim.workload import Workload

TRACE_NODE_IDLE_W = 50.0  # a single-core node of a 1990s-style machine, for energy figures
TRACE_NODE_PEAK_W = 150.0


def load_workload(path: Path, scheme: LabelScheme) -> Workload:
    name = path.name.lower()
    if not path.is_file():
        raise InvalidInput(f"no such workload file: {path}")
    if name.endswith((".swf", ".swf.gz")):
        return load_swf(path, scheme.bottom)
    raise InvalidInput(f"{path.name}: unknown workload type (expected .swf or .swf.gz)")


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
