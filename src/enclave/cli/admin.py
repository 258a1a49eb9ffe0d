"""`enclave admin ...`: agencies, projects, users, tokens and region worker credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from enclave.cli import paging
from enclave.cli.common import (
    JsonOpt,
    OutputOpt,
    WideOpt,
    client,
    emit,
    print_json,
    print_table,
    read_password,
    write_secret,
)
from enclave.cli.humanize import human

app = typer.Typer(help="Administer agencies, projects, users and tokens.", no_args_is_help=True)
agency_app = typer.Typer(help="Agencies (tenants) and their quotas.", no_args_is_help=True)
project_app = typer.Typer(help="Projects inside an agency.", no_args_is_help=True)
user_app = typer.Typer(help="Users, clearances and roles.", no_args_is_help=True)
token_app = typer.Typer(help="Bearer tokens bound to one session label.", no_args_is_help=True)
app.add_typer(agency_app, name="agency")
app.add_typer(project_app, name="project")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
worker_app = typer.Typer(help="Credentials of region workers (`enclave worker`).", no_args_is_help=True)
app.add_typer(worker_app, name="worker-credential")


def _quotas(gpu_hours: float | None, kwh: float | None, storage_bytes: int | None) -> dict[str, float | int]:
    values = {"gpu_hours": gpu_hours, "kwh": kwh, "storage_bytes": storage_bytes}
    return {k: v for k, v in values.items() if v is not None}


@agency_app.command("create")
def agency_create(
    name: str,
    gpu_hours: Annotated[float | None, typer.Option(help="GPU-hour quota")] = None,
    kwh: Annotated[float | None, typer.Option(help="Energy quota in kWh")] = None,
    storage_bytes: Annotated[int | None, typer.Option(help="Storage quota in bytes")] = None,
) -> None:
    """Create an agency (a tenant), with quotas if given; prints its name."""
    with client() as api:
        agency = api.create_agency(name, _quotas(gpu_hours, kwh, storage_bytes))
    typer.echo(agency["name"])


paging.list_command(
    agency_app,
    "/v1/agencies",
    ["name", "quotas", "created_at"],
    "Agencies",
    "Agencies you administer, with their quotas; by name, a page at a time.",
    order="by name",
)


@agency_app.command("quotas")
def agency_quotas(
    name: str,
    gpu_hours: Annotated[float | None, typer.Option()] = None,
    kwh: Annotated[float | None, typer.Option()] = None,
    storage_bytes: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Replace an agency's quotas (an omitted quota becomes unlimited)."""
    with client() as api:
        print_json(api.set_quotas(name, _quotas(gpu_hours, kwh, storage_bytes)))


@agency_app.command("usage")
def agency_usage(
    name: str, as_json: bool = JsonOpt, output: str | None = OutputOpt, wide: bool = WideOpt
) -> None:
    """Energy (kWh), emissions, cost and CPU/GPU-hours of an agency's jobs against its quotas:
    one row per label the session may read, then the total over those rows."""
    with client() as api:
        usage = api.agency_usage(name)
    rows = [_usage_row(r) for r in [*usage.get("by_label", []), {**usage, "label": "total"}]]
    columns = ["label", "jobs", "cpu_hours", "gpu_hours", "kwh", "kgco2e", "cost"]
    emit(rows, columns, f"Usage of {name}", output, as_json, wide=wide, raw=usage)
    if not as_json and (output or "table") in ("table", "wide"):
        print_table(_quota_rows(usage), ["quota", "used", "limit"], "Quotas")


def _usage_row(row: dict[str, Any]) -> dict[str, Any]:
    """Short column names (their units are in the cells): the table fits 80 columns."""
    return {**row, "kwh": row.get("energy_kwh"), "kgco2e": row.get("emissions_kgco2e")}


USED_BY_QUOTA = {"gpu_hours": "gpu_hours", "kwh": "energy_kwh"}  # quota -> usage field


