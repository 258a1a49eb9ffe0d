"""`enclave audit ...`: read and verify the tamper-evident log."""

from __future__ import annotations

from typing import Annotated

import typer

from enclave.cli.common import JsonOpt, client, console, print_json, print_table

app = typer.Typer(help="The signed, hash-chained audit log.", no_args_is_help=True)


@app.command("verify")
def verify(as_json: bool = JsonOpt) -> None:
    """Exit 0 when the chain and its signed checkpoint are intact, 1 naming the first bad record."""
    with client() as api:
        result = api.audit_verify()
    if as_json:
        print_json(result)
    elif result["ok"]:
        console.print(f"audit log intact: {result['records']} records verified")
    else:
        typer.echo(f"audit log BROKEN at record {result['first_bad_seq']}: {result['problem']}", err=True)
    if not result["ok"]:
        raise typer.Exit(1)


@app.command("list")
def list_(
    as_json: bool = JsonOpt,
    after: Annotated[int, typer.Option(help="Only records after this sequence number")] = 0,
    limit: Annotated[int, typer.Option()] = 100,
    event: Annotated[str | None, typer.Option()] = None,
) -> None:
    with client() as api:
        items = api.audit_records(after, limit, event)
    if as_json:
        print_json(items)
    else:
        print_table(
            items, ["seq", "ts", "event", "outcome", "actor", "object_kind", "object_id", "object_label"]
        )
