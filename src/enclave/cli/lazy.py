"""Start-up speed: `enclave` imports a command group's module only when that group runs.

Importing every group (and through them the audit log, the simulator, numpy, SQLAlchemy...)
cost about a second per call, `--help` included. Here the top-level group knows each group by
name, module and one-line help; `enclave job list` imports `enclave.cli.jobs` alone, and
`enclave --help` imports none (the help lines below are checked against the groups' own help
by tests/cli/test_startup.py).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer.core import TyperGroup

# name -> (module, the group's help); the order is the order `enclave --help` lists them in.
GROUPS: dict[str, tuple[str, str]] = {
    "job": ("enclave.cli.jobs", "Batch jobs: submit, watch, logs, cancel."),
    "train": ("enclave.cli.train", "Training jobs: submit a script over datasets, follow its metrics."),
    "model": (
        "enclave.cli.models",
        "The model registry: models labelled from their lineage (datasets, base models, job).",
    ),
    "endpoint": (
        "enclave.cli.endpoints",
        "Endpoints: deploy a model as replicas, scale them, call them at <server>/v1 (OpenAI API).",
    ),
    "dataset": (
        "enclave.cli.datasets",
        "Datasets: versioned, labelled training data (an upload under an existing name is its next version).",
    ),
    "artifact": (
        "enclave.cli.artifacts",
        "Labelled artifacts (stored encrypted, read through the policy gate).",
    ),
    "transfer": (
        "enclave.cli.transfers",
        "Move an artifact to another label through the cross-domain guard.",
    ),
    "audit": ("enclave.cli.audit", "The signed, hash-chained audit log."),
    "sim": (
        "enclave.cli.sim",
        "Replay traces and synthetic workloads on a simulated fleet with the real scheduler.",
    ),
    "admin": ("enclave.cli.admin", "Administer agencies, projects, users and tokens."),
}


def load_group(name: str) -> Any:
    """The click command of group ``name``, importing its module now."""
    module = importlib.import_module(GROUPS[name][0])
    command = typer.main.get_command(module.app)
    command.name = name
    return command


def flags_take_no_value(command: Any) -> None:
    """Typer's help shows `<bool>` after every flag (`--json <bool>`, even `--help <bool>`),
    as if it took a value; an empty metavar shows nothing. Applied to a whole command tree."""
    for param in [*command.params, command.get_help_option(typer.Context(command))]:
        if param is not None and getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        flags_take_no_value(sub)


class LazyGroup(TyperGroup):
    """A TyperGroup whose sub-groups are imported on first use (see the module docstring)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._listing = False  # formatting help: a group's name and help line are enough

    def list_commands(self, ctx: Any) -> list[str]:
        return [*GROUPS, *(name for name in self.commands if name not in GROUPS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in GROUPS and cmd_name not in self.commands:
            if self._listing:
                return TyperGroup(name=cmd_name, help=GROUPS[cmd_name][1])
            self.commands[cmd_name] = load_group(cmd_name)
        command = self.commands.get(cmd_name)
        if command is not None and not self._listing:
            flags_take_no_value(command)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        flags_take_no_value(self)
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


UNUSED_IN_CLI = ("trio", "httpx._main")


def skip_unused_imports() -> None:
    """For the `enclave` process only (its entry point, never on import), two optional imports
    of the HTTP client that it never uses: httpcore imports trio, when installed, only to tell
    whether it runs under trio (about 65 ms; Enclave's client is synchronous, its server runs
    on asyncio); httpx imports its own command line (`httpx._main`: click, pygments, about
    17 ms). A None entry in sys.modules makes each import fail at once, which both expect."""
    for name in UNUSED_IN_CLI:
        sys.modules.setdefault(name, None)  # type: ignore[assignment]


def version_callback(value: bool) -> None:
    """``enclave --version``: the installed distribution's version."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        typer.echo(f"enclave {version('enclave')}")
    except PackageNotFoundError:
        typer.echo("enclave (not installed as a distribution)")
    raise typer.Exit()
