"""`enclave endpoint ...`: registered models served as replicas behind the OpenAI-compatible gateway."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from enclave.cli import paging
from enclave.cli.common import JsonOpt, OutputOpt, WideOpt, client, emit_one, print_json, print_table
from enclave.errors import EnclaveError, InvalidInput

app = typer.Typer(
    help="Endpoints: deploy a model as replicas, scale them, call them at <server>/v1 (OpenAI API).",
    no_args_is_help=True,
)
COLUMNS = ["name", "label", "state", "runtime", "region", "ready", "desired", "min", "max", "model"]


def _flat(ep: dict[str, Any]) -> dict[str, Any]:
    r = ep["replicas"]
    return {**ep, "ready": r["ready"], "desired": r["desired"], "min": r["min"], "max": r["max"]}


def _line(ep: dict[str, Any]) -> str:
    r = ep["replicas"]
    text = f"{ep['name']} {ep['state']}: {r['ready']}/{r['desired']} replicas ready"
    return f"{text} ({ep['reason']})" if ep.get("reason") else text


def _last_exit(last: dict[str, Any] | None) -> str | None:
    """How the last replica that ended did, with its job id (for `enclave job logs --stderr`)."""
    return None if not last else f"{last['summary']} (replica job {last['job']})"


def _spinner(ep: dict[str, Any]) -> Spinner:
    return Spinner("dots", text=Text(_line(ep)))


@app.command("deploy")
def deploy(
    model: Annotated[str, typer.Argument(help="Id of a registered model")],
    name: Annotated[str, typer.Option(help="Endpoint name (the `model` of OpenAI calls)")],
    region: Annotated[
        str | None, typer.Option(help="Region (default: the least classified accredited)")
    ] = None,
    replicas: Annotated[int, typer.Option(help="Replicas to start")] = 1,
    min_: Annotated[int | None, typer.Option("--min", help="Autoscaling floor (default: --replicas)")] = None,
    max_: Annotated[
        int | None, typer.Option("--max", help="Autoscaling ceiling (default: --replicas)")
    ] = None,
    cpus: Annotated[int, typer.Option(help="CPUs per replica")] = 1,
    memory_mb: Annotated[int, typer.Option(help="Memory per replica, MB")] = 3072,
    pii: Annotated[str, typer.Option(help="off, or mask: emails, phones and SSNs masked")] = "off",
    log_content: Annotated[
        bool, typer.Option("--log-content", help="Audit full prompts and answers, not only their hashes")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it serves (state ready)")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits before giving up")] = 300.0,
) -> None:
    """Deploy MODEL as an endpoint at the session label; prints the endpoint name."""
    spec: dict[str, Any] = {
        "model": model,
        "name": name,
        "replicas": replicas,
        "cpus_per_replica": cpus,
        "memory_mb": memory_mb,
        "pii": pii,
        "log_content": log_content,
    }
    for key, value in (("region", region), ("min_replicas", min_), ("max_replicas", max_)):
        if value is not None:
            spec[key] = value
    with client() as api:
        ep = api.deploy_endpoint(spec)
        if wait:
            deadline = time.monotonic() + timeout
            with Live(_spinner(ep), console=Console(stderr=True), transient=True) as live:
                while ep["state"] != "ready":
                    if ep["state"] == "failed":
                        raise EnclaveError(f"endpoint {name} failed: {ep.get('reason') or 'no reason given'}")
                    if time.monotonic() > deadline:
                        raise EnclaveError(f"endpoint {name} not ready after {timeout:g} s: {_line(ep)}")
                    time.sleep(0.5)
                    ep = api.endpoint(name)
                    live.update(_spinner(ep))
    typer.echo(ep["name"])


paging.list_command(
    app,
    "/v1/endpoints",
    COLUMNS,
    "Endpoints",
    "Endpoints you may read: state, replicas ready of desired, model; newest first, a page at a time.",
    flat=_flat,
)


@app.command("show")
def show(name: str, as_json: bool = JsonOpt, output: str | None = OutputOpt, wide: bool = WideOpt) -> None:
    """Show an endpoint: state, replicas (and their jobs), settings."""
    with client() as api:
        ep = api.endpoint(name)
    r = ep["replicas"]
    row = {
        **ep,
        "replicas": f"{r['ready']} ready / {r['desired']} desired (min {r['min']}, max {r['max']})",
        "in_flight": r["in_flight"],
        "settings": dict(sorted(ep["settings"].items())),
        "last_exit": _last_exit(ep.get("last_exit")),
    }
    fields = ["name", "label", "state", "reason", "model", "runtime", "region", "agency", "replicas"]
    fields += ["in_flight", "restarts", "settings", "last_exit"]
    emit_one(row, fields, output, as_json, wide=wide, raw=ep)
    if r["jobs"] and not (as_json or output not in (None, "table", "wide")):
        print_table(r["jobs"], ["id", "state", "reason"], "Replica jobs", wide=wide)


@app.command("scale")
def scale(
    name: str,
    replicas: Annotated[int | None, typer.Option(help="Replicas wanted now")] = None,
    min_: Annotated[int | None, typer.Option("--min", help="Autoscaling floor")] = None,
    max_: Annotated[int | None, typer.Option("--max", help="Autoscaling ceiling")] = None,
) -> None:
    """Change an endpoint's replica count or autoscaling bounds."""
    if replicas is None and min_ is None and max_ is None:
        raise InvalidInput("give at least one of --replicas, --min, --max")
    with client() as api:
        ep = api.scale_endpoint(name, replicas, min_, max_)
    r = ep["replicas"]
    typer.echo(f"{ep['name']}: {r['desired']} replicas (min {r['min']}, max {r['max']})")


