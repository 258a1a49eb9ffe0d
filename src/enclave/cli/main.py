"""The `enclave` command line (Typer + rich). Talks to the server through enclave.client.

Errors print as one line on stderr and exit 1; nothing prints a traceback for a domain error.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from enclave.cli.common import (
    SESSION_TOKEN_FILE,
    JsonOpt,
    OutputOpt,
    WideOpt,
    client,
    emit,
    emit_one,
    home,
    read_password,
    server_url,
    write_secret,
)
from enclave.cli.lazy import (
    LazyGroup,
    command_of,
    skip_unused_imports,
    start_up_without_collection,
    version_callback,
)
from enclave.errors import EnclaveError, NotAuthenticated

app = typer.Typer(
    name="enclave",
    help="Enclave: a sovereign AI + HPC cloud control plane with mandatory access control.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=LazyGroup,
)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            is_eager=True,
            callback=version_callback,
            metavar="",
        ),
    ] = False,
) -> None:
    """Enclave: a sovereign AI + HPC cloud control plane with mandatory access control."""


@app.command()
def up(
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    fleet: Annotated[str, typer.Option(help="Built-in fleet name or a fleet TOML file")] = "local",
    db: Annotated[str | None, typer.Option(help="Database URL (default: SQLite under $ENCLAVE_HOME)")] = None,
    policy: Annotated[
        str, typer.Option(help="Scheduling policy: priority (multifactor EASY), easy or fcfs")
    ] = "priority",
    audit_key: Annotated[
        Path | None,
        typer.Option(help="Audit signing key file (default: $CREDENTIALS_DIRECTORY, else under home)"),
    ] = None,
    audit_sink_file: Annotated[
        Path | None, typer.Option(help="Append every signed audit checkpoint to this file (O_APPEND)")
    ] = None,
    audit_syslog: Annotated[
        str | None, typer.Option(help="Send every audit checkpoint to syslog: /dev/log or host:port (UDP)")
    ] = None,
) -> None:
    """Start the control plane (embedded default: SQLite + local executor, fleet `local`)."""
    import uvicorn

    from enclave.audit.log import key_path
    from enclave.fleet import load_fleet
    from enclave.scheduler.policies import make_policy

    load_fleet(fleet)  # fail fast, with one line, on a bad fleet or policy
    make_policy(policy)
    enclave_home = home()
    enclave_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ["ENCLAVE_HOME"] = str(enclave_home)
    os.environ["ENCLAVE_FLEET"] = str(fleet)
    os.environ["ENCLAVE_POLICY"] = policy
    if db:
        os.environ["ENCLAVE_DB_URL"] = db
    for name, value in (
        ("ENCLAVE_AUDIT_KEY_FILE", audit_key),
        ("ENCLAVE_AUDIT_SINK_FILE", audit_sink_file),
        ("ENCLAVE_AUDIT_SYSLOG", audit_syslog),
    ):
        if value is not None:
            os.environ[name] = str(value)
    _first_start_audit_key(key_path(enclave_home, audit_key))
    typer.echo(
        f"Enclave on http://{host}:{port}  fleet={fleet}  home={enclave_home}  "
        f"admin token: {enclave_home / 'admin.token'}",
        err=True,
    )
    state = enclave_home / SERVER_FILE
    write_secret(state, json.dumps({"pid": os.getpid(), "url": f"http://{host}:{port}", "fleet": fleet}))
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again for the
    # handler it found: this one, so that the process ends here, saying what it leaves running.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped)
    try:
        uvicorn.run(
            "enclave.api.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            log_level="warning",
            http="enclave.api.limits:HeaderTimeoutProtocol",  # a deadline on request headers
            proxy_headers=False,  # the peer address is the client (per-address throttles)
        )
    except _Stop:
        pass
    finally:
        state.unlink(missing_ok=True)
        typer.echo(f"enclave: stopped; {_left_running(enclave_home)}", err=True)


class _Stop(Exception):
    """The stop signal, raised again by uvicorn once it has shut down."""


def _stopped(_sig: int, _frame: object) -> None:
    raise _Stop


SERVER_FILE = "server.json"  # the running `enclave up` of this home: pid, url (0600)


def _left_running(enclave_home: Path) -> str:
    """What a stopped control plane leaves running, and why (said at exit and by `down`)."""
    left = _confined(enclave_home)
    if not left:
        return "no job or replica left running"
    replicas = sum(1 for pid in left if _is_replica(pid))
    return (
        f"{len(left) - replicas} job(s) and {replicas} endpoint replica(s) left running, confined, under "
        f"their own uids: the next `enclave up` on {enclave_home} adopts them; "
        "`enclave down --stop-jobs` ends them"
    )


def _confined(enclave_home: Path) -> list[int]:
    from enclave.executors import confine

    return confine.sandboxes_of(enclave_home)


def _is_replica(pid: int) -> bool:
    try:
        return b"enclave.serving.replica" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _server(enclave_home: Path) -> dict[str, Any] | None:
    """The running server of this home, from its state file (None: none, or it died)."""
    try:
        state = json.loads((enclave_home / SERVER_FILE).read_text())
        pid = int(state["pid"])
        if not _alive(pid) or b"enclave" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None  # it died (and its pid may be another program's now)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(state)


@app.command()
def status() -> None:
    """Whether this home's control plane runs (pid, URL, health) and what it has confined."""
    import httpx

    enclave_home = home()
    server = _server(enclave_home)
    left = _confined(enclave_home)
    if server is None:
        typer.echo(f"no control plane running for {enclave_home}; {_left_running(enclave_home)}")
        raise typer.Exit(3)  # as `systemctl status` says "not running"
    try:
        health = httpx.get(f"{server['url']}/healthz", timeout=5, trust_env=False).json()
    except (httpx.HTTPError, ValueError) as exc:
        health = {"status": f"not answering: {exc}"}
    typer.echo(
        f"control plane: pid {server['pid']}, {server['url']}, fleet {server['fleet']}, home {enclave_home}"
    )
    typer.echo(f"health: {health.get('status', health)}")
    typer.echo(f"confined processes (jobs and endpoint replicas): {len(left)}")


