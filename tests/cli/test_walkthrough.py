"""The README walkthrough, for real: `enclave up` in a subprocess, the CLI in subprocesses.

Covers the issue's "done when": tokens at two labels, a SECRET object invisible to an
UNCLASSIFIED session, a downgrade approved by two release authorities (and one refused when
a marking is found), `enclave audit verify` clean, then broken after editing one row by hand.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CLI, Server, free_port


@pytest.fixture
def server(live_server: Callable[..., Server], tmp_path: Path) -> Server:
    return live_server(tmp_path / "enclave-home")


def test_readme_walkthrough(server: Server, tmp_path: Path) -> None:
    assert (server.home / "admin.token").stat().st_mode & 0o077 == 0
    server.run("admin", "agency", "create", "nasa")
    server.run("admin", "user", "create", "alice", "--agency", "nasa", "--clearance", "SECRET")
    for name in ("rob", "rita"):
        server.run(
            "admin",
            "user",
            "create",
            name,
            "--agency",
            "nasa",
            "--clearance",
            "TOP SECRET",
            "--role",
            "release-authority",
        )

    secret = server.run("admin", "token", "create", "--user", "alice", "--label", "SECRET").stdout.strip()
    low = server.run("admin", "token", "create", "--user", "alice", "--label", "UNCLASSIFIED").stdout.strip()
    assert secret.startswith("enc_") and "\n" not in secret

    clean = tmp_path / "forecast.txt"
    clean.write_text("wind tunnel results, no markings\n")
    art = server.run("artifact", "put", str(clean), token=secret).stdout.strip()

    # Invisible, not forbidden: same one-line error as an id that never existed.
    hidden = server.run("artifact", "get", art, token=low, check=False)
    missing = server.run("artifact", "get", "00000000-0000-0000-0000-000000000000", token=low, check=False)
    assert hidden.returncode != 0 and missing.returncode != 0
    assert hidden.stderr.strip().replace(art, "ID") == missing.stderr.strip().replace(
        "00000000-0000-0000-0000-000000000000", "ID"
    )
    assert len(hidden.stderr.strip().splitlines()) == 1
    assert json.loads(server.run("artifact", "list", "--json", token=low).stdout) == []
    assert [a["id"] for a in json.loads(server.run("artifact", "list", "--json", token=secret).stdout)] == [
        art
    ]

    # Downgrade with two distinct release authorities.
    transfer = server.run(
        "transfer", "request", art, "--to", "UNCLASSIFIED", "--why", "public release", token=secret
    ).stdout.strip()
    rob = server.run("admin", "token", "create", "--user", "rob", "--label", "SECRET").stdout.strip()
    rita = server.run("admin", "token", "create", "--user", "rita", "--label", "SECRET").stdout.strip()
    assert server.run("transfer", "approve", transfer, token=secret, check=False).returncode != 0  # requester
    assert server.run("transfer", "approve", transfer, token=rob).stdout.strip() == "pending"
    assert server.run("transfer", "approve", transfer, token=rita).stdout.strip() == "released"
    shown = json.loads(server.run("transfer", "show", transfer, "--json", token=secret).stdout)
    assert shown["state"] == "released"
    out = tmp_path / "released.txt"
    server.run("artifact", "get", shown["released_artifact_id"], "-o", str(out), token=low)
    assert out.read_text() == clean.read_text()

    # Refused when the content carries a marking above the target.
    dirty = tmp_path / "brief.txt"
    dirty.write_text("TOP SECRET//SI\nsource details\n")
    # A raise is a request that a second admin (here nasa's own, ada) approves.
    asked = server.run("admin", "user", "clearance", "alice", "TOP SECRET//SI").stdout.split()
    assert asked[1] == "pending"
    server.run(
        "admin",
        "user",
        "create",
        "ada",
        "--agency",
        "nasa",
        "--clearance",
        "TOP SECRET//SI",
        "--role",
        "admin",
    )
    ada = server.run("admin", "token", "create", "--user", "ada", "--label", "UNCLASSIFIED").stdout.strip()
    server.run("admin", "user", "approve-clearance", asked[0], token=ada)
    ts = server.run("admin", "token", "create", "--user", "alice", "--label", "TOP SECRET//SI").stdout.strip()
    dirty_id = server.run("artifact", "put", str(dirty), token=ts).stdout.strip()
    refused = server.run(
        "transfer", "request", dirty_id, "--to", "SECRET", "--why", "share", token=ts, check=False
    )
    # Refused by the scan at once: the id on stdout, the reason on stderr, exit 1.
    assert refused.returncode == 1 and "refused" in refused.stderr and "TOP SECRET//SI" in refused.stderr
    view = json.loads(server.run("transfer", "show", refused.stdout.strip(), "--json", token=ts).stdout)
    assert view["state"] == "refused" and "TOP SECRET//SI" in view["reason"]

    # Audit: clean, then broken after editing one row by hand.
    verified = server.run("audit", "verify")
    assert verified.returncode == 0 and "intact" in verified.stdout
    db = sqlite3.connect(server.home / "enclave.db")
    with db:
        db.execute("UPDATE audit_records SET actor = 'mallory' WHERE seq = 5")
    db.close()
    broken = server.run("audit", "verify", check=False)
    assert broken.returncode == 1
    assert "record 5" in broken.stderr


def test_cli_errors_are_one_line(server: Server, tmp_path: Path) -> None:
    bad_label = server.run("admin", "token", "create", "--user", "admin", "--label", "ULTRA", check=False)
    assert bad_label.returncode == 1
    assert bad_label.stderr.startswith("error: ") and len(bad_label.stderr.strip().splitlines()) == 1
    no_file = server.run("artifact", "put", str(tmp_path / "nope"), check=False)
    assert no_file.returncode == 1 and "no such file" in no_file.stderr
    bad_token = server.run("whoami", token="enc_forged", check=False)
    assert bad_token.returncode == 1 and "invalid or expired token" in bad_token.stderr


def test_password_login_saves_session(server: Server) -> None:
    server.run("admin", "agency", "create", "doe")
    server.run(
        "admin",
        "user",
        "create",
        "dana",
        "--agency",
        "doe",
        "--clearance",
        "CUI",
        "--password-stdin",
        stdin="correct horse battery\n",
    )
    logged = server.run(
        "login", "--user", "dana", "--label", "CUI", "--password-stdin", stdin="correct horse battery\n"
    )
    assert "logged in as dana at CUI" in logged.stdout
    assert (server.home / "session.token").stat().st_mode & 0o077 == 0
    me = json.loads(server.run("whoami", "--json").stdout)
    assert (me["user"], me["label"]) == ("dana", "CUI")
    wrong = server.run(
        "login",
        "--user",
        "dana",
        "--label",
        "CUI",
        "--password-stdin",
        stdin="wrong password!!\n",
        check=False,
    )
    assert wrong.returncode == 1 and "wrong user name or password" in wrong.stderr
    server.run("logout")
    assert json.loads(server.run("whoami", "--json").stdout)["user"] == "admin"


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ENCLAVE_HOME": str(tmp_path),
        "ENCLAVE_URL": f"http://127.0.0.1:{free_port()}",
        "ENCLAVE_TOKEN": "enc_x",
    }
    proc = subprocess.run([*CLI, "artifact", "list"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and proc.stderr.startswith("error: cannot reach Enclave")
