"""`enclave dataset ...`: versioned, labelled datasets (artifacts of kind `dataset`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from enclave.cli.common import JsonOpt, client, print_json, print_table, write_out
from enclave.errors import InvalidInput

app = typer.Typer(
    help="Datasets: versioned, labelled training data (an upload under an existing name is its next version).",
    no_args_is_help=True,
)
COLUMNS = ["id", "name", "version", "label", "agency", "size_bytes", "created_at"]


@contextmanager
def upload_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A transient upload progress bar on stderr (when it is a terminal); yields the advance hook."""
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


@app.command("list")
def list_(as_json: bool = JsonOpt) -> None:
    with client() as api:
        items = api.list_datasets()
    if as_json:
        print_json(items)
    else:
        print_table(items, COLUMNS, "Datasets")


@app.command("show")
def show(dataset_id: str, as_json: bool = JsonOpt) -> None:
    with client() as api:
        ds = api.dataset(dataset_id)
    if as_json:
        print_json(ds)
    else:
        description = (ds.get("metadata") or {}).get("description")
        print_table([{**ds, "description": description}], [*COLUMNS, "sha256", "description"])


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