def _quota_rows(usage: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per quota: the limit ('unlimited' when unset) and, where usage counts it, the use."""
    rows = []
    for quota, limit in usage["quotas"].items():
        used = usage.get(USED_BY_QUOTA.get(quota, ""))
        shown = {"used": human(quota, used) if used is not None else "-", "limit": "unlimited"}
        if limit is not None:
            pct = f" ({100 * used / limit:.1f}%)" if used is not None and limit else ""
            shown = {"used": shown["used"] + pct, "limit": human(quota, limit)}
        rows.append({"quota": quota, **shown})
    return rows


@project_app.command("create")
def project_create(agency: str, name: str) -> None:
    """Create a project in an agency; prints its name."""
    with client() as api:
        api.create_project(agency, name)
    typer.echo(name)


paging.list_command(
    project_app,
    "/v1/agencies/{agency}/projects",
    ["agency", "name"],
    "Projects",
    "Projects of an agency, by name, a page at a time.",
    order="by name",
    within=("agency", typer.Argument(..., metavar="AGENCY", help="The agency")),
)


@user_app.command("create")
def user_create(
    name: str,
    agency: Annotated[str, typer.Option(help="The user's agency")],
    clearance: Annotated[str, typer.Option(help="Highest label, e.g. 'TOP SECRET//SI'")],
    role: Annotated[
        list[str] | None, typer.Option(help="admin, operator, user, release-authority, auditor")
    ] = None,
    password_stdin: Annotated[bool, typer.Option(help="Read an initial password from stdin")] = False,
) -> None:
    """Create a user with a clearance and roles; prints the user's name."""
    password = read_password("Password", True) if password_stdin else None
    with client() as api:
        user = api.create_user(name, agency, clearance, role or ["user"], password)
    typer.echo(user["name"])


paging.list_command(
    user_app,
    "/v1/users",
    ["name", "agency", "clearance", "roles", "disabled"],
    "Users",
    "Users you administer: agency, clearance, roles; by name, a page at a time.",
    order="by name",
)


@user_app.command("set")
def user_set(
    name: str,
    clearance: Annotated[str | None, typer.Option()] = None,
    role: Annotated[list[str] | None, typer.Option(help="Replaces all roles")] = None,
    disabled: Annotated[bool | None, typer.Option("--disable/--enable")] = None,
) -> None:
    """Change roles or the disabled flag; ``--clearance`` asks for a clearance change as
    `enclave admin user clearance` does (a raise waits for a second admin's approval)."""
    changes: dict[str, object] = {}
    if role is not None:
        changes["roles"] = role
    if disabled is not None:
        changes["disabled"] = disabled
    with client() as api:
        if clearance is not None:
            print_json(api.request_clearance(name, clearance))
        if changes or clearance is None:
            print_json(api.update_user(name, **changes))


@user_app.command("clearance")
def user_clearance(
    name: str,
    label: Annotated[str, typer.Argument(help="The new clearance, e.g. 'TOP SECRET//SI'")],
    as_json: bool = JsonOpt,
) -> None:
    """Ask for a new clearance. A lowering applies at once; a raise waits until an admin other
    than you and the user approves it (`enclave admin user approve-clearance REQUEST_ID`).
    Prints the request id and its state."""
    with client() as api:
        made = api.request_clearance(name, label)
    if as_json:
        print_json(made)
    else:
        typer.echo(f"{made['id']} {made['state']}")


paging.list_command(
    user_app,
    "/v1/clearance-requests",
    ["id", "user", "from", "to", "state", "requested_by"],
    "Clearance requests",
    "Clearance changes of the users you administer (pending ones by default), oldest first, a page at a time.",
    where=("state", typer.Option("pending", "--state", help="pending, approved, refused or applied")),
    order="oldest first",
    command="clearance-requests",
)


@user_app.command("approve-clearance")
def user_approve_clearance(request_id: str) -> None:
    """Approve a pending clearance change (the second admin: not its requester, not the user)."""
    with client() as api:
        done = api.approve_clearance(request_id)
    typer.echo(f"{done['user']}: {done['to']} ({done['state']})")


@user_app.command("refuse-clearance")
def user_refuse_clearance(request_id: str) -> None:
    """Refuse (or, as its requester, withdraw) a pending clearance change."""
    with client() as api:
        done = api.refuse_clearance(request_id)
    typer.echo(f"{done['user']}: {done['state']}")


@user_app.command("password")
def user_password(
    name: str, password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin")] = False
) -> None:
    """Set a user's password (admins)."""
    password = read_password("New password", password_stdin)
    with client() as api:
        api.set_password(name, password)
    typer.echo("password set")


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option(help="Whose token")],
    label: Annotated[str, typer.Option(help="Session label, at or below the user's clearance")],
    ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds")] = None,
) -> None:
    """Mint a token; prints only the token."""
    with client() as api:
        minted = api.mint_token(user, label, ttl)
    typer.echo(minted["token"])


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke a token: refused from its next call on."""
    with client() as api:
        api.revoke_token(token_id)
    typer.echo("revoked")


@worker_app.command("create")
def worker_credential_create(
    region: Annotated[str, typer.Argument(help="The one region the worker may act for")],
    worker: Annotated[
        str | None, typer.Option(help="The one worker name it acts as (default: the name of its first sync)")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the secret to this file (mode 0600) instead of printing it"),
    ] = None,
) -> None:
    """A credential for one worker of a region; prints only the secret (shown once)."""
    with client() as api:
        made = api.create_worker_credential(region, worker)
    if out is None:
        typer.echo(made["secret"])
        return
    write_secret(out, made["secret"])
    typer.echo(
        f"wrote the secret to {out} (mode 0600); start the worker with --credential-file {out}", err=True
    )


paging.list_command(
    worker_app,
    "/v1/worker-credentials",
    ["id", "region", "worker", "created_by", "created_at", "revoked_at"],
    "Worker credentials",
    "Region worker credentials (never their secrets), oldest first, a page at a time.",
    order="oldest first",
)


@worker_app.command("revoke")
def worker_credential_revoke(credential_id: str) -> None:
    """Revoke a credential: its worker is refused from its next call on."""
    with client() as api:
        api.revoke_worker_credential(credential_id)
    typer.echo("revoked")
