"""Exact audit event sequences emitted by the service flows, on SQLite and PostgreSQL, and
the rule that a record commits if and only if the action it records commits."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from enclave.audit.events import AuditEvent as E
from enclave.errors import Conflict, Forbidden, NotFound
from enclave.services import artifacts, auth, tenancy, transfers
from enclave.services import audit as audit_service
from enclave.services.bootstrap import bootstrap
from enclave.services.context import Context
from enclave.services.unit import Actor
from enclave.store.models import Agency, Artifact, AuditRecord, Transfer


# -- helpers ----------------------------------------------------------------------------------
async def stream(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 7):
        yield data[i : i + 7]


def put(ctx: Context, actor: Actor, name: str, data: bytes) -> dict[str, Any]:
    return asyncio.run(artifacts.put(ctx, actor, name, stream(data)))


def head(ctx: Context) -> int:
    ctx.denials.flush()  # denials that answer like a miss are recorded off the request path
    with ctx.sessions() as s:
        return int(s.execute(select(func.coalesce(func.max(AuditRecord.seq), 0))).scalar_one())


def records_after(ctx: Context, seq: int) -> list[AuditRecord]:
    ctx.denials.flush()
    with ctx.sessions() as s:
        return list(
            s.execute(select(AuditRecord).where(AuditRecord.seq > seq).order_by(AuditRecord.seq)).scalars()
        )


class Recorder:
    """Remembers the head; ``new()`` returns the records appended since the last call."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.mark = head(ctx)

    def new(self) -> list[AuditRecord]:
        recs = records_after(self.ctx, self.mark)
        self.mark = recs[-1].seq if recs else self.mark
        return recs

    def events(self) -> list[str]:
        return [r.event for r in self.new()]


def brief(r: AuditRecord) -> tuple[Any, ...]:
    return (
        r.event,
        r.outcome,
        r.actor,
        r.agency,
        r.session_label,
        r.object_kind,
        r.object_id,
        r.object_label,
    )


def details(r: AuditRecord) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(r.details)
    return out


def verify(ctx: Context) -> Any:
    with ctx.sessions() as s:
        return ctx.audit.verify(s)


@dataclass
class World:
    admin: Actor
    alice: Actor  # nasa, SECRET session; requests transfers
    bob: Actor  # nasa, release authority, TOP SECRET clearance, SECRET session
    carol: Actor  # nasa, release authority, SECRET
    dave: Actor  # noaa, SECRET: another agency
    alice_cui: Actor  # alice at a lower session label


def actor_for(ctx: Context, admin: Actor, user: str, marking: str) -> Actor:
    _row, secret = auth.mint_token(ctx, admin, user, marking)
    return auth.authenticate(ctx, secret)


@pytest.fixture
def world(ctx: Context) -> World:
    bootstrap(ctx)
    admin = auth.authenticate(ctx, (ctx.settings.home / "admin.token").read_text().strip())
    tenancy.create_agency(ctx, admin, "nasa")
    tenancy.create_agency(ctx, admin, "noaa")
    tenancy.create_user(ctx, admin, "alice", "nasa", "SECRET", ["user"])
    tenancy.create_user(ctx, admin, "bob", "nasa", "TOP SECRET", ["user", "release-authority"])
    tenancy.create_user(ctx, admin, "carol", "nasa", "SECRET", ["release-authority"])
    tenancy.create_user(ctx, admin, "dave", "noaa", "SECRET", ["user"])
    return World(
        admin=admin,
        alice=actor_for(ctx, admin, "alice", "SECRET"),
        bob=actor_for(ctx, admin, "bob", "SECRET"),
        carol=actor_for(ctx, admin, "carol", "SECRET"),
        dave=actor_for(ctx, admin, "dave", "SECRET"),
        alice_cui=actor_for(ctx, admin, "alice", "CUI"),
    )


