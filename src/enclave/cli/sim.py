"""`enclave sim ...`: the digital twin (runs locally, no server needed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from enclave.cli.common import console, print_json
from enclave.fleet import load_fleet
from enclave.scheduler.policies import make_policy
from enclave.sim.engine import simulate
from enclave.sim.metrics import summarize
from enclave.sim.report import write_outputs
from enclave.sim.workloads import load_workload, trace_fleet

app = typer.Typer(
    help="Replay traces and synthetic workloads on a simulated fleet with the real scheduler.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    workload: Annotated[Path, typer.Option(help="An SWF trace (.swf, .swf.gz)")],
    fleet: Annotated[
        str | None, typer.Option(help="Built-in fleet or fleet file (default: from the trace header)")
    ] = None,
    policy: Annotated[str, typer.Option(help="fcfs, easy or priority")] = "easy",
    out: Annotated[Path, typer.Option(help="Output directory")] = Path("sim-out"),
) -> None:
    """Simulate one workload under one policy; writes summary.json, CSVs and a report."""
    fleet_spec = load_fleet(fleet) if fleet else None
    scheme = fleet_spec.scheme if fleet_spec else load_fleet("local").scheme
    wl = load_workload(workload, scheme)
    fleet_spec = fleet_spec or trace_fleet(wl)
    chosen = make_policy(policy)
    started = time.perf_counter()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"simulating {workload.name} ({policy})", total=len(wl.jobs))
        last = [0]

        def progress(done: int, total: int) -> None:
            if done - last[0] >= 500 or done == total:
                bar.update(task, completed=done)
                last[0] = done

        outcome = simulate(fleet_spec, wl.jobs, chosen, progress=progress)
    wall = time.perf_counter() - started
    summary = summarize(fleet_spec, outcome)
    summary.update(
        {
            "policy": policy,
            "workload": str(workload),
            "fleet": fleet_spec.name,
            "skipped": wl.skipped,
            "wall_s": wall,
        }
    )
    write_outputs(out, fleet_spec, outcome, summary, f"{workload.name} on {fleet_spec.name} ({policy})")
    keys = [
        "jobs",
        "avg_wait_s",
        "avg_bounded_slowdown",
        "utilization",
        "makespan_s",
        "power_cap_violations",
        "energy_mwh",
        "emissions_tco2e",
        "wall_s",
    ]
    print_json({k: summary[k] for k in keys})
    console.print(f"wrote {out}/summary.json, jobs.csv, power.csv, report.png, report.html", style="dim")
