"""Tampering with the audit log in the real database (SQLite and PostgreSQL) and with the
checkpoint file: verification names the first bad record every time, and passes before.

The log is filled by real service calls; the tampering is raw SQL, as an intruder with
database access would do it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text

from enclave.audit.chain import GENESIS_HASH, VerifyResult, make_checkpoint, record_hash, sign
from enclave.audit.events import AuditEvent
from enclave.errors import NotFound
from enclave.services import artifacts, auth, tenancy, transfers
from enclave.services import audit as audit_service
from enclave.services.bootstrap import bootstrap
from enclave.services.context import Context
from enclave.services.unit import Actor
from enclave.store.models import AuditRecord

ATTACKER = Ed25519PrivateKey.generate()
COLUMNS = [c.name for c in AuditRecord.__table__.columns]


# -- producing a log --------------------------------------------------------------------------
async def stream(data: bytes) -> AsyncIterator[bytes]:
    yield data


def put(ctx: Context, actor: Actor, name: str, data: bytes) -> dict[str, Any]:
    return asyncio.run(artifacts.put(ctx, actor, name, stream(data)))


def actor_for(ctx: Context, admin: Actor, user: str, marking: str) -> Actor:
    _row, secret = auth.mint_token(ctx, admin, user, marking)
    return auth.authenticate(ctx, secret)


class Log:
    """A context with a populated audit log, and the tools to tamper with it."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        bootstrap(ctx)
        self.admin = auth.authenticate(ctx, (ctx.settings.home / "admin.token").read_text().strip())
        tenancy.create_agency(ctx, self.admin, "nasa")
        tenancy.create_agency(ctx, self.admin, "noaa")
        tenancy.create_user(ctx, self.admin, "alice", "nasa", "SECRET", ["user"])
        tenancy.create_user(ctx, self.admin, "bob", "nasa", "SECRET", ["release-authority"])
        tenancy.create_user(ctx, self.admin, "carol", "nasa", "TOP SECRET", ["release-authority"])
        tenancy.create_user(ctx, self.admin, "dave", "noaa", "SECRET", ["user"])
        alice = actor_for(ctx, self.admin, "alice", "SECRET")
        bob = actor_for(ctx, self.admin, "bob", "SECRET")
        carol = actor_for(ctx, self.admin, "carol", "SECRET")
        dave = actor_for(ctx, self.admin, "dave", "SECRET")
        art = put(ctx, alice, "forecast.csv", b"day,temp\nmon,21\n")
        secret = put(ctx, alice, "brief.txt", b"SECRET//SI\nbriefing\n")
        with pytest.raises(NotFound):
            artifacts.show(ctx, dave, art["id"])  # an access.denied record
        ctx.denials.flush()  # written off the request path: keep it in its place in the chain
        t = transfers.request(ctx, alice, art["id"], "UNCLASSIFIED", "publish the forecast")
        transfers.review(ctx, bob, t["id"], approve=True)
        transfers.review(ctx, carol, t["id"], approve=True)
        transfers.request(ctx, alice, secret["id"], "CUI", "needed")  # refused by the scan
        artifacts.show(ctx, alice, art["id"])
        self.n = self.head()
        assert self.n == 24
        self.checkpoint_path = ctx.settings.home / "audit" / "checkpoint.json"
        self.saved_rows = [self.row(seq) for seq in range(1, self.n + 1)]
        self.saved_checkpoint = self.checkpoint_path.read_bytes()

    # reading
    def head(self) -> int:
        with self.ctx.sessions() as s:
            return int(s.execute(text("SELECT max(seq) FROM audit_records")).scalar_one())

    def row(self, seq: int) -> dict[str, Any]:
        with self.ctx.sessions() as s:
            rec = s.execute(select(*AuditRecord.__table__.columns).where(AuditRecord.seq == seq)).one()
            return dict(rec._mapping)

    def verify(self) -> VerifyResult:
        with self.ctx.sessions() as s:
            return self.ctx.audit.verify(s)

    def assert_ok(self) -> None:
        result = self.verify()
        assert (result.ok, result.first_bad_seq, result.problem) == (True, None, None)

    def assert_broken_at(self, seq: int, problem: str = "", case: str = "") -> VerifyResult:
        result = self.verify()
        assert result.ok is False, case
        assert result.first_bad_seq == seq, f"{case}: {result.problem}"
        assert problem in (result.problem or ""), f"{case}: {result.problem}"
        return result

    def reset(self) -> None:
        """Put the log, its head and the checkpoint back exactly as the services left them."""
        cols = ", ".join(COLUMNS)
        values = ", ".join(":" + c for c in COLUMNS)
        with self.ctx.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_records"))
            conn.execute(text(f"INSERT INTO audit_records ({cols}) VALUES ({values})"), self.saved_rows)  # noqa: S608
            last = self.saved_rows[-1]
            conn.execute(
                text("UPDATE audit_head SET seq = :s, hash = :h"), {"s": last["seq"], "h": last["hash"]}
            )
        self.checkpoint_path.write_bytes(self.saved_checkpoint)
        self.assert_ok()

    # tampering
    def sql(self, statement: str, **params: Any) -> None:
        with self.ctx.engine.begin() as conn:
            conn.execute(text(statement), params)

    def update(self, seq: int, column: str, value: Any) -> None:
        self.sql(f"UPDATE audit_records SET {column} = :v WHERE seq = :s", v=value, s=seq)  # noqa: S608

    def insert(self, rec: dict[str, Any]) -> None:
        cols = ", ".join(rec)
        self.sql(f"INSERT INTO audit_records ({cols}) VALUES ({', '.join(':' + c for c in rec)})", **rec)  # noqa: S608

    def forge(self, seq: int, prev: str, key: Ed25519PrivateKey = ATTACKER, **fields: Any) -> dict[str, Any]:
        """A well-formed record: right seq, linked and hashed correctly, signed by ``key``."""
        rec: dict[str, Any] = {
            "seq": seq,
            "ts": "2030-01-01T00:00:00.000000+00:00",
            "event": str(AuditEvent.ARTIFACT_READ),
            "outcome": "allow",
            "actor": "mallory",
            "agency": "nasa",
            "session_label": "SECRET",
            "object_kind": "artifact",
            "object_id": "00000000-0000-0000-0000-000000000000",
            "object_label": "SECRET",
            "label_rank": 2,
            "details": "{}",
            **fields,
        }
        rec["prev_hash"] = prev
        rec["hash"] = record_hash(prev, rec)
        rec["signature"] = sign(key, rec["hash"])
        return rec


