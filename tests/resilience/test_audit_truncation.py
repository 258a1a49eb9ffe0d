"""The truncation attack of issue 12, for real, against a live `enclave up` on SQLite and
PostgreSQL: someone with write access to the store deletes the newest audit rows, moves the
head back and puts an older ``checkpoint.json`` back. The local checkpoint cannot see it;
the append-only sink (a file opened O_APPEND, or syslog) and the pinned public key do.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, text

from enclave.audit.chain import make_checkpoint, public_key_text, sign
from enclave.audit.sink import SINK_TAG
from enclave.services.context import Context, Settings
from tests.conftest import Server

ATTACKER = Ed25519PrivateKey.generate()


class Store:
    """Raw access to the server's database, as the attacker has it (sqlite3 / psycopg)."""

    def __init__(self, db_url: str) -> None:
        self.url = db_url
        self.sqlite = db_url.startswith("sqlite")

    def sql(self, statement: str, **params: Any) -> list[tuple[Any, ...]]:
        if self.sqlite:
            con = sqlite3.connect(self.url.split("///", 1)[1])
            try:
                rows = con.execute(statement, params).fetchall()
                con.commit()
                return rows
            finally:
                con.close()
        engine = create_engine(self.url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(statement), params)
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def head(self) -> int:
        return int(self.sql("SELECT seq FROM audit_head WHERE id = 1")[0][0])

    def truncate_to(self, keep: int) -> None:
        """Delete the records after ``keep`` and move the head back to it."""
        digest = self.sql("SELECT hash FROM audit_records WHERE seq = :k", k=keep)[0][0]
        self.sql("DELETE FROM audit_records WHERE seq > :k", k=keep)
        self.sql("UPDATE audit_head SET seq = :k, hash = :h WHERE id = 1", k=keep, h=digest)


@pytest.fixture
def store(db_url: str) -> Store:
    return Store(db_url)


