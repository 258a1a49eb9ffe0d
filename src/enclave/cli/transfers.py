"""`enclave transfer ...`: the cross-domain guard."""

from __future__ import annotations

from typing import Annotated

import typer

from enclave.cli.common import JsonOpt, client, print_json, print_table

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
    """Ask for a copy of ARTIFACT_ID at another label; prints the transfer id."""
    with client() as api:
        transfer = api.request_transfer(artifact_id, to, why)
    typer.echo(transfer["id"])


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
def show(transfer_id: str, as_json: bool = JsonOpt) -> None:
    with client() as api:
        transfer = api.transfer(transfer_id)
    if as_json:
        print_json(transfer)
    else:
        print_table([transfer], [*COLUMNS, "reason"])


@app.command("list")
def list_(as_json: bool = JsonOpt, state: Annotated[str | None, typer.Option()] = None) -> None:
    with client() as api:
        items = api.list_transfers(state)
    if as_json:
        print_json(items)
    else:
        print_table(items, COLUMNS, "Transfers")
