"""CLI start-up: what `enclave` imports before it does anything, and its help."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer

from enclave.cli import lazy
from enclave.cli.lazy import GROUPS
from enclave.cli.main import app
from tests.conftest import CLI, Server

HEAVY = [
    "sqlalchemy",
    "numpy",
    "enclave.audit.log",
    "enclave.sim",
    "enclave.store",
    "fastapi",
    "httpx",
    "enclave.client",
    "pydantic",  # typer's conversion of parameter values (lazy.ConvertWhenNeeded)
    "typer._adapters",
]
# typer imports these to print help or a usage error (typer.rich_utils: rich's Markdown, syntax
# highlighting, tracebacks), never for a command that runs
HELP_ONLY = ["typer.rich_utils", "rich.markdown", "markdown_it", "pygments", "rich.syntax", "rich.traceback"]
PROBE = """
import gc, json, sys
sys.argv = ["enclave", *{args!r}]
from enclave.cli.main import main
try:
    main()
except SystemExit:
    pass
modules = sorted(n for n, m in sys.modules.items() if m is not None)
print(json.dumps({{"modules": modules, "gc": gc.isenabled()}}), file=sys.stderr)
"""


def _run_probe(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=list(args))],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return proc, json.loads(proc.stderr.strip().splitlines()[-1])


def _modules_after(*args: str) -> set[str]:
    return set(_run_probe(*args)[1]["modules"])


def _among(loaded: set[str], names: list[str]) -> set[str]:
    return {m for m in loaded for name in names if m == name or m.startswith(name + ".")}


@pytest.mark.parametrize(
    ("args", "group"),
    [
        (("--help",), None),
        (("job", "--help"), "job"),
        (("job", "list", "--help"), "job"),
        (("sim", "run", "--help"), "sim"),
    ],
)
def test_help_imports_nothing_heavy(args: tuple[str, ...], group: str | None) -> None:
    loaded = _modules_after(*args)
    assert not _among(loaded, HEAVY)
    groups = {module for module, _ in GROUPS.values()}
    assert loaded & groups == ({GROUPS[group][0]} if group else set())


def test_sim_defaults_match_the_engine() -> None:
    """enclave.cli.sim copies three defaults so that its help does not import the simulator."""
    from enclave.cli import sim
    from enclave.scheduler.policies import DEFAULT_POWER_CAP_SCALE
    from enclave.sim.carbon import BUILTIN
    from enclave.sim.compare import DEFAULT_POLICIES

    assert (sim.DEFAULT_POWER_CAP_SCALE, sim.BUILTIN_CARBON, sim.DEFAULT_POLICIES) == (
        DEFAULT_POWER_CAP_SCALE,
        BUILTIN,
        DEFAULT_POLICIES,
    )


def test_group_help_lines_match_the_groups() -> None:
    """`enclave --help` lists groups from lazy.GROUPS without importing them: same words."""
    for name, (module, help_text) in GROUPS.items():
        assert importlib.import_module(module).app.info.help == help_text, name


def _commands(group: typer.Typer, prefix: str) -> list[tuple[str, object]]:
    found = [(f"{prefix} {c.name or c.callback.__name__}", c.callback) for c in group.registered_commands]
    for sub in group.registered_groups:
        assert sub.typer_instance is not None
        found += _commands(sub.typer_instance, f"{prefix} {sub.name}")
    return found


def test_every_command_says_what_it_does() -> None:
    mine = [m for m, _ in GROUPS.values() if m not in ("enclave.cli.jobs", "enclave.cli.audit")]
    commands = _commands(app, "enclave")
    for module in mine:
        commands += _commands(importlib.import_module(module).app, module)
    missing = [name for name, callback in commands if not (getattr(callback, "__doc__", None) or "").strip()]
    assert len(commands) > 50 and missing == []


def test_version_and_flags_without_a_value() -> None:
    version = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("enclave ")
    env = {**os.environ, "COLUMNS": "120"}
    for args in (["model", "list"], ["whoami"], ["admin", "user", "set"], []):
        shown = subprocess.run([*CLI, *args, "--help"], capture_output=True, text=True, timeout=60, env=env)
        assert "--help" in shown.stdout and "<bool>" not in shown.stdout, (args, shown.stdout)
        if args[:2] == ["model", "list"]:
            assert "--json" in shown.stdout and "--wide" in shown.stdout


def test_default_url_matches_the_client() -> None:
    """enclave.cli.common copies the client's default URL so that it need not import httpx."""
    from enclave import client
    from enclave.cli import common

    assert common.DEFAULT_URL == client.DEFAULT_URL