@pytest.fixture
def log(ctx: Context) -> Log:
    populated = Log(ctx)
    populated.assert_ok()
    return populated


# -- before any tampering ---------------------------------------------------------------------
def test_an_untouched_log_verifies(log: Log) -> None:
    result = log.verify()
    assert (result.ok, result.records, result.first_bad_seq) == (True, log.n, None)
    checkpoint = log.ctx.audit.read_checkpoint()
    assert checkpoint is not None
    assert (checkpoint.seq, checkpoint.hash) == (log.n, log.row(log.n)["hash"])
    out = audit_service.verify(log.ctx, log.admin)
    assert out == {"ok": True, "records": log.n, "first_bad_seq": None, "problem": None}
    log.assert_ok()  # the audit.verified record it added keeps the chain whole
    assert log.head() == log.n + 1


# -- changing a column ------------------------------------------------------------------------
def changed(column: str, old: Any) -> Any:
    """A different value of the same type for ``column``."""
    if column in ("seq",):
        return old + 10_000
    if column == "label_rank":
        return old + 1
    if column == "outcome":
        return "allow" if old == "deny" else "deny"
    if column == "details":
        return json.dumps({"tampered": True})
    if column in ("prev_hash", "hash", "signature"):
        return ("f" if old[0] != "f" else "e") + old[1:]
    if old is None:
        return "forged"
    return old[:-1] + ("X" if old[-1] != "X" else "Y")


