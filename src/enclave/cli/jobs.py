"""`enclave job ...`: labelled batch jobs."""

from __future__ import annotations

import re
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.text import Text

from enclave.cli import output as out
from enclave.cli import paging
from enclave.cli.common import JsonOpt, OutputOpt, WideOpt, client, emit_one
from enclave.cli.humanize import duration_s
from enclave.errors import InvalidInput

if TYPE_CHECKING:
    from enclave.client import Client

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
    if job.get("array_id"):  # the array's own id: `job show|cancel ID`, `job list --array ID`
        typer.echo(job["array_id"])
        typer.echo(f"array of {len(job['array_jobs'])} tasks, first task {job['id']}", err=True)
    else:
        typer.echo(job["id"])


@app.command("list")
def list_(
    as_json: bool = JsonOpt,
    output: str | None = OutputOpt,
    wide: bool = WideOpt,
    state: Annotated[str | None, typer.Option()] = None,
    limit: int = paging.LimitOpt,
    page: int | None = paging.PageOpt,
    cursor: str | None = paging.CursorOpt,
    all_: bool = paging.AllOpt,
    name: Annotated[str | None, typer.Option(help="Part of the name, any case")] = None,
    array: Annotated[str | None, typer.Option(help="Only the tasks of this array (an id or prefix)")] = None,
    region: Annotated[str | None, typer.Option()] = None,
    label: Annotated[str | None, typer.Option(help="Only jobs at exactly this label")] = None,
    owner: Annotated[str | None, typer.Option(help="Only jobs this user submitted")] = None,
    since: Annotated[
        str | None, typer.Option(help="Submitted since: ISO 8601 time or an age (30m, 2h, 7d)")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Submitted before: ISO 8601 time or an age")] = None,
    kind: Annotated[str | None, typer.Option(help="batch, train or replica")] = None,
) -> None:
    """Jobs you may read, newest first, a page at a time (with the total that match)."""
    fmt = out.check_format(output, as_json)
    pages = paging.Paging(limit, page, cursor, all_)
    filters: dict[str, Any] = {
        "state": state or None,
        "name": name,
        "array": array,
        "region": region,
        "label": label,
        "owner": owner,
        "since": _moment(since, "--since"),
        "until": _moment(until, "--until"),
        "kind": kind,
    }
    with client() as api:
        result = pages.fetch(api, "/v1/jobs", **filters)
    pages.emit(result, COLUMNS, "Jobs", fmt, wide=wide)


_AGE = re.compile(r"^(\d{1,9})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _moment(value: str | None, option: str) -> str | None:
    """An ISO 8601 time as given (the server checks it), or an age like ``2h`` made one."""
    if value is None:
        return None
    age = _AGE.match(value.strip())
    if age is None:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(
                f"{option} takes an ISO 8601 time or an age like 30m, 2h, 7d; got {value!r}"
            ) from None
        return value
    seconds = int(age[1]) * _UNIT_S[age[2]]
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


@app.command("show")
def show(
    job_id: Annotated[str | None, typer.Argument(help="A job or array id, or a prefix of one")] = None,
    array: Annotated[str | None, typer.Option(help="An array id (or prefix): the array as a whole")] = None,
    as_json: bool = JsonOpt,
    output: str | None = OutputOpt,
    wide: bool = WideOpt,
) -> None:
    """Show a job (or an array) as the API returns it (with why it is pending, and its energy)."""
    with client() as api:
        job = api.job(_target(job_id, array))
    if array is not None and job.get("kind") != "array":
        raise InvalidInput(f"{array} names a job, not an array")
    energy = job["energy"]
    row = {**job, "kwh": energy["kwh"], "kgco2e": energy["kgco2e"], "energy_source": energy["source"]}
    extra = ["tasks", "states"] if job.get("kind") == "array" else []
    fields = [*COLUMNS, *extra, "walltime_s", "kwh", "kgco2e", "energy_source"]
    emit_one(row, fields, output, as_json, wide=wide, raw=job)


def _target(job_id: str | None, array: str | None) -> str:
    if (job_id is None) == (array is None):
        raise InvalidInput("name a job (JOB_ID) or an array (--array ID), one of the two")
    return job_id or array or ""


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
                if offset == 0 and not stderr:
                    _say_why_empty(api, job_id)
                return
            if not text:
                time.sleep(0.5)


def _say_why_empty(api: Client, job_id: str) -> None:
    """An empty stdout of a job that failed: point at where its words went (on stderr, so
    that what stdout holds stays the job's own output)."""
    job = api.job(job_id)
    code = job.get("exit_code")
    if job.get("state") not in TERMINAL or code in (None, 0):
        return
    why = " (127: the command was not found)" if code == 127 else ""
    typer.echo(
        f"(no output on stdout; the job ended {job['state']} with exit code {code}{why}: "
        f"`enclave job logs {job_id} --stderr` shows what it wrote there)",
        err=True,
    )


@app.command("cancel")
def cancel(
    job_id: Annotated[str | None, typer.Argument(help="A job or array id, or a prefix of one")] = None,
    array: Annotated[str | None, typer.Option(help="An array id (or prefix): cancel all its tasks")] = None,
) -> None:
    """Cancel a job, or every task of an array that has not ended, in one request."""
    ref = _target(job_id, array)
    with client() as api:
        if array is not None and api.job(ref).get("kind") != "array":
            raise InvalidInput(f"{array} names a job, not an array")
        result = api.cancel_job(ref)
    if result.get("kind") == "array":
        typer.echo(f"cancel requested for {result['cancelled']} of {result['tasks']} tasks")
    else:
        typer.echo("cancel requested")


@app.command("watch")
def watch(job_id: str, interval: Annotated[float, typer.Option(help="Seconds between polls")] = 0.5) -> None:
    """Show live progress until the job ends: state, time run and walltime left, the last lines
    of its output. Exits with the job's exit code (1 if none)."""
    from rich.live import Live  # watch alone uses it: not imported by every `enclave job` call

    tail = _Tail()
    with client() as api:
        job = api.job(job_id)
        with Live(_watched(job, tail), transient=False, refresh_per_second=8) as live:
            while job["state"] not in TERMINAL:
                time.sleep(interval)
                job = api.job(job_id)
                tail.read(api, job)
                live.update(_watched(job, tail))
            tail.read(api, job)
            live.update(_watched(job, tail, spinning=False))
    code = job["exit_code"]
    raise typer.Exit(
        0 if job["state"] == "completed" else (code if isinstance(code, int) and code > 0 else 1)
    )


class _Tail:
    """The last lines a job wrote on stdout, read as it runs (from where the last read ended)."""

    LINES = 3

    def __init__(self) -> None:
        self.offset = 0
        self.text = ""

    def read(self, api: Client, job: dict[str, Any]) -> None:
        if job["state"] not in ("running", *TERMINAL):
            return
        chunk, self.offset = api.job_logs(job["id"], "stdout", self.offset)
        self.text = (self.text + chunk)[-8192:]

    def lines(self) -> list[str]:
        return self.text.rstrip("\n").splitlines()[-self.LINES :] if self.text.strip() else []


def _watched(job: dict[str, Any], tail: _Tail, spinning: bool = True) -> Group:
    head = _plain_line(job)
    ran = _ran_s(job)
    if ran is not None:
        left = job["walltime_s"] - ran
        head += f", ran {duration_s(ran)}" + (
            f", {duration_s(max(0.0, left))} of walltime left" if spinning else ""
        )
    from rich.spinner import Spinner

    out: list[Any] = [Spinner("dots", text=Text(head)) if spinning else Text(head)]
    out += [Text(f"  │ {line}", style="dim") for line in tail.lines()]
    return Group(*out)


def _ran_s(job: dict[str, Any]) -> float | None:
    """Seconds the job has run (to its end, or to now)."""
    if not job.get("started_at"):
        return None
    start = datetime.fromisoformat(job["started_at"])
    end = datetime.fromisoformat(job["ended_at"]) if job.get("ended_at") else datetime.now(UTC)
    return max(0.0, (end - start).total_seconds())


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
