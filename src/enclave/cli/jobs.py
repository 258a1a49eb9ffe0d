"""`enclave job ...`: labelled batch jobs."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from enclave.cli.common import JsonOpt, client, print_json, print_table
from enclave.errors import InvalidInput

app = typer.Typer(help="Batch jobs: submit, watch, logs, cancel.", no_args_is_help=True)
TERMINAL = {"completed", "failed", "cancelled", "timeout"}
COLUMNS = ["id", "name", "label", "state", "region", "reason", "exit_code"]


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(f"--env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


@app.command("submit", context_settings={"allow_interspersed_args": False})
def submit(
    command: Annotated[list[str], typer.Argument(help="The program and its arguments (after --)")],
    label: Annotated[str | None, typer.Option(help="Job label (default: the session label)")] = None,
    name: Annotated[str | None, typer.Option()] = None,
    nodes: Annotated[int, typer.Option()] = 1,
    cpus: Annotated[int, typer.Option(help="CPUs per node")] = 1,
    memory: Annotated[int, typer.Option(help="Memory per node, MB")] = 1024,
    gpus: Annotated[int, typer.Option(help="GPUs per node")] = 0,
    walltime: Annotated[int, typer.Option(help="Walltime limit, seconds")] = 3600,
    region: Annotated[str | None, typer.Option(help="Region (default: auto)")] = None,
    qos: Annotated[str, typer.Option(help="low, normal, high or urgent")] = "normal",
    after: Annotated[list[str] | None, typer.Option(help="Start after this job completed OK")] = None,
    afterany: Annotated[list[str] | None, typer.Option(help="Start after this job ended")] = None,
    array: Annotated[int | None, typer.Option(help="Submit N copies (ENCLAVE_ARRAY_INDEX=0..N-1)")] = None,
    env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Resubmitting with the same key returns the same job")
    ] = None,
) -> None:
    """Submit a job; prints its id."""
    spec: dict[str, Any] = {
        "name": name or command[0].rsplit("/", 1)[-1],
        "command": command,
        "walltime_s": walltime,
        "resources": {"nodes": nodes, "cpus_per_node": cpus, "memory_mb": memory, "gpus_per_node": gpus},
        "qos": qos,
        "env": _env(env or []),
        "depends_on": [{"type": "afterok", "job": j} for j in after or []]
        + [{"type": "afterany", "job": j} for j in afterany or []],
    }
    for key, value in (
        ("label", label),
        ("region", region),
        ("array", array),
        ("idempotency_key", idempotency_key),
    ):
        if value is not None:
            spec[key] = value
    with client() as api:
        job = api.submit_job(spec)
    typer.echo(job["id"])


@app.command("list")
def list_(
    as_json: bool = JsonOpt,
    state: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 100,
) -> None:
    with client() as api:
        items = api.list_jobs(state, limit)
    if as_json:
        print_json(items)
    else:
        print_table(items, COLUMNS, "Jobs")


@app.command("show")
def show(job_id: str, as_json: bool = JsonOpt) -> None:
    """Show a job as the API returns it (with why it is pending, and its energy)."""
    with client() as api:
        job = api.job(job_id)
    if as_json:
        print_json(job)
        return
    energy = job["energy"]
    row = {**job, "kwh": energy["kwh"], "kgco2e": energy["kgco2e"], "energy_source": energy["source"]}
    print_table([row], [*COLUMNS, "walltime_s", "kwh", "kgco2e", "energy_source"])


@app.command("logs")
def logs(
    job_id: str,
    stderr: Annotated[bool, typer.Option("--stderr", help="Show stderr instead of stdout")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends")] = False,
) -> None:
    stream = "stderr" if stderr else "stdout"
    offset = 0
    with client() as api:
        while True:
            text, offset = api.job_logs(job_id, stream, offset)
            sys.stdout.write(text)
            sys.stdout.flush()
            if not follow or (not text and api.job(job_id)["state"] in TERMINAL):
                if follow:  # drain what the job wrote just before ending
                    text, offset = api.job_logs(job_id, stream, offset)
                    sys.stdout.write(text)
                return
            if not text:
                time.sleep(0.5)


@app.command("cancel")
def cancel(job_id: str) -> None:
    with client() as api:
        api.cancel_job(job_id)
    typer.echo("cancel requested")


@app.command("watch")
def watch(job_id: str, interval: Annotated[float, typer.Option(help="Seconds between polls")] = 0.5) -> None:
    """Show live progress until the job ends; exits with the job's exit code (1 if none)."""
    with client() as api:
        job = api.job(job_id)
        with Live(Spinner("dots", text=_line(job)), transient=False, refresh_per_second=8) as live:
            while job["state"] not in TERMINAL:
                time.sleep(interval)
                job = api.job(job_id)
                live.update(Spinner("dots", text=_line(job)))
            live.update(_line(job))
    code = job["exit_code"]
    raise typer.Exit(
        0 if job["state"] == "completed" else (code if isinstance(code, int) and code > 0 else 1)
    )


def _line(job: dict[str, Any]) -> Text:
    """Plain text, not markup: names, ids and reasons may hold brackets."""
    return Text(_plain_line(job))


def _plain_line(job: dict[str, Any]) -> str:
    parts = [f"{job['name']} [{job['id'][:8]}] {job['state']}"]
    if job.get("reason"):
        parts.append(f"({job['reason']})")
    if job.get("region") and job["region"] != "auto":
        parts.append(f"in {job['region']}")
    if job["state"] in TERMINAL:
        kwh = job["energy"]["kwh"]
        parts.append(
            f"exit {job['exit_code']}, {kwh:.6f} kWh ({job['energy']['source']})" if kwh is not None else ""
        )
    return " ".join(p for p in parts if p)