def test_changing_any_column_of_any_record_is_caught_there(log: Log) -> None:
    for column in COLUMNS:
        for seq in (1, log.n // 2, log.n):
            case = f"{column} of record {seq}"
            original = log.row(seq)[column]
            new = changed(column, original)
            if column == "seq":
                log.sql("UPDATE audit_records SET seq = :v WHERE seq = :s", v=new, s=seq)
                log.assert_broken_at(seq, "missing or out of order", case)
                log.sql("UPDATE audit_records SET seq = :s WHERE seq = :v", v=new, s=seq)
            else:
                log.update(seq, column, new)
                log.assert_broken_at(seq, case=case)
                log.update(seq, column, original)
            log.assert_ok()  # put back exactly as it was, it verifies again


def test_nulling_a_column_is_caught(log: Log) -> None:
    seq = next(s for s in range(log.n, 0, -1) if log.row(s)["actor"] is not None)
    log.update(seq, "actor", None)
    log.assert_broken_at(seq, "modified")


def test_rewriting_details_as_equivalent_but_uncanonical_json_is_caught(log: Log) -> None:
    seq = next(s for s in range(1, log.n) if json.loads(log.row(s)["details"]))
    original = log.row(seq)["details"]
    log.update(seq, "details", json.dumps(json.loads(original), indent=1))
    log.assert_broken_at(seq, "modified")


def test_flipping_a_denial_to_allow_and_rehashing_still_fails_on_the_signature(log: Log) -> None:
    seq = next(s for s in range(1, log.n + 1) if log.row(s)["outcome"] == "deny")
    rec = log.row(seq)
    rec["outcome"] = "allow"
    new_hash = record_hash(rec["prev_hash"], rec)
    log.sql("UPDATE audit_records SET outcome = 'allow', hash = :h WHERE seq = :s", h=new_hash, s=seq)
    log.assert_broken_at(seq, "invalid signature")


# -- deleting, inserting, reordering ----------------------------------------------------------
def test_deleting_a_record_is_caught_at_its_seq(log: Log) -> None:
    for seq in (1, 2, log.n // 2, log.n - 1):
        log.sql("DELETE FROM audit_records WHERE seq = :s", s=seq)
        log.assert_broken_at(seq, f"record {seq} is missing", f"record {seq} deleted")
        log.reset()


def test_deleting_the_last_record_is_caught_by_the_checkpoint(log: Log) -> None:
    log.sql("DELETE FROM audit_records WHERE seq = :s", s=log.n)
    log.assert_broken_at(log.n, "truncated")


def test_appending_a_forged_record_is_caught(log: Log) -> None:
    forged = log.forge(log.n + 1, log.row(log.n)["hash"])
    log.insert(forged)
    log.sql("UPDATE audit_head SET seq = :s, hash = :h", s=forged["seq"], h=forged["hash"])
    log.assert_broken_at(log.n + 1, "invalid signature")


def test_appending_a_record_with_made_up_hashes_is_caught(log: Log) -> None:
    forged = log.forge(log.n + 1, log.row(log.n)["hash"])
    forged.update(hash="ab" * 32, signature="cd" * 64)
    log.insert(forged)
    log.assert_broken_at(log.n + 1, "modified")


def test_replacing_a_record_with_a_forgery_is_caught_at_its_seq(log: Log) -> None:
    seq = log.n // 2
    original = log.row(seq)
    log.sql("DELETE FROM audit_records WHERE seq = :s", s=seq)
    log.insert(log.forge(seq, original["prev_hash"]))
    log.assert_broken_at(seq, "invalid signature")


def test_a_forgery_at_seq_one_is_caught(log: Log) -> None:
    log.sql("DELETE FROM audit_records WHERE seq = 1")
    log.insert(log.forge(1, GENESIS_HASH, event=str(AuditEvent.SERVER_BOOTSTRAPPED)))
    log.assert_broken_at(1, "invalid signature")


def test_swapping_the_seq_of_two_records_is_caught_at_the_earlier(log: Log) -> None:
    for a, b in [(5, 6), (3, log.n - 4), (1, log.n), (log.n - 1, log.n)]:
        log.sql("UPDATE audit_records SET seq = -1 WHERE seq = :a", a=a)
        log.sql("UPDATE audit_records SET seq = :a WHERE seq = :b", a=a, b=b)
        log.sql("UPDATE audit_records SET seq = :b WHERE seq = -1", b=b)
        log.assert_broken_at(a, case=f"records {a} and {b} swapped")
        log.reset()


# -- truncation -------------------------------------------------------------------------------
def test_truncating_the_tail_is_caught_at_the_first_missing_seq(log: Log) -> None:
    for keep in (0, 1, 10, log.n - 1):
        log.sql("DELETE FROM audit_records WHERE seq > :k", k=keep)
        log.assert_broken_at(keep + 1, "truncated", f"truncated to {keep} records")
        log.reset()


def test_truncating_and_rewinding_the_head_is_still_caught(log: Log) -> None:
    keep = log.n - 5
    log.sql("DELETE FROM audit_records WHERE seq > :k", k=keep)
    log.sql("UPDATE audit_head SET seq = :k, hash = :h", k=keep, h=log.row(keep)["hash"])
    log.assert_broken_at(keep + 1, "truncated")


def test_the_service_reports_the_break_and_records_no_verification(log: Log) -> None:
    log.sql("DELETE FROM audit_records WHERE seq = 7")
    out = audit_service.verify(log.ctx, log.admin)
    assert (out["ok"], out["first_bad_seq"], out["records"]) == (False, 7, 7)
    assert "record 7 is missing" in out["problem"]
    assert log.head() == log.n  # no audit.verified appended to a broken chain


# -- the checkpoint file ----------------------------------------------------------------------
def test_the_checkpoint_file_is_private(log: Log) -> None:
    path = log.checkpoint_path
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert json.loads(path.read_text())["seq"] == log.n


def test_a_deleted_checkpoint_is_reported(log: Log) -> None:
    log.checkpoint_path.unlink()
    result = log.assert_broken_at(log.n + 1, "checkpoint is missing")
    assert result.records == log.n


def test_a_deleted_checkpoint_and_truncated_tail_is_reported(log: Log) -> None:
    log.checkpoint_path.unlink()
    log.sql("DELETE FROM audit_records WHERE seq > :k", k=log.n - 3)
    log.assert_broken_at(log.n - 2, "checkpoint is missing")


def test_a_fresh_store_needs_no_checkpoint(ctx: Context) -> None:
    assert ctx.audit.read_checkpoint() is None
    with ctx.sessions() as s:
        assert ctx.audit.verify(s).ok


EDITS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "not json": lambda cp: "{not json",
    "empty file": lambda cp: "",
    "empty object": lambda cp: {},
    "a list": lambda cp: [cp["seq"], cp["hash"]],
    "null": lambda cp: None,
    "seq not a number": lambda cp: {**cp, "seq": "many"},
    "missing signature": lambda cp: {k: v for k, v in cp.items() if k != "signature"},
}


def test_an_unreadable_checkpoint_is_reported(log: Log) -> None:
    for name, edit in EDITS.items():
        new = edit(json.loads(log.saved_checkpoint))
        log.checkpoint_path.write_text(new if isinstance(new, str) else json.dumps(new))
        log.assert_broken_at(0, "checkpoint signature is invalid", name)
        log.reset()


def test_an_edited_checkpoint_is_reported(log: Log) -> None:
    edits = {
        "seq": log.n - 5,  # claim a shorter log, to hide a truncation
        "hash": log.row(log.n - 5)["hash"],
        "ts": "2020-01-01T00:00:00.000000+00:00",
        "signature": "00" * 64,
    }
    for field, value in edits.items():
        cp = {**json.loads(log.saved_checkpoint), field: value}
        log.checkpoint_path.write_text(json.dumps(cp))
        log.assert_broken_at(cp["seq"], "checkpoint signature is invalid", f"checkpoint {field} edited")
        log.reset()


def test_a_checkpoint_signed_by_another_key_is_reported(log: Log) -> None:
    keep = log.n - 5
    log.sql("DELETE FROM audit_records WHERE seq > :k", k=keep)
    forged = make_checkpoint(ATTACKER, keep, log.row(keep)["hash"], "2030-01-01T00:00:00.000000+00:00")
    log.checkpoint_path.write_text(json.dumps(forged.__dict__))
    log.assert_broken_at(keep, "checkpoint signature is invalid")


def test_an_older_genuine_checkpoint_is_accepted(log: Log) -> None:
    """Records committed after the checkpoint (a crash before it was rewritten) are legal;
    the checkpoint bounds truncation, it does not pin the head."""
    path = log.checkpoint_path
    old = path.read_text()
    put(log.ctx, log.admin, "later.txt", b"later")
    newer = log.ctx.audit.read_checkpoint()
    assert newer is not None
    assert newer.seq == log.n + 1
    path.write_text(old)
    log.assert_ok()
    # ... but the records it covers must all be there.
    log.sql("DELETE FROM audit_records WHERE seq >= :s", s=log.n)
    log.assert_broken_at(log.n, "truncated")
