"""`enclave audit ...`: read and verify the tamper-evident log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from enclave.audit.chain import parse_public_key, public_key_text
from enclave.audit.log import load_or_create_key
from enclave.audit.sink import SinkError, read_sink, to_check
from enclave.cli import output as out
from enclave.cli.common import JsonOpt, OutputOpt, WideOpt, client, console, emit, print_json

MAX_SINK_CHECKPOINTS = 1000  # what the server takes in one verification

app = typer.Typer(help="The signed, hash-chained audit log.", no_args_is_help=True)


def _pubkey(value: str) -> str:
    """``--pubkey``: the key itself (``ed25519:<hex>``) or a file holding it or a PEM block."""
    path = Path(value).expanduser()
    text = path.read_text() if len(value) < 4096 and path.is_file() else value
    try:
        return public_key_text(parse_public_key(text))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pubkey") from None


def _broken(problem: str, seq: int | None = None) -> None:
    where = f" at record {seq}" if seq is not None else ""
    typer.echo(f"audit log BROKEN{where}: {problem}", err=True)
    raise typer.Exit(1)


@app.command("verify")
def verify(
    as_json: bool = JsonOpt,
    pubkey: Annotated[
        str | None,
        typer.Option(help="The public key recorded at the first start (ed25519:<hex>, or a file holding it)"),
    ] = None,
    sink: Annotated[
        list[Path] | None,
        typer.Option(help="An append-only checkpoint sink (file or syslog export); repeatable"),
    ] = None,
) -> None:
    """Exit 0 when the chain and its signed checkpoints are intact, 1 naming the first bad record.

    With --pubkey, a log or checkpoint signed by any other key is refused. With --sink, the
    chain must match the sink's checkpoints and reach the newest: a truncated tail, a
    rewritten one or an older checkpoint put back is reported."""
    pinned = _pubkey(pubkey) if pubkey is not None else None
    checkpoints: list[dict[str, Any]] = []
    for path in sink or []:
        try:
            entries = read_sink(path)
        except SinkError as exc:
            _broken(f"the sink {path} is damaged: {exc}")
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="--sink") from None
        if not entries:
            _broken(f"the sink {path} holds no checkpoint: the log's history cannot be checked against it")
        checkpoints.extend(cp.__dict__ for cp in to_check(entries, MAX_SINK_CHECKPOINTS))
    checkpoints = sorted(checkpoints, key=lambda cp: -cp["seq"])[:MAX_SINK_CHECKPOINTS]
    with client() as api:
        result = api.audit_verify(pinned, checkpoints)
    if as_json:
        print_json(result)
    elif result["ok"]:
        parts = [name for name, used in (("pinned key", pinned), ("sink", checkpoints)) if used]
        extra = f" ({', '.join(parts)})" if parts else ""
        console.print(f"audit log intact: {result['records']} records verified{extra}")
    if not result["ok"]:
        if as_json:
            raise typer.Exit(1)
        _broken(result["problem"], result["first_bad_seq"])


@app.command("pubkey")
def pubkey(
    key_file: Annotated[
        Path | None, typer.Option(help="Read a private key file instead of asking the server")
    ] = None,
) -> None:
    """Print the audit public key (what `verify --pubkey` takes)."""
    if key_file is not None:
        if not key_file.is_file():
            raise typer.BadParameter(f"{key_file} does not exist", param_hint="--key-file")
        typer.echo(public_key_text(load_or_create_key(key_file).public_key()))
        return
    with client() as api:
        typer.echo(api.audit_pubkey())


@app.command("list")
def list_(
    as_json: bool = JsonOpt,
    output: str | None = OutputOpt,
    wide: bool = WideOpt,
    after: Annotated[
        int, typer.Option(help="Only records after this sequence number (then oldest first)")
    ] = 0,
    limit: Annotated[int, typer.Option(min=1, max=5000)] = 100,
    event: Annotated[str | None, typer.Option()] = None,
    before: Annotated[
        int | None, typer.Option(min=1, help="Only records before this sequence number")
    ] = None,
    oldest_first: Annotated[
        bool,
        typer.Option("--oldest-first", help="Oldest first (the default is newest first, unless --after)"),
    ] = False,
) -> None:
    """The records you may read, newest first, a page at a time (with how many there are)."""
    fmt = out.check_format(output, as_json)
    order = "asc" if oldest_first or after else "desc"
    with client() as api:
        result = api.audit_page(after, limit, event, before=before, order=order, total=True)
    items = result["items"]
    columns = ["seq", "ts", "event", "outcome", "actor", "object_kind", "object_id", "object_label"]
    emit(items, columns, "Audit records", fmt, wide=wide)
    if fmt not in ("table", "wide"):
        return
    more = ""
    if result["next_before"] is not None:
        more = f"; older: --before {result['next_before']}"
    elif result["next_after"] is not None:
        more = f"; newer: --after {result['next_after']}"
    first = "oldest" if order == "asc" else "newest"
    console.print(
        f"{len(items)} of {result['total']} records, {first} first{more}", style="dim", highlight=False
    )