def test_job_list_and_show_import_only_what_they_use(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    """`job list` and `job show` import the HTTP client, rich's console and table and the job
    group, not pydantic (no value needs typer's conversion), not typer's help printing, not
    another group, and the collector is on again once the command runs."""
    server = live_server(tmp_path / "home")
    job = server.run("job", "submit", "--walltime", "60", "--", "true").stdout.strip()
    server.run("job", "watch", job, "--interval", "0.1")
    env = {**os.environ, "ENCLAVE_HOME": str(server.home), "ENCLAVE_URL": server.url, "COLUMNS": "200"}
    env["ENCLAVE_TOKEN"] = server.admin_token
    for args in (
        ("job", "list"),
        ("job", "list", "--state", "completed", "--limit", "5", "-o", "wide"),
        ("job", "show", job),
        ("job", "show", job[:8], "--json"),
    ):
        proc, probe = _run_probe(*args, env=env)
        assert proc.returncode == 0 and job in proc.stdout, (args, proc.stdout, proc.stderr)
        loaded = set(probe["modules"])
        assert {"httpx", "enclave.client", "enclave.cli.jobs"} <= loaded
        unused = [m for m in HEAVY if not m.startswith(("httpx", "enclave.client"))]
        assert not _among(loaded, [*unused, *HELP_ONLY, "trio", "httpx._main"]), args
        assert loaded & {module for module, _ in GROUPS.values()} == {"enclave.cli.jobs"}
        assert probe["gc"] is True


def test_help_and_errors_turn_the_collector_back_on() -> None:
    for args in (["--help"], ["job", "--help"], ["jb"], ["job", "list", "--limit", "x"]):
        assert _run_probe(*args)[1]["gc"] is True, args


def _every_command() -> list[tuple[str, Any]]:
    """(path, click command) for every command, each group built by lazy.command_of."""
    found: list[tuple[str, Any]] = []

    def walk(path: str, command: Any) -> None:
        found.append((path, command))
        ctx = typer.Context(command)
        for name in command.list_commands(ctx) if hasattr(command, "list_commands") else []:
            walk(f"{path} {name}", command.get_command(ctx, name))

    walk("enclave", lazy.command_of(app))
    return found


def test_lazy_commands_are_typers_commands() -> None:
    """A group built by command_of lists, names and builds its commands as typer.main.get_command
    builds them all at once: same order, options and help."""
    apps = [app, *(importlib.import_module(module).app for module, _ in GROUPS.values())]
    for typer_app in apps:
        lazy_group, eager = lazy.command_of(typer_app), typer.main.get_command(typer_app)
        assert isinstance(lazy_group, lazy.LazyCommands) and not lazy_group.commands.keys() - {
            g.name for g in typer_app.registered_groups
        }
        assert [p.opts for p in lazy_group.params] == [p.opts for p in eager.params]
        ctx = typer.Context(eager)
        names = eager.list_commands(ctx)
        assert lazy_group.list_commands(typer.Context(lazy_group)) == names
        for name in names:
            mine, typers = lazy_group.get_command(ctx, name), eager.get_command(ctx, name)
            assert (mine.name, mine.help, type(mine)) == (typers.name, typers.help, type(typers)), name
            assert [(p.name, p.opts, p.default, p.required) for p in mine.params] == [
                (p.name, p.opts, p.default, p.required) for p in typers.params
            ], name


def test_a_typo_is_answered_from_every_command() -> None:
    """typer suggests from the commands it has built: the lazy groups suggest from all of them."""
    env = {**os.environ, "COLUMNS": "200"}
    for args, suggestion in (
        (["jb", "list"], "Did you mean 'job'?"),
        (["job", "shw"], "Did you mean 'show'?"),
    ):
        proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 2 and suggestion in proc.stderr, proc.stderr


SAMPLES: list[Any] = [
    "",
    "x",
    "0",
    "1",
    "5",
    "100",
    "10000",
    "10001",
    "007",
    " 5",
    "5 ",
    "+5",
    "-1",
    "5.0",
    "1_000",
    "\u0663",  # an Arabic-Indic digit: str.isdigit() is true, it is left to typer
    "9" * 19,
    "é",
    "\udcff",
    0,
    1,
    5,
    100,
    10_000,
    10_001,
    -1,
    2**70,
    True,
    0.0,
    0.5,
    1.5,
    -2.5,
    1e300,
    math.inf,
    b"5",
    ["5"],
]


@pytest.mark.skipif(lazy.RuntimeParam is None, reason="this typer converts through click's types")
def test_plain_values_are_what_typers_conversion_gives() -> None:
    """Every value ``plain_value`` answers itself, for every parameter of every command, is
    exactly (value and type) what typer's own conversion (pydantic) gives it."""
    answered = 0
    for path, command in _every_command():
        ctx = typer.Context(command)
        for param in [*command.params, command.get_help_option(ctx)]:
            descriptor = getattr(param, "type_descriptor", None)
            if descriptor is None:
                continue
            typers = lazy.build_runtime_param(descriptor)
            for value in [*SAMPLES, param.default]:
                if value is None:
                    continue
                mine = lazy.plain_value(descriptor, value)
                if mine is lazy.NOT_PLAIN:
                    continue
                answered += 1
                theirs = typers._coerce_value(value, param=param, ctx=ctx)
                assert type(mine) is type(theirs) and mine == theirs, (path, param.name, value)
    assert answered > 500


def test_a_converted_value_still_goes_through_typer() -> None:
    """What is not plain reaches typer's conversion: its values and its messages."""
    env = {**os.environ, "COLUMNS": "200", "ENCLAVE_URL": "http://127.0.0.1:9", "ENCLAVE_TOKEN": "x"}
    for args, message in (
        (["job", "list", "--limit", "x"], "Input should be a valid integer"),
        (["job", "list", "--limit", "0"], "Input should be greater than or equal to 1"),
        (["job", "list", "--limit", "10001"], "Input should be less than or equal to 10000"),
    ):
        proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    proc = subprocess.run([*CLI, "job", "list", "--limit", "0005"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "cannot reach Enclave" in proc.stderr  # "0005" is 5, typer's way
