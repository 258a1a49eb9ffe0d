"""CLI start-up: what `enclave` imports before it does anything, and its help."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest
import typer

from enclave.cli.lazy import GROUPS
from enclave.cli.main import app
from tests.conftest import CLI

HEAVY = ["sqlalchemy", "numpy", "enclave.audit.log", "enclave.sim", "enclave.store", "fastapi", "httpx"]
PROBE = """
import json, sys
sys.argv = ["enclave", *{args!r}]
from enclave.cli.main import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(n for n, m in sys.modules.items() if m is not None)), file=sys.stderr)
"""


def _modules_after(*args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=list(args))], capture_output=True, text=True, timeout=60
    )
    return set(json.loads(proc.stderr.strip().splitlines()[-1]))


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
    assert not {m for m in loaded for heavy in HEAVY if m == heavy or m.startswith(heavy + ".")}
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