@app.command("delete")
def delete(name: str) -> None:
    """Stop an endpoint's replicas and remove it (audited)."""
    with client() as api:
        api.delete_endpoint(name)
    typer.echo("deleted")


@app.command("chat")
def chat(
    name: str,
    message: Annotated[str | None, typer.Argument(help="The user message (default: read stdin)")] = None,
    system: Annotated[str | None, typer.Option(help="A system message before it")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="At most this many tokens in the answer")] = None,
    as_json: bool = JsonOpt,
) -> None:
    """Ask an endpoint (OpenAI chat completions through the gateway); prints the answer."""
    text = message if message is not None else typer.get_text_stream("stdin").read()
    if not text.strip():
        raise InvalidInput("nothing to send: give a message or pipe one in")
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}
    ]
    extra = {"max_tokens": max_tokens} if max_tokens is not None else {}
    with client() as api:
        answer = api.chat(name, messages, **extra)
    if as_json:
        print_json(answer)
        return
    for choice in answer.get("choices") or []:
        typer.echo((choice.get("message") or {}).get("content") or "")


@app.command("embed")
def embed(
    name: str,
    texts: Annotated[
        list[str] | None, typer.Argument(help="Texts to embed (default: one per stdin line)")
    ] = None,
    as_json: bool = JsonOpt,
) -> None:
    """Embed texts with an endpoint; prints one JSON vector per text (or the whole answer)."""
    inputs = texts or [line for line in typer.get_text_stream("stdin").read().splitlines() if line.strip()]
    if not inputs:
        raise InvalidInput("nothing to embed: give texts or pipe them in, one per line")
    with client() as api:
        answer = api.embeddings(name, inputs)
    if as_json:
        print_json(answer)
        return
    for item in sorted(answer.get("data") or [], key=lambda d: d.get("index", 0)):
        typer.echo(json.dumps(item.get("embedding")))


@app.command("logs")
def logs(
    name: str,
    stderr: Annotated[bool, typer.Option("--stderr", help="Show stderr instead of stdout")] = False,
    replica: Annotated[
        str | None,
        typer.Option(help="This replica job (default: the newest running, else the last that ended)"),
    ] = None,
) -> None:
    """A replica's output: the newest running one, or the last that ended (why it did)."""
    from enclave.cli import jobs

    with client() as api:
        ep = api.endpoint(name)
    running = [j["id"] for j in ep["replicas"]["jobs"] if j["state"] == "running"]
    target = replica or (running[-1] if running else (ep.get("last_exit") or {}).get("job"))
    if target is None:
        raise InvalidInput(f"endpoint {name} has no replica that ran yet")
    typer.echo(f"(replica job {target})", err=True)
    jobs.logs(target, stderr=stderr, follow=False)