@app.command()
def down(
    stop_jobs: Annotated[
        bool, typer.Option("--stop-jobs", help="Also end every job and replica it leaves running")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server to stop")] = 30.0,
) -> None:
    """Stop this home's control plane (SIGTERM: it finishes what it is doing and exits); its
    jobs and replicas keep running for the next `enclave up` unless --stop-jobs."""
    import time

    from enclave.executors import confine

    enclave_home = home()
    server = _server(enclave_home)
    if server is not None:
        pid = int(server["pid"])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                raise EnclaveError(f"the control plane (pid {pid}) did not stop within {timeout:g} s")
            time.sleep(0.1)
        typer.echo(f"stopped the control plane (pid {pid})")
    else:
        typer.echo(f"no control plane running for {enclave_home}")
    if stop_jobs:
        typer.echo(f"ended {confine.end(confine.sandboxes_of(enclave_home))} confined job(s) and replica(s)")
    else:
        typer.echo(_left_running(enclave_home))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _first_start_audit_key(path: Path) -> None:
    """Create the audit signing key on the first start and print its public half, for the
    operator to record apart from this machine (`enclave audit verify --pubkey`)."""
    from enclave.audit.chain import public_key_text
    from enclave.audit.log import load_or_create_key

    if path.exists():
        return
    public = public_key_text(load_or_create_key(path).public_key())
    typer.echo(
        f"audit public key: {public}\n"
        "  first start: record this key somewhere the store's users cannot write; "
        "`enclave audit verify --pubkey KEY` refuses a log signed by any other.",
        err=True,
    )


@app.command()
def login(
    user: Annotated[str, typer.Option(help="User name")],
    label: Annotated[str, typer.Option(help="Session label, at or below your clearance")],
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin")] = False,
) -> None:
    """Log in with a password; later commands use the saved session token."""
    from enclave.client import Client

    password = read_password("Password", password_stdin)
    with Client(server_url()) as api:
        minted = api.login(user, password, label)
    write_secret(home() / SESSION_TOKEN_FILE, minted["token"])
    typer.echo(f"logged in as {user} at {minted['label']} until {minted['expires_at']}")


@app.command()
def logout() -> None:
    """Forget the saved session token."""
    (home() / SESSION_TOKEN_FILE).unlink(missing_ok=True)
    typer.echo("logged out")


@app.command()
def whoami(as_json: bool = JsonOpt, output: str | None = OutputOpt) -> None:
    """Who the token is: user, agency, session label, clearance and roles."""
    with client() as api:
        me = api.whoami()
    emit_one(me, ["user", "agency", "label", "clearance", "roles"], output, as_json)


@app.command()
def passwd(
    password_stdin: Annotated[
        bool, typer.Option(help="Read current and new password from stdin, one per line")
    ] = False,
) -> None:
    """Change your own password."""
    current = read_password("Current password", password_stdin)
    new = read_password("New password", password_stdin)
    with client() as api:
        api.set_password(api.whoami()["user"], new, current or None)
    typer.echo("password changed")


@app.command()
def regions(as_json: bool = JsonOpt, output: str | None = OutputOpt, wide: bool = WideOpt) -> None:
    """Regions of the fleet: accreditation, power cap, capacity, back end."""
    with client() as api:
        items = api.regions()
    rows = [
        {
            **r,
            "backend": r["backend"]["type"] + (" (region worker)" if r["backend"].get("worker") else ""),
            "nodes": r["capacity"]["nodes"],
            "gpus": r["capacity"]["gpus"],
            "peak_mw": r["capacity"]["peak_facility_mw"],
        }
        for r in items
    ]
    columns = ["name", "accreditation", "power_cap_mw", "peak_mw", "nodes", "gpus", "backend", "healthy"]
    emit(rows, columns, "Regions", output, as_json, wide=wide, raw=items)


@app.command()
def worker(
    region: Annotated[str, typer.Option(help="The region this worker runs (its credential must be for it)")],
    credential_file: Annotated[
        Path | None,
        typer.Option(help="File holding the region credential (else $ENCLAVE_WORKER_CREDENTIAL)"),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Worker name, stable across restarts (default: host name)")
    ] = None,
    sandboxes: Annotated[
        Path | None, typer.Option(help="Where jobs' sandboxes live (default: $ENCLAVE_HOME/worker-sandboxes)")
    ] = None,
    max_jobs: Annotated[int, typer.Option(min=1, help="Most jobs held at once")] = 256,
) -> None:
    """Run a region's executor as its own process, inside the region's network.

    It connects out to the control plane at $ENCLAVE_URL with the region credential made by
    `enclave admin worker-credential create REGION`, takes the jobs the scheduler placed in
    the region, runs them on the region's engine and reports back."""
    import logging

    from enclave.client import Client
    from enclave.worker import RegionWorker

    secret = (
        credential_file.read_text().strip()
        if credential_file is not None
        else os.environ.get("ENCLAVE_WORKER_CREDENTIAL", "").strip()
    )
    if not secret:
        raise NotAuthenticated(
            "no worker credential: pass --credential-file or set ENCLAVE_WORKER_CREDENTIAL"
        )
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    root = sandboxes or home() / "worker-sandboxes"
    with Client(server_url(), secret) as api:
        runner = RegionWorker(api, region, root, name=name, max_jobs=max_jobs)
        signal.signal(signal.SIGTERM, lambda *_: runner.stop())
        typer.echo(f"Enclave worker {runner.name} for region {region} -> {server_url()}", err=True)
        try:
            runner.run()
        except KeyboardInterrupt:
            runner.stop()


def main() -> None:
    skip_unused_imports()
    try:
        # app() with its commands built on first use: typer's `app()` builds every one first
        # (its pretty exceptions are off: an unexpected error's traceback is Python's either way)
        with start_up_without_collection():
            command_of(app)()
    except EnclaveError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