# -- administration ---------------------------------------------------------------------------
def test_bootstrap_records_its_steps_once(ctx: Context) -> None:
    rec = Recorder(ctx)
    assert bootstrap(ctx) is True
    got = rec.new()
    assert [r.event for r in got] == [E.AGENCY_CREATED, E.USER_CREATED, E.SERVER_BOOTSTRAPPED]
    assert [r.seq for r in got] == [1, 2, 3]
    assert {r.actor for r in got} == {None}  # the server itself, not a user
    assert details(got[1]) == {
        "agency": "enclave",
        "clearance": "TOP SECRET//G/HCS/SI/TK",
        "roles": ["admin", "auditor", "operator"],
    }
    assert details(got[2]) == {"admin": "admin", "fleet": "local"}
    assert bootstrap(ctx) is False
    assert rec.new() == []


def test_admin_actions(ctx: Context, world: World) -> None:
    rec = Recorder(ctx)
    tenancy.create_agency(ctx, world.admin, "doe", tenancy.Quotas(gpu_hours=10.0))
    [r] = rec.new()
    assert brief(r) == (E.AGENCY_CREATED, "allow", "admin", "enclave", "UNCLASSIFIED", "agency", "doe", None)
    assert details(r) == {
        "gpu_hours": 10.0,
        "kwh": None,
        "storage_bytes": None,
        "gateway_rpm": None,
        "gateway_tpm": None,
        "gateway_token_budget": None,
    }
    assert r.label_rank == 0

    tenancy.create_user(ctx, world.admin, "erin", "doe", "CUI", ["user"])
    [r] = rec.new()
    assert brief(r) == (E.USER_CREATED, "allow", "admin", "enclave", "UNCLASSIFIED", "user", "erin", None)
    assert details(r) == {"agency": "doe", "clearance": "CUI", "roles": ["user"]}

    row, _secret = auth.mint_token(ctx, world.admin, "erin", "CUI")
    [r] = rec.new()
    assert brief(r) == (E.TOKEN_MINTED, "allow", "admin", "enclave", "UNCLASSIFIED", "token", row.id, "CUI")
    assert details(r)["for_user"] == "erin"
    assert r.label_rank == 1

    tenancy.update_user(ctx, world.admin, "erin", disabled=True)
    tenancy.create_project(ctx, world.admin, "doe", "fusion")
    auth.revoke_token(ctx, world.admin, row.id)
    assert rec.events() == [E.USER_UPDATED, E.PROJECT_CREATED, E.TOKEN_REVOKED]
    auth.revoke_token(ctx, world.admin, row.id)  # already revoked: nothing happens, nothing recorded
    assert rec.events() == []


def test_a_non_admin_is_refused_and_only_the_denial_is_recorded(ctx: Context, world: World) -> None:
    rec = Recorder(ctx)
    with pytest.raises(Forbidden):
        tenancy.create_agency(ctx, world.alice, "rogue")
    [r] = rec.new()
    assert brief(r) == (E.ACCESS_DENIED, "deny", "alice", "nasa", "SECRET", "administration", None, None)
    assert details(r) == {
        "action": "administer",
        "rule": "role",
        "reason": "needs the admin or operator role",
    }
    with ctx.sessions() as s:
        assert s.execute(select(Agency).where(Agency.name == "rogue")).first() is None


