"""What every command shares: where the server is, which token to use, how to print."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from enclave.client import DEFAULT_URL, Client
from enclave.errors import NotAuthenticated

console = Console()
SESSION_TOKEN_FILE = "session.token"
ADMIN_TOKEN_FILE = "admin.token"

JsonOpt = typer.Option(False, "--json", help="Print JSON instead of a table.")


def home() -> Path:
    return Path(os.environ.get("ENCLAVE_HOME", "~/.enclave")).expanduser()


def server_url() -> str:
    return os.environ.get("ENCLAVE_URL", DEFAULT_URL)


def token() -> str:
    """ENCLAVE_TOKEN, else the token saved by `enclave login`, else the bootstrap admin's."""
    env = os.environ.get("ENCLAVE_TOKEN")
    if env:
        return env.strip()
    for name in (SESSION_TOKEN_FILE, ADMIN_TOKEN_FILE):
        path = home() / name
        if path.is_file():
            return path.read_text().strip()
    raise NotAuthenticated("no token: set ENCLAVE_TOKEN, run `enclave login`, or start `enclave up` once")


def client(authenticated: bool = True) -> Client:
    return Client(server_url(), token() if authenticated else None)


def write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


def read_password(prompt: str, from_stdin: bool) -> str:
    if from_stdin:
        return typer.get_text_stream("stdin").readline().rstrip("\n")
    return str(typer.prompt(prompt, hide_input=True))


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, no_wrap=col == "id" or col.endswith("_id"))
    for row in rows:
        table.add_row(*(_cell(row.get(col)) for col in columns))
    console.print(table)
    console.print(f"{len(rows)} item(s)", style="dim")


def _cell(value: Any) -> Text:
    """Cells are plain text, never rich markup: a name may hold brackets."""
    if value is None:
        return Text("-")
    if isinstance(value, list):
        return Text(", ".join(str(v) for v in value))
    if isinstance(value, dict):
        return Text(json.dumps(value, sort_keys=True))
    return Text(str(value))


def write_out(output: Path | None, write: Callable[[BinaryIO], object]) -> None:
    """Stream to stdout, or to ``output`` through a ``.part`` file renamed only when complete."""
    if output is None:
        write(sys.stdout.buffer)
        return
    tmp = output.with_name(output.name + ".part")
    try:
        with tmp.open("wb") as fh:
            write(fh)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
