"""`enclave model ...`: the model registry (labelled models with lineage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from enclave.cli import paging
from enclave.cli.common import JsonOpt, OutputOpt, WideOpt, client, emit_one
from enclave.cli.datasets import upload_bar
from enclave.errors import InvalidInput

app = typer.Typer(
    help="The model registry: models labelled from their lineage (datasets, base models, job).",
    no_args_is_help=True,
)
COLUMNS = ["id", "name", "version", "label", "runtime", "task", "size_bytes", "created_at"]
UPSTREAM = "openai-upstream"


def _upstream_archive(url: str | None, model: str | None) -> bytes:
    from enclave import archive  # tarfile, lzma...: only when registering

    if not url or not model:
        raise InvalidInput(f"--runtime {UPSTREAM} without PATH needs --upstream-url and --upstream-model")
    manifest = {
        "format": "enclave-model/1",
        "runtime": UPSTREAM,
        "upstream_url": url,
        "upstream_model": model,
    }
    return archive.pack_bytes({archive.MANIFEST: json.dumps(manifest, indent=2).encode()})


@app.command("register")
def register(
    name: Annotated[str, typer.Option(help="Model name (registering it again: next version)")],
    path: Annotated[Path | None, typer.Argument(help="Model directory or file (packed as tar.gz)")] = None,
    runtime: Annotated[
        str | None, typer.Option(help="sklearn, pytorch, sentence-embeddings or openai-upstream")
    ] = None,
    builtin: Annotated[
        str | None, typer.Option(help="Register a model shipped with Enclave instead (minilm)")
    ] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="Dataset it was trained on (repeatable)")] = None,
    base_model: Annotated[list[str] | None, typer.Option(help="Model it derives from (repeatable)")] = None,
    job: Annotated[str | None, typer.Option(help="Job that produced it")] = None,
    label: Annotated[
        str | None, typer.Option(help="The label you expect; refused if the server computes another")
    ] = None,
    upstream_url: Annotated[str | None, typer.Option(help=f"With --runtime {UPSTREAM}: base URL")] = None,
    upstream_model: Annotated[str | None, typer.Option(help=f"With --runtime {UPSTREAM}: model name")] = None,
) -> None:
    """Register a model at the session label; prints its id."""
    if builtin is not None:
        if path is not None or dataset or base_model or job or upstream_url or upstream_model:
            raise InvalidInput("--builtin takes no PATH, lineage or upstream options")
        with client() as api:
            typer.echo(api.register_builtin_model(name, builtin)["id"])
        return
    if runtime is None:
        raise InvalidInput("--runtime is required (or --builtin)")
    source: Path | bytes
    if path is not None:
        if not path.exists():
            raise InvalidInput(f"no such file or directory: {path}")
        if upstream_url or upstream_model:
            raise InvalidInput("--upstream-url/--upstream-model describe a model without PATH")
        source = path
    elif runtime == UPSTREAM:
        source = _upstream_archive(upstream_url, upstream_model)
    else:
        raise InvalidInput(f"PATH is required for runtime {runtime}")
    with client() as api, upload_bar(f"registering {name}", None) as advance:
        model = api.register_model(
            source,
            name,
            runtime,
            datasets=dataset,
            base_models=base_model,
            job=job,
            label=label,
            progress=advance,
        )
    typer.echo(model["id"])


paging.list_command(
    app,
    "/v1/registry/models",
    COLUMNS,
    "Models",
    "The models you may read: name, version, label, runtime; newest first, a page at a time.",
)


def _row(model: dict[str, Any]) -> dict[str, Any]:
    lineage = model.get("lineage") or {}
    return {
        **model,
        "job": lineage.get("job"),
        "datasets": lineage.get("datasets"),
        "base_models": lineage.get("base_models"),
    }


@app.command("show")
def show(
    model_id: str, as_json: bool = JsonOpt, output: str | None = OutputOpt, wide: bool = WideOpt
) -> None:
    """Show a model with its lineage and metrics."""
    with client() as api:
        model = api.model(model_id)
    fields = [*COLUMNS, "framework", "metrics", "job", "datasets", "base_models"]
    emit_one(_row(model), fields, output, as_json, wide=wide, raw=model)


@app.command("delete")
def delete(model_id: str) -> None:
    """Soft-delete a model (audited)."""
    with client() as api:
        api.delete_model(model_id)
    typer.echo("deleted")
