"""`enclave sim ...`: the digital twin (runs locally, no server needed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from enclave.cli.common import console, print_json

if TYPE_CHECKING:
    from rich.progress import Progress

    from enclave.sim.compare import Comparison
    from enclave.sim.engine import Progress as SimProgress

# The engine's defaults, written here so that `enclave sim --help` does not import the
# simulator (numpy, the scheduler: about half a second); tests/cli/test_startup.py checks them.
DEFAULT_POWER_CAP_SCALE = 0.8  # enclave.scheduler.policies.DEFAULT_POWER_CAP_SCALE
BUILTIN_CARBON = "builtin"  # enclave.sim.carbon.BUILTIN
DEFAULT_POLICIES = ("fcfs", "easy", "priority", "power-capped", "carbon-aware")  # enclave.sim.compare


def _progress_bar() -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


app = typer.Typer(
    help="Replay traces and synthetic workloads on a simulated fleet with the real scheduler.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    workload: Annotated[
        Path, typer.Option(help="An SWF trace (.swf, .swf.gz), an Alibaba GPU CSV or a scenario (.toml)")
    ],
    fleet: Annotated[
        str | None,
        typer.Option(help="Built-in fleet or fleet file (default: SWF header, scenario's, else gigawatt)"),
    ] = None,
    policy: Annotated[str, typer.Option(help="fcfs, easy, priority, power-capped or carbon-aware")] = "easy",
    out: Annotated[Path, typer.Option(help="Output directory")] = Path("sim-out"),
    carbon: Annotated[
        str | None,
        typer.Option(help="Grid carbon intensity: 'builtin' or a curve file (.toml, .csv); default flat"),
    ] = None,
) -> None:
    """Simulate one workload under one policy; writes summary.json, CSVs and a report."""
    from enclave.sim.carbon import resolve_carbon
    from enclave.sim.compare import build_policy
    from enclave.sim.engine import simulate
    from enclave.sim.metrics import summarize
    from enclave.sim.report import write_outputs
    from enclave.sim.workloads import workload_and_fleet

    wl, fleet_spec = workload_and_fleet(workload, fleet)
    curve = resolve_carbon(carbon, fleet_spec)
    chosen = build_policy(policy, fleet_spec, curve, DEFAULT_POWER_CAP_SCALE)
    started = time.perf_counter()
    with _progress_bar() as bar:
        task = bar.add_task(f"simulating {workload.name} ({policy})", total=len(wl.jobs))
        last = [0]

        def progress(done: int, total: int) -> None:
            if done - last[0] >= 500 or done == total:
                bar.update(task, completed=done)
                last[0] = done

        outcome = simulate(fleet_spec, wl.jobs, chosen, progress=progress)
    wall = time.perf_counter() - started
    summary = summarize(fleet_spec, outcome, curve)
    summary.update(
        {
            "policy": policy,
            "workload": str(workload),
            "fleet": fleet_spec.name,
            "skipped": wl.skipped,
            "wall_s": wall,
        }
    )
    write_outputs(
        out, fleet_spec, outcome, summary, f"{workload.name} on {fleet_spec.name} ({policy})", curve
    )
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


@app.command("compare")
def compare_cmd(
    workload: Annotated[
        Path, typer.Option(help="An SWF trace (.swf, .swf.gz), an Alibaba GPU CSV or a scenario (.toml)")
    ],
    fleet: Annotated[
        str | None,
        typer.Option(help="Built-in fleet or fleet file (default: SWF header, scenario's, else gigawatt)"),
    ] = None,
    policies: Annotated[str, typer.Option(help="Comma-separated policies")] = ",".join(DEFAULT_POLICIES),
    out: Annotated[Path, typer.Option(help="Output directory")] = Path("sim-compare"),
    carbon: Annotated[
        str, typer.Option(help="Grid carbon intensity: 'builtin', a curve file (.toml, .csv) or 'flat'")
    ] = BUILTIN_CARBON,
    power_cap_scale: Annotated[
        float, typer.Option(help="power-capped: every region's cap times this factor (0, 1]")
    ] = DEFAULT_POWER_CAP_SCALE,
    deferrable_share: Annotated[
        float, typer.Option(help="Make this seeded share of the jobs deferrable (traces carry no deferral)")
    ] = 0.0,
    deadline_slack_hours: Annotated[
        float, typer.Option(help="Deadline of a job made deferrable: submit + walltime + this")
    ] = 24.0,
    seed: Annotated[int, typer.Option(help="Seed for choosing the deferrable jobs")] = 0,
) -> None:
    """Run several policies on one workload and fleet; print one table, write compare.json/csv."""
    from enclave.sim.carbon import resolve_carbon
    from enclave.sim.compare import compare, mark_deferrable, parse_policies, write
    from enclave.sim.workloads import workload_and_fleet

    names = parse_policies(policies)
    wl, fleet_spec = workload_and_fleet(workload, fleet)
    curve = None if carbon == "flat" else resolve_carbon(carbon, fleet_spec)
    jobs = wl.jobs
    if deferrable_share > 0:
        jobs = mark_deferrable(jobs, deferrable_share, deadline_slack_hours * 3600.0, seed)
    started = time.perf_counter()
    with _progress_bar() as bar:

        def progress(name: str) -> SimProgress:
            task = bar.add_task(f"{workload.name}: {name}", total=len(jobs))
            last = [0]

            def update(done: int, total: int) -> None:
                if done - last[0] >= 500 or done == total:
                    bar.update(task, completed=done)
                    last[0] = done

            return update

        result = compare(
            fleet_spec, jobs, names, carbon=curve, power_cap_scale=power_cap_scale, progress=progress
        )
    meta = {
        "workload": str(workload),
        "fleet": fleet_spec.name,
        "carbon_curve": carbon,
        "skipped": wl.skipped,
        "deferrable_jobs": sum(1 for j in jobs if j.deferrable),
        "wall_s": time.perf_counter() - started,
    }
    write(out, result, meta)
    _print_comparison(result, f"{workload.name} on {fleet_spec.name}")
    console.print(f"wrote {out}/compare.json, compare.csv, compare.png, compare.html", style="dim")


_HEADERS = {
    "jobs": "jobs",
    "avg_wait_s": "wait s",
    "avg_bounded_slowdown": "bsld",
    "utilization": "util",
    "makespan_s": "span h",
    "power_cap_violations": "cap viol",
    "cap_share_saturated": "cap used*",
    "energy_mwh": "MWh",
    "emissions_tco2e": "tCO2e",
    "cost": "cost",
}
TABLE_WIDTH = 150  # when not on a terminal (a pipe, a log): wide enough for every column


def _num(value: float) -> str:
    """Four significant figures, thousands separated: 12,345 / 123.4 / 0.01834."""
    if value == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _cell(key: str, value: float) -> str:
    if key == "makespan_s":
        return _num(value / 3600)
    if key in ("utilization", "cap_share_saturated"):
        return f"{value:.1%}"
    if key in ("jobs", "power_cap_violations"):
        return f"{int(value):,}"
    return _num(value)


def _print_comparison(result: Comparison, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from enclave.sim.compare import CARBON_AWARE, COLUMNS

    table = Table(title=title, caption="* mean draw over the time jobs were waiting, as a share of the cap")
    table.add_column("policy", no_wrap=True)
    for key in COLUMNS:
        table.add_column(_HEADERS[key], justify="right", no_wrap=True)
    for name, row in result.rows.items():
        table.add_row(name, *[_cell(k, row[k]) for k in COLUMNS])
    figures = result.carbon
    if figures is not None:
        cells = ["" for _ in COLUMNS]
        cells[COLUMNS.index("emissions_tco2e")] = _cell("emissions_tco2e", figures["oracle_emissions_tco2e"])
        table.add_row("[dim]oracle bound[/dim]", *cells)
    # A pipe or a log gets a fixed width: rich would squeeze the columns into 80.
    out = console if console.is_terminal else Console(width=TABLE_WIDTH, file=console.file)
    out.print(table)
    if figures is not None:
        share = figures["share_of_oracle_reduction"]
        reached = "n/a (the oracle finds nothing to shift)" if share is None else f"{share:.1%}"
        console.print(
            f"{CARBON_AWARE}: {_num(figures['carbon_aware_reduction_tco2e'])} tCO2e less than "
            f"{figures['baseline']}; the oracle bound (each of {figures['deferrable_jobs']:,} deferrable "
            f"jobs in its cleanest hours and regions) saves {_num(figures['oracle_reduction_tco2e'])} tCO2e: "
            f"{reached} of the bound reached, for {figures['extra_avg_wait_s']:+,.0f} s of average wait "
            f"({figures['extra_avg_wait_deferrable_s']:+,.0f} s for deferrable jobs); "
            f"deadlines missed {figures['deadlines_missed']} ({figures['baseline']}: "
            f"{figures['deadlines_missed_baseline']})"
        )
