"""`enclave dataset ...`: versioned, labelled datasets (artifacts of kind `dataset`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from enclave.cli import paging
from enclave.cli.common import JsonOpt, OutputOpt, WideOpt, client, emit_one, write_out
from enclave.errors import InvalidInput

app = typer.Typer(
    help="Datasets: versioned, labelled training data (an upload under an existing name is its next version).",
    no_args_is_help=True,
)
COLUMNS = ["id", "name", "version", "label", "agency", "size_bytes", "created_at"]


@contextmanager
def upload_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A transient upload progress bar on stderr (when it is a terminal); yields the advance hook."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn  # on use: start-up

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
        disable=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


@app.command("upload")
def upload(
    file: Path,
    name: Annotated[str | None, typer.Option(help="Name (default: the file name)")] = None,
    project: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option(help="A line on what the data is")] = None,
) -> None:
    """Upload FILE as a dataset at the token's session label; prints the new dataset's id."""
    if not file.is_file():
        raise InvalidInput(f"no such file: {file}")
    with client() as api, upload_bar(f"uploading {file.name}", file.stat().st_size) as advance:
        ds = api.upload_dataset(file, name, project, description, progress=advance)
    typer.echo(ds["id"])


paging.list_command(
    app,
    "/v1/datasets",
    COLUMNS,
    "Datasets",
    "The datasets you may read, every version, newest first, a page at a time.",
)


@app.command("show")
def show(
    dataset_id: str, as_json: bool = JsonOpt, output: str | None = OutputOpt, wide: bool = WideOpt
) -> None:
    """Show a dataset version: label, size, checksum, description."""
    with client() as api:
        ds = api.dataset(dataset_id)
    description = (ds.get("metadata") or {}).get("description")
    row = {**ds, "description": description}
    emit_one(row, [*COLUMNS, "sha256", "description"], output, as_json, wide=wide, raw=ds)


@app.command("download")
def download(
    dataset_id: str,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here (default: stdout)")
    ] = None,
) -> None:
    """Download a dataset's content (checked against its checksum)."""
    with client() as api:
        write_out(output, lambda fh: api.download_dataset(dataset_id, fh))


@app.command("delete")
def delete(dataset_id: str) -> None:
    """Soft-delete a dataset version (audited)."""
    with client() as api:
        api.delete_dataset(dataset_id)
    typer.echo("deleted")
