"""`enclave artifact ...`: labelled, encrypted objects."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from enclave.cli import paging
from enclave.cli.common import JsonOpt, OutputOpt, WideOpt, client, emit_one, write_out
from enclave.errors import InvalidInput

app = typer.Typer(
    help="Labelled artifacts (stored encrypted, read through the policy gate).", no_args_is_help=True
)


@app.command("put")
def put(
    file: Path,
    name: Annotated[str | None, typer.Option(help="Name (default: the file name)")] = None,
    project: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Upload FILE at the token's session label; prints the new artifact's id."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn  # on use: start-up

    if not file.is_file():
        raise InvalidInput(f"no such file: {file}")
    size = file.stat().st_size
    with (
        client() as api,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=True,
            disable=not sys.stderr.isatty(),
            console=None,
        ) as bar,
    ):
        task = bar.add_task(f"uploading {file.name}", total=size)
        art = api.put_artifact(file, name, project, progress=lambda n: bar.advance(task, n))
    typer.echo(art["id"])


@app.command("get")
def get(
    artifact_id: str,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here (default: stdout)")
    ] = None,
) -> None:
    """Download an artifact's content (to stdout, or to --output)."""
    with client() as api:
        write_out(output, lambda fh: api.download(artifact_id, fh))


paging.list_command(
    app,
    "/v1/artifacts",
    ["id", "name", "label", "agency", "size_bytes", "created_at"],
    "Artifacts",
    "The artifacts you may read (your agency's and those shared with it), newest first, a page at a time.",
    where=("kind", typer.Option(None, "--kind", help="Only this kind (e.g. dataset, model)")),
)


@app.command("show")
def show(
    artifact_id: str, as_json: bool = JsonOpt, output: str | None = OutputOpt, wide: bool = WideOpt
) -> None:
    """Show an artifact: label, owner, size, checksum, what it derives from."""
    with client() as api:
        art = api.artifact(artifact_id)
    fields = ["id", "name", "label", "agency", "size_bytes", "sha256", "derived_from", "created_at"]
    emit_one(art, fields, output, as_json, wide=wide)


@app.command("rm")
def rm(artifact_id: str) -> None:
    """Soft-delete an artifact (audited)."""
    with client() as api:
        api.delete_artifact(artifact_id)
    typer.echo("deleted")


@app.command("share")
def share(
    artifact_id: str, with_: Annotated[str, typer.Option("--with", help="Agency to share with")]
) -> None:
    """Let another agency read an artifact (at its label; audited)."""
    with client() as api:
        api.share_artifact(artifact_id, with_)
    typer.echo(f"shared with {with_}")
