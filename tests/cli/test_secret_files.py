"""Secrets the CLI writes to files are the user's alone, whatever was there before."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Server


def test_a_worker_credential_written_with_out_is_0600_even_over_a_readable_file(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    fleet = Path(__file__).resolve().parents[2] / "examples" / "fleets" / "region-workers.toml"
    server = live_server(tmp_path / "home", "--fleet", str(fleet))
    target = tmp_path / "ts-east.cred"
    target.write_text("old\n")
    target.chmod(0o644)  # readable by everyone before: O_CREAT alone would keep that mode
    done = server.run(
        "admin", "worker-credential", "create", "ts-east", "--out", str(target), token=server.admin_token
    )
    assert done.stdout == ""  # the secret is not printed
    assert str(target) in done.stderr and "0600" in done.stderr
    secret = target.read_text().strip()
    assert secret and secret != "old"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # A link planted where the secret goes is not followed.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("")
    link = tmp_path / "link.cred"
    link.symlink_to(elsewhere)
    refused = server.run(
        "admin",
        "worker-credential",
        "create",
        "ts-east",
        "--out",
        str(link),
        token=server.admin_token,
        check=False,
    )
    assert refused.returncode != 0 and elsewhere.read_text() == ""
    # The listing shows the credential, never its secret.
    listed = server.run("admin", "worker-credential", "list", "-o", "json", token=server.admin_token).stdout
    assert secret not in listed and listed.count("ts-east") >= 1
