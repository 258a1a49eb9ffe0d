"""`enclave transfer ...`: the cross-domain guard."""

from __future__ import annotations

from typing import Annotated

import typer

from enclave.cli import paging
from enclave.cli.common import JsonOpt, OutputOpt, WideOpt, client, emit_one

app = typer.Typer(
    help="Move an artifact to another label through the cross-domain guard.", no_args_is_help=True
)
COLUMNS = ["id", "artifact_id", "source_label", "target_label", "state", "requester", "released_artifact_id"]


@app.command("request")
def request(
    artifact_id: str,
    to: Annotated[str, typer.Option(help="Target label marking")],
    why: Annotated[str, typer.Option(help="Justification for the reviewers")],
) -> None:
    """Ask for a copy of ARTIFACT_ID at another label; prints the transfer id. A request the
    guard's scan refuses at once still prints its id, says why on stderr and exits 1."""
    with client() as api:
        transfer = api.request_transfer(artifact_id, to, why)
    typer.echo(transfer["id"])
    if transfer["state"] == "refused":
        typer.echo(f"error: the guard refused transfer {transfer['id']}: {transfer['reason']}", err=True)
        raise typer.Exit(1)


def _review(transfer_id: str, approve: bool, comment: str | None) -> None:
    with client() as api:
        transfer = api.review_transfer(transfer_id, approve, comment)
    typer.echo(transfer["state"])


@app.command("approve")
def approve(transfer_id: str, comment: Annotated[str | None, typer.Option()] = None) -> None:
    """Approve as a release authority; prints the resulting state."""
    _review(transfer_id, True, comment)


@app.command("refuse")
def refuse(transfer_id: str, comment: Annotated[str | None, typer.Option()] = None) -> None:
    """Refuse as a release authority (the transfer ends); prints the resulting state."""
    _review(transfer_id, False, comment)


@app.command("override")
def override(
    transfer_id: str,
    reason: Annotated[str, typer.Option(help="Why the content may go although the guard cannot read it")],
) -> None:
    """Vouch, as a release authority, for content the guard could not read (audited); counts as
    your approval. Prints the resulting state."""
    with client() as api:
        typer.echo(api.override_transfer(transfer_id, reason)["state"])


@app.command("release")
def release(transfer_id: str) -> None:
    """Finish an approved transfer whose release was interrupted."""
    with client() as api:
        typer.echo(api.release_transfer(transfer_id)["state"])


@app.command("show")
def show(
    transfer_id: str, as_json: bool = JsonOpt, output: str | None = OutputOpt, wide: bool = WideOpt
) -> None:
    """Show a transfer: labels, state, requester, the released copy."""
    with client() as api:
        transfer = api.transfer(transfer_id)
    emit_one(transfer, [*COLUMNS, "reason"], output, as_json, wide=wide)


paging.list_command(
    app,
    "/v1/transfers",
    COLUMNS,
    "Transfers",
    "Transfers you requested or may review, newest first, a page at a time.",
    where=("state", typer.Option(None, "--state", help="Only transfers in this state")),
)