def admin(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"})


def activity(api: httpx.Client, prefix: str, n: int = 3) -> None:
    """Audited actions: agencies and users."""
    for i in range(n):
        assert api.post("/v1/agencies", json={"name": f"{prefix}{i}", "quotas": {}}).status_code == 201
        r = api.post(
            "/v1/users",
            json={
                "name": f"{prefix}u{i}",
                "agency": f"{prefix}{i}",
                "clearance": "SECRET",
                "roles": ["user"],
            },
        )
        assert r.status_code == 201, r.text


def verify(server: Server, *args: str) -> tuple[int, str]:
    proc = server.run("audit", "verify", *args, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def start(live_server: Callable[..., Server], home: Path, db_url: str, *args: str) -> Server:
    return live_server(home, "--db", db_url, *args)


# -- the attack, with an O_APPEND file sink ---------------------------------------------------
def test_truncation_with_an_older_checkpoint_put_back_is_caught_by_the_file_sink(
    live_server: Callable[..., Server], tmp_path: Path, db_url: str, store: Store
) -> None:
    home = tmp_path / "home"
    sink = tmp_path / "sink" / "checkpoints.log"
    server = start(live_server, home, db_url, "--audit-sink-file", str(sink))
    with admin(server) as api:
        activity(api, "a")
        keep = store.head()
        old_checkpoint = (home / "audit" / "checkpoint.json").read_bytes()
        activity(api, "b")
    n = store.head()
    assert n > keep + 3
    assert verify(server, "--sink", str(sink))[0] == 0
    intact_head = store.head()  # the verification itself is a record

    # The attack: newest rows gone, head moved back, the older checkpoint put back.
    store.truncate_to(keep)
    (home / "audit" / "checkpoint.json").write_bytes(old_checkpoint)

    rc, out = verify(server, "--sink", str(sink))
    assert rc == 1
    assert f"audit log BROKEN at record {keep + 1}" in out, out
    assert f"records {keep + 1}-{intact_head} are missing" in out, out
    # The server knows its own sink file: a plain verify sees it too.
    rc, out = verify(server)
    assert rc == 1 and "audit log BROKEN" in out and "missing" in out, out
    # Nothing rewrote the sink: every line is still there, in order, newest last.
    seqs = [json.loads(line.split(SINK_TAG, 1)[1])["seq"] for line in sink.read_text().splitlines()]
    assert seqs == sorted(seqs) and seqs[-1] == intact_head


def test_records_written_after_the_truncation_do_not_hide_it(
    live_server: Callable[..., Server], tmp_path: Path, db_url: str, store: Store
) -> None:
    """The server goes on writing after the attack: the chain then reaches the sink's
    sequence number again, with other records — a rewritten tail, still caught."""
    home = tmp_path / "home"
    sink = tmp_path / "checkpoints.log"
    server = start(live_server, home, db_url, "--audit-sink-file", str(sink))
    with admin(server) as api:
        activity(api, "a")
        keep = store.head()
        old_checkpoint = (home / "audit" / "checkpoint.json").read_bytes()
        activity(api, "b", 2)
        n = store.head()
        store.truncate_to(keep)
        (home / "audit" / "checkpoint.json").write_bytes(old_checkpoint)
        activity(api, "c", 4)  # more records than were removed
    assert store.head() > n
    rc, out = verify(server, "--sink", str(sink))
    assert rc == 1
    assert f"record {n} differs from the sink's checkpoint" in out, out


# -- the attack, with syslog as the sink --------------------------------------------------------
@contextmanager
def syslog_receiver() -> Iterator[tuple[str, list[str]]]:
    """A UDP syslog collector on a free port: the lines it received."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    lines: list[str] = []
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            try:
                data, _ = sock.recvfrom(65536)
            except TimeoutError:
                continue
            lines.append(data.decode("utf-8", "replace"))

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}", lines
    finally:
        stop.set()
        thread.join()
        sock.close()


def test_the_syslog_sink_catches_what_the_local_checkpoint_cannot(
    live_server: Callable[..., Server], tmp_path: Path, db_url: str, store: Store
) -> None:
    home = tmp_path / "home"
    with syslog_receiver() as (address, received):
        server = start(live_server, home, db_url, "--audit-syslog", address)
        with admin(server) as api:
            activity(api, "a")
            keep = store.head()
            old_checkpoint = (home / "audit" / "checkpoint.json").read_bytes()
            activity(api, "b")
        n = store.head()
        store.truncate_to(keep)
        (home / "audit" / "checkpoint.json").write_bytes(old_checkpoint)
        # Without the sink the attack works: the log and the checkpoint agree (and the
        # verification is recorded as record keep + 1).
        rc, out = verify(server)
        assert rc == 0 and "intact" in out, out
        assert any(f'"seq":{n},' in line for line in received)
        export = tmp_path / "syslog-export.log"
        export.write_text("".join(f"Dec  5 10:00:00 host {line}\n" for line in received))
    assert all("enclave-audit:" in line for line in received)
    rc, out = verify(server, "--sink", str(export))
    assert rc == 1
    assert f"audit log BROKEN at record {keep + 2}" in out, out
    assert f"records {keep + 2}-{n} are missing" in out, out


# -- the pinned key -----------------------------------------------------------------------------
def test_up_prints_the_public_key_on_the_first_start_only(
    live_server: Callable[..., Server], tmp_path: Path, db_url: str
) -> None:
    home = tmp_path / "home"
    server = start(live_server, home, db_url)
    assert server.proc is not None and server.proc.stderr is not None
    printed = "".join(server.proc.stderr.readline() for _ in range(3))
    match = re.search(r"audit public key: (ed25519:[0-9a-f]{64})", printed)
    assert match, printed
    assert server.run("audit", "pubkey").stdout.strip() == match.group(1)
    key_file = home / "keys" / "audit-ed25519.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert server.run("audit", "pubkey", "--key-file", str(key_file)).stdout.strip() == match.group(1)
    server.stop()
    again = start(live_server, home, db_url)
    assert again.proc is not None and again.proc.stderr is not None
    assert "audit public key" not in again.proc.stderr.readline()


def test_verify_with_a_pinned_key(live_server: Callable[..., Server], tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"
    server = start(live_server, home, db_url)
    with admin(server) as api:
        activity(api, "a", 1)
    right = server.run("audit", "pubkey").stdout.strip()
    wrong = public_key_text(ATTACKER.public_key())
    rc, out = verify(server, "--pubkey", right)
    assert rc == 0 and "pinned key" in out, out
    key_file = tmp_path / "recorded.pub"
    key_file.write_text(right + "\n")
    assert verify(server, "--pubkey", str(key_file))[0] == 0
    pem = tmp_path / "recorded.pem"
    pem.write_bytes(
        ATTACKER.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for pinned in (wrong, str(pem)):
        rc, out = verify(server, "--pubkey", pinned)
        assert rc == 1, out
        assert "audit log BROKEN" in out and "checkpoint signature is invalid" in out, out
    rc, out = verify(server, "--pubkey", "ed25519:abc")
    assert rc != 0 and "64 hex digits" in out, out


def test_a_log_re_signed_with_a_new_key_is_refused_under_the_pinned_key(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    """The store's attacker swaps the signing key and re-signs every record and the
    checkpoint: the chain is consistent again, but not under the key the operator recorded."""
    home = tmp_path / "home"
    home.mkdir()
    ctx = Context(Settings(home=home, db_url=db_url))
    try:
        from enclave.services.bootstrap import bootstrap

        bootstrap(ctx)
        pinned = ctx.audit.public_key
        n = store.head()
        for seq, digest in store.sql("SELECT seq, hash FROM audit_records ORDER BY seq"):
            store.sql(
                "UPDATE audit_records SET signature = :s WHERE seq = :q", s=sign(ATTACKER, digest), q=seq
            )
        head = store.sql("SELECT hash FROM audit_head WHERE id = 1")[0][0]
        forged = make_checkpoint(ATTACKER, n, head, "2030-01-01T00:00:00.000000+00:00")
        (home / "audit" / "checkpoint.json").write_text(json.dumps(forged.__dict__))
    finally:
        ctx.close()
    key_file = home / "keys" / "audit-ed25519.pem"
    key_file.write_bytes(
        ATTACKER.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    swapped = Context(Settings(home=home, db_url=db_url))
    try:
        with swapped.sessions() as session:
            assert swapped.audit.verify(session).ok  # consistent under the key it now holds
            result = swapped.audit.verify(session, pinned)
        assert not result.ok
        assert result.problem == "checkpoint signature is invalid"
        # Even with the checkpoint gone and only records left, the first record fails.
        (home / "audit" / "checkpoint.json").unlink()
        with swapped.sessions() as session:
            result = swapped.audit.verify(session, pinned)
        assert (result.ok, result.first_bad_seq) == (False, 1)
        assert "record 1 has an invalid signature" in str(result.problem)
    finally:
        swapped.close()


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = home / "keys" / "audit-ed25519.pem"
    Context(Settings(home=home, db_url=f"sqlite+pysqlite:///{tmp_path / 'a.db'}")).close()
    key.chmod(0o644)
    with pytest.raises(ValueError, match="accessible to others"):
        Context(Settings(home=home, db_url=f"sqlite+pysqlite:///{tmp_path / 'a.db'}"))
