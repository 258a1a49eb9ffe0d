"""`enclave train ...`: training jobs that turn datasets into a registered model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from enclave.cli import jobs, output, paging
from enclave.cli.common import JsonOpt, OutputOpt, WideOpt, client, console, emit_one, print_json
from enclave.errors import EnclaveError, InvalidInput

if TYPE_CHECKING:
    from enclave.client import Client

app = typer.Typer(
    help="Training jobs: submit a script over datasets, follow its metrics.", no_args_is_help=True
)
COLUMNS = ["id", "name", "label", "state", "model_name", "runtime", "model_id", "outcome"]
OUTCOME_GRACE_S = 120.0  # how long after its job ends a model may take to register (packing, encrypting)


def _hparams(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; a value is JSON when it parses as JSON, else the string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--hp takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _flat(job: dict[str, Any]) -> dict[str, Any]:
    return {**job, **{k: v for k, v in job["training"].items() if k != "metrics"}}


def _point(point: dict[str, Any]) -> str:
    rest = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items() if k != "step"
    )
    return f"step {point['step']} {rest}".rstrip()


@app.command("submit")
def submit(
    script: Annotated[
        Path, typer.Argument(help="The training script (a Python file, uploaded as an artifact)")
    ],
    name: Annotated[str, typer.Option(help="Name of the model it registers")],
    runtime: Annotated[str, typer.Option(help="sklearn, pytorch or sentence-embeddings")],
    dataset: Annotated[list[str] | None, typer.Option(help="Dataset id to train on (repeatable)")] = None,
    base_model: Annotated[list[str] | None, typer.Option(help="Model id to start from (repeatable)")] = None,
    hp: Annotated[
        list[str] | None,
        typer.Option(help="Hyperparameter KEY=VALUE (repeatable; VALUE parsed as JSON if it can)"),
    ] = None,
    arg: Annotated[list[str] | None, typer.Option(help="Argument passed to the script (repeatable)")] = None,
    cpus: Annotated[int, typer.Option(help="CPUs")] = 1,
    memory_mb: Annotated[int, typer.Option(help="Memory, MB")] = 2048,
    gpus: Annotated[int, typer.Option(help="GPUs")] = 0,
    walltime_s: Annotated[int, typer.Option(help="Walltime limit, seconds")] = 3600,
    region: Annotated[str | None, typer.Option(help="Region (default: auto)")] = None,
    qos: Annotated[str, typer.Option(help="low, normal, high or urgent")] = "normal",
    job_name: Annotated[str | None, typer.Option(help="Job name (default: train-MODEL_NAME)")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow its metrics until it ends, then print the model id")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls with --wait")] = 0.5,
) -> None:
    """Upload SCRIPT and submit a training job; prints the job id (and with --wait the model id)."""
    if not script.is_file():
        raise InvalidInput(f"no such file: {script}")
    spec: dict[str, Any] = {
        "name": job_name or f"train-{name}",
        "model_name": name,
        "runtime": runtime,
        "datasets": dataset or [],
        "base_models": base_model or [],
        "hyperparameters": _hparams(hp or []),
        "args": arg or [],
        "walltime_s": walltime_s,
        "resources": {"nodes": 1, "cpus_per_node": cpus, "memory_mb": memory_mb, "gpus_per_node": gpus},
        "region": region,
        "qos": qos,
    }
    with client() as api:
        spec["script"] = api.put_artifact(script)["id"]
        try:
            job = api.submit_training(spec)
        except EnclaveError:
            api.delete_artifact(spec["script"])  # refused: do not leave the uploaded script behind
            raise
        typer.echo(job["id"])
        if wait:
            _wait(api, job["id"], interval)


def _wait(api: Client, job_id: str, interval: float) -> None:
    """Show the latest metrics until the job ends and its outcome is known; exit 1 without a model."""
    last: dict[str, Any] | None = None
    job = api.training(job_id)
    ended_at: float | None = None

    def line() -> Text:
        head = f"{job['name']} [{job_id[:8]}] {job['state']}"
        if job.get("reason"):
            head += f" ({job['reason']})"
        return Text(f"{head}  {_point(last)}" if last else head)

    err = Console(stderr=True)
    with Live(Spinner("dots", text=line()), console=err, refresh_per_second=8) as live:
        while True:
            points = api.training_metrics(job_id, last["step"] if last else -1)["metrics"]
            if points:
                last = points[-1]
            job = api.training(job_id)
            if job["training"]["outcome"] is not None:
                break
            if job["state"] in jobs.TERMINAL:
                ended_at = ended_at or time.monotonic()
                if time.monotonic() - ended_at > OUTCOME_GRACE_S:
                    break
            live.update(Spinner("dots", text=line()))
            time.sleep(interval)
        live.update(line())
    if not err.is_terminal:
        err.line()
    model_id = job["training"]["model_id"]
    if model_id:
        typer.echo(model_id)
        return
    outcome = job["training"]["outcome"] or f"the job ended {job['state']}; no model registered yet"
    typer.echo(f"error: {outcome}", err=True)
    tail = _stderr_tail(api, job_id)
    if tail:  # the cause is usually there: the script's own traceback
        typer.echo(
            f"--- the job's stderr, last lines (all: enclave train logs {job_id} --stderr) ---", err=True
        )
        typer.echo(tail, err=True)
    raise typer.Exit(1)


def _stderr_tail(api: Client, job_id: str, lines: int = 20) -> str:
    text, offset = "", 0
    while True:  # the log comes in chunks; keep only the end
        chunk, offset = api.job_logs(job_id, "stderr", offset)
        if not chunk:
            break
        text = (text + chunk)[-64_000:]
    return "\n".join(text.rstrip().splitlines()[-lines:])


paging.list_command(
    app,
    "/v1/training",
    COLUMNS,
    "Training jobs",
    "Training jobs you may read: state, the model they register, its id once registered; newest first, a page at a time.",
    flat=_flat,
)


@app.command("show")
def show(job_id: str, as_json: bool = JsonOpt, output: str | None = OutputOpt, wide: bool = WideOpt) -> None:
    """Show a training job: the job, its inputs and what it registered."""
    with client() as api:
        job = api.training(job_id)
    row = {**_flat(job), "hyperparameters": json.dumps(job["training"]["hyperparameters"], sort_keys=True)}
    fields = ["id", "name", "label", "state", "reason", "region", "model_name", "runtime", "model_id"]
    fields += ["outcome", "script", "datasets", "base_models", "hyperparameters"]
    emit_one(row, fields, output, as_json, wide=wide, raw=job)


def _metrics_table(points: list[dict[str, Any]], title: str) -> Table:
    """Step, then each metric to 4 significant digits, as many whole columns as the terminal
    holds (a title note names the others; `--json` has them all)."""
    keys = ["step", *dict.fromkeys(k for p in points for k in p if k != "step")]
    table, hidden = output.table(points, keys, title, output.table_width(console))
    if hidden:
        table.title = f"{title}; not shown at this width: {', '.join(hidden)}"
    return table


@app.command("metrics")
def metrics(
    job_id: str,
    as_json: bool = JsonOpt,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Poll until the job ends (with --json: one JSON point per line)"),
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls with --follow")] = 1.0,
) -> None:
    """The metric points a training job wrote (live while it runs)."""
    with client() as api:
        if not follow:
            data = api.training_metrics(job_id)
            if as_json:
                print_json(data)
            else:
                console.print(_metrics_table(data["metrics"], f"Metrics of {job_id[:8]} ({data['state']})"))
            return
        if as_json:
            for batch, _state in _follow(api, job_id, interval):
                for p in batch:
                    typer.echo(json.dumps(p, sort_keys=True))
            return
        points: list[dict[str, Any]] = []
        state = ""
        with Live(
            _metrics_table(points, f"Metrics of {job_id[:8]}"), console=console, auto_refresh=False
        ) as live:
            for batch, state in _follow(api, job_id, interval):
                points += batch
                if console.is_terminal:
                    live.update(_metrics_table(points, f"Metrics of {job_id[:8]} ({state})"), refresh=True)
            live.update(_metrics_table(points, f"Metrics of {job_id[:8]} ({state})"), refresh=True)
        if not console.is_terminal:
            console.line()


def _follow(api: Client, job_id: str, interval: float) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """New metric points and the job's state, poll after poll, until the job has ended."""
    since = -1
    while True:
        data = api.training_metrics(job_id, since)
        if data["metrics"]:
            since = data["metrics"][-1]["step"]
        yield data["metrics"], data["state"]
        if data["state"] in jobs.TERMINAL:
            return
        time.sleep(interval)


@app.command("logs")
def logs(
    job_id: str,
    stream: Annotated[str, typer.Option(help="stdout or stderr")] = "stdout",
    stderr: Annotated[bool, typer.Option("--stderr", help="Show stderr (as `job logs --stderr`)")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends")] = False,
) -> None:
    """A training job's output (the job log)."""
    if stream not in ("stdout", "stderr"):
        raise InvalidInput(f"--stream is stdout or stderr, not {stream!r}")
    jobs.logs(job_id, stderr=stderr or stream == "stderr", follow=follow)


@app.command("cancel")
def cancel(job_id: str) -> None:
    """Cancel a training job (no model is registered)."""
    jobs.cancel(job_id)