# -- artifacts --------------------------------------------------------------------------------
def test_put_then_read(ctx: Context, world: World) -> None:
    rec = Recorder(ctx)
    data = b"ocean temperatures, 1990-2020\n" * 3
    art = put(ctx, world.alice, "sst.csv", data)
    [r] = rec.new()
    assert brief(r) == (
        E.ARTIFACT_CREATED,
        "allow",
        "alice",
        "nasa",
        "SECRET",
        "artifact",
        art["id"],
        "SECRET",
    )
    assert details(r) == {
        "name": "sst.csv",
        "kind": "artifact",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert r.label_rank == 2

    artifacts.show(ctx, world.alice, art["id"])
    _meta, content = artifacts.open_content(ctx, world.alice, art["id"])
    assert b"".join(content) == data
    got = rec.new()
    assert [brief(r) for r in got] == [
        (E.ARTIFACT_READ, "allow", "alice", "nasa", "SECRET", "artifact", art["id"], "SECRET")
    ] * 2
    assert [details(r) for r in got] == [{"part": "metadata"}, {"part": "content"}]

    artifacts.list_visible(ctx, world.alice)  # listing is not a read of any one artifact
    assert rec.events() == []
    artifacts.delete(ctx, world.alice, art["id"])
    assert rec.events() == [E.ARTIFACT_DELETED]


@pytest.mark.parametrize(
    ("who", "rule"),
    [("dave", "tenancy"), ("alice_cui", "simple_security")],
    ids=["other agency", "lower session label"],
)
def test_reading_an_invisible_artifact_records_only_a_denial(
    ctx: Context, world: World, who: str, rule: str
) -> None:
    art = put(ctx, world.alice, "plan.txt", b"the plan")
    reader: Actor = getattr(world, who)
    rec = Recorder(ctx)
    with pytest.raises(NotFound) as invisible:
        artifacts.show(ctx, reader, art["id"])
    with pytest.raises(NotFound):
        artifacts.open_content(ctx, reader, art["id"])
    got = rec.new()
    assert [r.event for r in got] == [E.ACCESS_DENIED, E.ACCESS_DENIED]
    assert E.ARTIFACT_READ not in {r.event for r in got}
    r = got[0]
    assert (r.outcome, r.actor, r.object_kind, r.object_id, r.object_label) == (
        "deny",
        reader.subject.user,
        "artifact",
        art["id"],
        "SECRET",
    )
    assert details(r)["rule"] == rule
    assert details(r)["action"] == "read"

    # A truly missing artifact gives the same answer and records nothing.
    with pytest.raises(NotFound) as missing:
        artifacts.show(ctx, reader, "00000000-0000-0000-0000-000000000000")
    assert str(missing.value) == str(invisible.value).replace(
        art["id"], "00000000-0000-0000-0000-000000000000"
    )
    assert rec.new() == []


def test_share(ctx: Context, world: World) -> None:
    art = put(ctx, world.alice, "shared.txt", b"for noaa too")
    rec = Recorder(ctx)
    artifacts.share(ctx, world.alice, art["id"], "noaa")
    with pytest.raises(Conflict):
        artifacts.share(ctx, world.alice, art["id"], "noaa")
    artifacts.show(ctx, world.dave, art["id"])
    got = rec.new()
    assert [(r.event, r.actor) for r in got] == [(E.ARTIFACT_SHARED, "alice"), (E.ARTIFACT_READ, "dave")]
    assert details(got[0]) == {"with": "noaa"}


# -- the cross-domain guard -------------------------------------------------------------------
def test_full_downgrade(ctx: Context, world: World) -> None:
    art = put(ctx, world.alice, "weather.csv", b"station,temp\n1,20.5\n2,19.0\n")
    rec = Recorder(ctx)

    t = transfers.request(ctx, world.alice, art["id"], "UNCLASSIFIED", "public weather data")
    assert t["state"] == "pending"
    [r] = rec.new()
    assert brief(r) == (
        E.TRANSFER_REQUESTED,
        "allow",
        "alice",
        "nasa",
        "SECRET",
        "transfer",
        t["id"],
        "SECRET",
    )
    assert details(r) == {"artifact": art["id"], "to": "UNCLASSIFIED", "downgrade": True}

    transfers.review(ctx, world.bob, t["id"], approve=True, comment="ok")
    [r] = rec.new()
    assert (r.event, r.actor, r.object_id) == (E.TRANSFER_APPROVED, "bob", t["id"])
    assert details(r) == {"approvals": 1, "comment": "ok"}

    done = transfers.review(ctx, world.carol, t["id"], approve=True)
    assert done["state"] == "released"
    new_id = done["released_artifact_id"]
    got = rec.new()
    assert [(r.event, r.outcome, r.actor, r.object_kind, r.object_id, r.object_label) for r in got] == [
        (E.TRANSFER_APPROVED, "allow", "carol", "transfer", t["id"], "SECRET"),
        (E.TRANSFER_RELEASED, "allow", "carol", "transfer", t["id"], "SECRET"),
        (E.ARTIFACT_CREATED, "allow", "carol", "artifact", new_id, "UNCLASSIFIED"),
    ]
    assert details(got[0])["approvals"] == 2
    assert details(got[1]) == {"artifact": new_id, "to": "UNCLASSIFIED"}
    assert details(got[2]) == {"by": "guard", "transfer": t["id"]}
    assert got[2].label_rank == 0

    # Whole flow, in order, with nothing else interleaved:
    assert [r.event for r in records_after(ctx, got[0].seq - 3)] == [
        E.TRANSFER_REQUESTED,
        E.TRANSFER_APPROVED,
        E.TRANSFER_APPROVED,
        E.TRANSFER_RELEASED,
        E.ARTIFACT_CREATED,
    ]
    assert verify(ctx).ok


def test_scan_refusal(ctx: Context, world: World) -> None:
    art = put(ctx, world.alice, "brief.txt", b"SECRET\nthe troop movements\nSECRET\n")
    rec = Recorder(ctx)
    t = transfers.request(ctx, world.alice, art["id"], "UNCLASSIFIED", "please")
    assert t["state"] == "refused"
    got = rec.new()
    assert [(r.event, r.outcome, r.object_id) for r in got] == [
        (E.TRANSFER_REQUESTED, "allow", t["id"]),
        (E.TRANSFER_SCAN_REFUSED, "deny", t["id"]),
    ]
    assert "SECRET" in details(got[1])["found"]
    with pytest.raises(Conflict):
        transfers.review(ctx, world.bob, t["id"], approve=True)
    assert rec.events() == []
    with ctx.sessions() as s:
        assert s.execute(select(func.count()).select_from(Artifact)).scalar_one() == 1  # no copy


def test_reviewer_refusal_and_the_two_person_rule(ctx: Context, world: World) -> None:
    art = put(ctx, world.alice, "notes.txt", b"harmless notes")
    t = transfers.request(ctx, world.alice, art["id"], "CUI", "share with contractors")
    rec = Recorder(ctx)
    with pytest.raises(Forbidden):  # alice holds no release-authority role
        transfers.review(ctx, world.alice, t["id"], approve=True)
    transfers.review(ctx, world.bob, t["id"], approve=True)
    with pytest.raises(Conflict):  # bob cannot be both reviewers
        transfers.review(ctx, world.bob, t["id"], approve=True)
    done = transfers.review(ctx, world.carol, t["id"], approve=False, comment="not releasable")
    assert done["state"] == "refused"
    got = rec.new()
    assert [(r.event, r.outcome, r.actor) for r in got] == [
        (E.ACCESS_DENIED, "deny", "alice"),
        (E.TRANSFER_APPROVED, "allow", "bob"),
        (E.TRANSFER_REFUSED, "deny", "carol"),
    ]
    assert details(got[0])["rule"] == "role"
    assert details(got[2]) == {"comment": "not releasable"}


def test_upgrade_is_released_at_once(ctx: Context, world: World) -> None:
    art = put(ctx, world.alice, "up.txt", b"to a higher level")
    rec = Recorder(ctx)
    t = transfers.request(ctx, world.alice, art["id"], "TOP SECRET", "analysis at TS")
    assert t["state"] == "released"
    got = rec.new()
    assert [(r.event, r.actor, r.object_label) for r in got] == [
        (E.TRANSFER_REQUESTED, "alice", "SECRET"),
        (E.TRANSFER_RELEASED, "alice", "SECRET"),
        (E.ARTIFACT_CREATED, "alice", "TOP SECRET"),
    ]
    assert details(got[0])["downgrade"] is False


def test_verifying_is_recorded_only_when_the_chain_is_ok(ctx: Context, world: World) -> None:
    rec = Recorder(ctx)
    out = audit_service.verify(ctx, world.admin)
    assert out["ok"] is True
    [r] = rec.new()
    assert (r.event, r.actor, r.object_kind) == (E.AUDIT_VERIFIED, "admin", "audit")
    assert details(r) == {"records": out["records"]}
    with pytest.raises(Forbidden):
        audit_service.verify(ctx, world.alice)
    assert [(r.event, r.actor) for r in rec.new()] == [(E.ACCESS_DENIED, "alice")]


# -- one transaction: the action and its record -----------------------------------------------
def test_a_failure_after_the_record_rolls_back_action_and_record(
    ctx: Context, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_head = head(ctx)
    checkpoint = ctx.audit.read_checkpoint()

    def boom(_agency: Agency) -> dict[str, Any]:  # runs inside the unit, after u.record(...)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tenancy, "agency_view", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        tenancy.create_agency(ctx, world.admin, "doomed")
    monkeypatch.undo()

    with ctx.sessions() as s:
        assert s.execute(select(Agency).where(Agency.name == "doomed")).first() is None
    assert head(ctx) == before_head
    assert ctx.audit.read_checkpoint() == checkpoint
    assert verify(ctx).ok
    # The chain goes on from the same head: the next record takes the seq the failed one had.
    rec = Recorder(ctx)
    tenancy.create_agency(ctx, world.admin, "doomed")
    [r] = rec.new()
    assert (r.seq, r.event, r.object_id) == (before_head + 1, E.AGENCY_CREATED, "doomed")


def test_a_failing_audit_append_rolls_back_the_upload(
    ctx: Context, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_head = head(ctx)
    real_append = ctx.audit.append_all

    def append_then_fail(session: Any, entries: Any) -> Any:
        real_append(session, entries)
        session.flush()  # the record and the artifact row reach the database...
        raise RuntimeError("crash before commit")  # ...and the transaction never commits

    monkeypatch.setattr(ctx.audit, "append_all", append_then_fail)
    with pytest.raises(RuntimeError, match="crash before commit"):
        put(ctx, world.alice, "lost.txt", b"never stored")
    monkeypatch.undo()

    with ctx.sessions() as s:
        assert s.execute(select(func.count()).select_from(Artifact)).scalar_one() == 0
    assert head(ctx) == before_head
    assert [p for p in (ctx.settings.home / "blobs").rglob("*") if p.is_file()] == []  # blob removed too
    assert verify(ctx).ok


def test_a_failed_release_leaves_an_approved_transfer_and_no_release_record(
    ctx: Context, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = put(ctx, world.alice, "later.txt", b"release me later")
    t = transfers.request(ctx, world.alice, art["id"], "UNCLASSIFIED", "needed downstairs")
    transfers.review(ctx, world.bob, t["id"], approve=True)
    rec = Recorder(ctx)

    def broken_view(*_a: Any) -> dict[str, Any]:  # the last step inside the release unit
        raise RuntimeError("crash during release")

    real_view = transfers._view
    monkeypatch.setattr(transfers, "_view", broken_view)
    with pytest.raises(RuntimeError):
        transfers.review(ctx, world.carol, t["id"], approve=True)
    monkeypatch.setattr(transfers, "_view", real_view)

    # The approval committed on its own; the release (copy, records) did not.
    assert rec.events() == [E.TRANSFER_APPROVED]
    with ctx.sessions() as s:
        assert s.get(Transfer, t["id"]).state == "approved"
        assert s.execute(select(func.count()).select_from(Artifact)).scalar_one() == 1
    done = transfers.release(ctx, world.carol, t["id"])
    assert done["state"] == "released"
    assert rec.events() == [E.TRANSFER_RELEASED, E.ARTIFACT_CREATED]
    assert verify(ctx).ok
