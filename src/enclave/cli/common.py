"""What every command shares: where the server is, which token to use, how to print.

The HTTP client (httpx) is imported when a command first talks to the server, not when the
CLI starts: `enclave --help` and local commands do not pay for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import typer
from rich.console import Console

from enclave.cli import output as out
from enclave.errors import NotAuthenticated

if TYPE_CHECKING:
    from enclave.client import Client

console = Console()
SESSION_TOKEN_FILE = "session.token"
ADMIN_TOKEN_FILE = "admin.token"
DEFAULT_URL = "http://127.0.0.1:8080"  # enclave.client.DEFAULT_URL, without importing httpx

# metavar="": a flag takes no value, and the help must not show one (typer prints `<bool>`).
JsonOpt = typer.Option(False, "--json", help="Print JSON (same as -o json).", metavar="")
OutputOpt = typer.Option(
    None, "--output", "-o", help="table, wide, json, yaml, csv or ids (one id per line).", metavar="FORMAT"
)
WideOpt = typer.Option(False, "--wide", help="Show every column, however wide the table.", metavar="")


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
    from enclave.cli.lazy import importing

    with importing():
        from enclave.client import Client

        return Client(server_url(), token() if authenticated else None)


def write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # a file that was there keeps its mode through O_CREAT: not this one
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


def read_password(prompt: str, from_stdin: bool) -> str:
    if from_stdin:
        return typer.get_text_stream("stdin").readline().rstrip("\n")
    return str(typer.prompt(prompt, hide_input=True))


def print_json(value: Any) -> None:
    out.machine("json", value, [], [])


def print_table(
    rows: list[dict[str, Any]], columns: list[str], title: str | None = None, *, wide: bool = False
) -> None:
    """A table fitting the terminal (see enclave.cli.output). One row and no title is how every
    `show` calls it: that object is printed as a key/value view instead, nothing cut."""
    if len(rows) == 1 and title is None:
        print_object(rows[0], columns)
    else:
        out.print_rows(console, rows, columns, title, wide)


def print_object(obj: dict[str, Any], fields: Sequence[str] | None = None) -> None:
    """One object as `field  value` lines (all its fields when ``fields`` is None)."""
    console.print(out.key_values(obj, list(obj) if fields is None else fields), crop=False)


def emit(
    rows: list[dict[str, Any]],
    columns: list[str],
    title: str,
    output: str | None,
    as_json: bool = False,
    *,
    wide: bool = False,
    raw: Any = None,
) -> None:
    """A list as asked by `-o`/`--json`/`--wide`: json and yaml print ``raw`` (the API's
    objects, default ``rows``); csv and ids print ``rows``, every column."""
    fmt = out.check_format(output, as_json)
    if fmt in ("table", "wide"):
        print_table(rows, columns, title, wide=wide or fmt == "wide")
    else:
        out.machine(fmt, rows if raw is None else raw, rows, columns)


def emit_one(
    obj: dict[str, Any],
    fields: list[str],
    output: str | None,
    as_json: bool = False,
    *,
    wide: bool = False,
    raw: Any = None,
) -> None:
    """One object as asked: a key/value view of ``fields`` (`--wide`: every field), or a
    machine format of ``raw`` (default ``obj``)."""
    fmt = out.check_format(output, as_json)
    if fmt in ("table", "wide"):
        print_object(obj, None if wide or fmt == "wide" else fields)
    else:
        out.machine(fmt, obj if raw is None else raw, [obj], fields)


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
