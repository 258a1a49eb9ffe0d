"""The pure audit chain: every way of tampering with a list of records is caught, and the
verifier names the first record that is wrong.

Records are built here with the chain's own primitives (``record_hash`` and ``sign``), exactly
as :class:`enclave.audit.log.AuditLog` builds them, so these tests need no database.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.audit.chain import (
    GENESIS_HASH,
    HASHED_FIELDS,
    Checkpoint,
    canonical_json,
    make_checkpoint,
    record_hash,
    sign,
    signature_ok,
    verify_chain,
)
from enclave.audit.events import AuditEvent, Outcome
from enclave.store.models import AuditRecord

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()
ATTACKER = Ed25519PrivateKey.generate()  # any key that is not the server's

INT_FIELDS = {"seq", "label_rank"}
NULLABLE_FIELDS = {"actor", "agency", "session_label", "object_kind", "object_id", "object_label"}
CHAIN_FIELDS = ("prev_hash", "hash", "signature")

Record = dict[str, Any]

# -- strategies ------------------------------------------------------------------------------
short_text = st.text(max_size=12)
bodies = st.fixed_dictionaries(
    {
        "ts": st.datetimes().map(lambda d: d.isoformat(timespec="microseconds") + "+00:00"),
        "event": st.sampled_from([str(e) for e in AuditEvent]),
        "outcome": st.sampled_from([str(o) for o in Outcome]),
        "actor": st.none() | short_text,
        "agency": st.none() | short_text,
        "session_label": st.none() | st.sampled_from(["UNCLASSIFIED", "SECRET", "TOP SECRET//SI"]),
        "object_kind": st.none() | st.sampled_from(["artifact", "transfer", "user", "agency"]),
        "object_id": st.none() | short_text,
        "object_label": st.none() | st.sampled_from(["UNCLASSIFIED", "CUI", "SECRET//TK"]),
        "label_rank": st.integers(0, 3),
        "details": st.dictionaries(short_text, st.integers() | short_text, max_size=3).map(canonical_json),
    }
)
chains = st.lists(bodies, min_size=1, max_size=10)
BODY: dict[str, Any] = {
    "ts": "2030-01-01T00:00:00.000000+00:00",
    "event": str(AuditEvent.ARTIFACT_READ),
    "outcome": str(Outcome.ALLOW),
    "actor": "alice",
    "agency": "nasa",
    "session_label": "SECRET",
    "object_kind": "artifact",
    "object_id": "a1",
    "object_label": "SECRET",
    "label_rank": 2,
    "details": canonical_json({"part": "content"}),
}


def build(bodies_: list[dict[str, Any]], key: Ed25519PrivateKey = KEY) -> list[Record]:
    """A well-formed chain: seq 1..n, each record linked to and hashed over its predecessor."""
    out: list[Record] = []
    prev = GENESIS_HASH
    for seq, body in enumerate(bodies_, start=1):
        out.append(seal({**body, "seq": seq}, prev, key))
        prev = out[-1]["hash"]
    return out


def seal(fields: dict[str, Any], prev: str, key: Ed25519PrivateKey) -> Record:
    """Link, hash and sign one record the way the log does."""
    rec = {k: v for k, v in fields.items() if k not in CHAIN_FIELDS}
    rec["prev_hash"] = prev
    rec["hash"] = record_hash(prev, rec)
    rec["signature"] = sign(key, rec["hash"])
    return rec


def head_checkpoint(records: list[Record], seq: int | None = None) -> Checkpoint:
    seq = len(records) if seq is None else seq
    head = records[seq - 1]["hash"] if seq else GENESIS_HASH
    return make_checkpoint(KEY, seq, head, "2030-01-01T00:00:00.000000+00:00")


def other_value(draw: st.DrawFn, field: str, old: Any) -> Any:
    """A value of the field's own type that differs from ``old``."""
    if field in INT_FIELDS:
        strategy: st.SearchStrategy[Any] = st.integers(-5, 10**6)
    elif field in NULLABLE_FIELDS:
        strategy = st.none() | st.text(max_size=12)
    else:
        strategy = st.text(max_size=40)
    return draw(strategy.filter(lambda v: v != old))


def hex_other_than(draw: st.DrawFn, old: str) -> str:
    return draw(
        st.binary(min_size=len(old) // 2, max_size=len(old) // 2).map(bytes.hex).filter(lambda h: h != old)
    )


# -- the field list ---------------------------------------------------------------------------
def test_every_stored_column_but_the_chain_itself_is_hashed() -> None:
    # A column left out of the hash could be changed in the database without verify noticing.
    columns = set(AuditRecord.__table__.columns.keys())
    assert set(HASHED_FIELDS) == columns - set(CHAIN_FIELDS)


def test_canonical_json_is_order_independent_and_refuses_nan() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == canonical_json({"a": [1, "é"], "b": 1})
    assert canonical_json({"a": "é"}) == '{"a":"é"}'
    with pytest.raises(ValueError, match="JSON"):
        canonical_json({"x": float("nan")})


def test_hash_is_sha256_over_previous_hash_and_canonical_fields() -> None:
    rec = build([BODY])[0]
    body = canonical_json({k: rec[k] for k in HASHED_FIELDS})
    assert rec["hash"] == hashlib.sha256((GENESIS_HASH + body).encode()).hexdigest()
    assert signature_ok(PUBLIC, rec["hash"], rec["signature"])
    assert not signature_ok(ATTACKER.public_key(), rec["hash"], rec["signature"])
    assert not signature_ok(PUBLIC, rec["hash"], "zz-not-hex")  # no exception escapes


# -- intact chains ----------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.lists(bodies, max_size=10), st.data())
def test_an_intact_chain_verifies(bodies_: list[dict[str, Any]], data: st.DataObject) -> None:
    records = build(bodies_)
    result = verify_chain(records, PUBLIC)
    assert (result.ok, result.records, result.first_bad_seq, result.problem) == (
        True,
        len(records),
        None,
        None,
    )
    # ... and against a checkpoint of any of its prefixes (an older checkpoint is not an error).
    seq = data.draw(st.integers(0, len(records)))
    assert verify_chain(records, PUBLIC, head_checkpoint(records, seq)).ok


def test_empty_log() -> None:
    assert verify_chain([], PUBLIC).ok
    assert verify_chain([], PUBLIC, head_checkpoint([], 0)).ok


# -- single modifications ---------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(chains, st.data())
def test_modifying_any_hashed_field_of_any_record_is_caught_there(
    bodies_: list[dict[str, Any]], data: st.DataObject
) -> None:
    records = build(bodies_)
    k = data.draw(st.integers(0, len(records) - 1), label="index")
    field = data.draw(st.sampled_from(HASHED_FIELDS), label="field")
    records[k][field] = other_value(data.draw, field, records[k][field])
    checkpoint = data.draw(st.none() | st.just(head_checkpoint(build(bodies_))), label="checkpoint")

    result = verify_chain(records, PUBLIC, checkpoint)

    assert not result.ok
    assert result.first_bad_seq == k + 1
    assert result.records == k + 1  # verification stops at the first bad record


@settings(max_examples=50, deadline=None)
@given(chains, st.data())
def test_modifying_the_link_hash_or_signature_is_caught_there(
    bodies_: list[dict[str, Any]], data: st.DataObject
) -> None:
    records = build(bodies_)
    k = data.draw(st.integers(0, len(records) - 1), label="index")
    field = data.draw(st.sampled_from(CHAIN_FIELDS), label="field")
    records[k][field] = hex_other_than(data.draw, records[k][field])

    result = verify_chain(records, PUBLIC)

    assert not result.ok
    assert result.first_bad_seq == k + 1
    expected = {"prev_hash": "does not link", "hash": "modified", "signature": "invalid signature"}[field]
    assert expected in (result.problem or "")


@settings(max_examples=40, deadline=None)
@given(chains, st.data())
def test_rewriting_a_record_and_rechaining_the_rest_fails_on_the_signature(
    bodies_: list[dict[str, Any]], data: st.DataObject
) -> None:
    """An attacker who recomputes every hash from the change on still cannot sign."""
    records = build(bodies_)
    k = data.draw(st.integers(0, len(records) - 1), label="index")
    records[k]["outcome"] = "allow" if records[k]["outcome"] == "deny" else "deny"
    prev = records[k - 1]["hash"] if k else GENESIS_HASH
    for i in range(k, len(records)):
        records[i] = seal(records[i], prev, ATTACKER)
        prev = records[i]["hash"]

    result = verify_chain(records, PUBLIC, data.draw(st.none() | st.just(head_checkpoint(build(bodies_)))))

    assert not result.ok
    assert result.first_bad_seq == k + 1
    assert "invalid signature" in (result.problem or "")


# -- deletion, insertion, reordering ----------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(chains, st.data())
def test_deleting_any_record_is_caught_at_its_seq(bodies_: list[dict[str, Any]], data: st.DataObject) -> None:
    records = build(bodies_)
    checkpoint = head_checkpoint(records)
    k = data.draw(st.integers(0, len(records) - 1), label="index")
    del records[k]

    result = verify_chain(records, PUBLIC, checkpoint)

    assert not result.ok
    assert result.first_bad_seq == k + 1


@settings(max_examples=40, deadline=None)
@given(st.lists(bodies, min_size=2, max_size=10), st.data())
def test_deleting_a_middle_record_is_caught_even_without_a_checkpoint(
    bodies_: list[dict[str, Any]], data: st.DataObject
) -> None:
    records = build(bodies_)
    k = data.draw(st.integers(0, len(records) - 2), label="index")
    del records[k]
    result = verify_chain(records, PUBLIC)
    assert (result.ok, result.first_bad_seq) == (False, k + 1)


@settings(max_examples=50, deadline=None)
@given(chains, bodies, st.data())
def test_inserting_a_forged_record_is_caught_at_the_forgery(
    bodies_: list[dict[str, Any]], forged_body: dict[str, Any], data: st.DataObject
) -> None:
    """The forger links and hashes correctly and renumbers what follows, but cannot sign."""
    records = build(bodies_)
    k = data.draw(st.integers(0, len(records)), label="position")
    prev = records[k - 1]["hash"] if k else GENESIS_HASH
    forged = seal({**forged_body, "seq": k + 1}, prev, ATTACKER)
    renumber = data.draw(st.booleans(), label="renumber")
    tail = [{**r, "seq": r["seq"] + 1} for r in records[k:]] if renumber else records[k:]
    tampered = [*records[:k], forged, *tail]

    result = verify_chain(tampered, PUBLIC, data.draw(st.none() | st.just(head_checkpoint(records))))

    assert not result.ok
    assert result.first_bad_seq == k + 1
    assert "invalid signature" in (result.problem or "")


@settings(max_examples=40, deadline=None)
@given(chains, bodies, st.data())
def test_a_validly_signed_record_slipped_in_breaks_the_next_one(
    bodies_: list[dict[str, Any]], extra: dict[str, Any], data: st.DataObject
) -> None:
    """Even a record signed with the server's own key cannot be slipped into the middle."""
    records = build(bodies_)
    k = data.draw(st.integers(0, len(records) - 1), label="position")
    prev = records[k - 1]["hash"] if k else GENESIS_HASH
    slipped = seal({**extra, "seq": k + 1}, prev, KEY)
    tampered = [*records[:k], slipped, *records[k:]]

    result = verify_chain(tampered, PUBLIC)

    assert (result.ok, result.first_bad_seq) == (False, k + 2)


@settings(max_examples=50, deadline=None)
@given(st.lists(bodies, min_size=2, max_size=10), st.data())
def test_swapping_two_records_is_caught_at_the_earlier_position(
    bodies_: list[dict[str, Any]], data: st.DataObject
) -> None:
    records = build(bodies_)
    i, j = sorted(data.draw(st.lists(st.integers(0, len(records) - 1), min_size=2, max_size=2, unique=True)))
    records[i], records[j] = records[j], records[i]
    if data.draw(st.booleans(), label="keep seq in order"):
        records[i] = {**records[i], "seq": i + 1}
        records[j] = {**records[j], "seq": j + 1}

    result = verify_chain(records, PUBLIC, data.draw(st.none() | st.just(head_checkpoint(build(bodies_)))))

    assert not result.ok
    assert result.first_bad_seq == i + 1


# -- truncation and checkpoints ---------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(chains, st.data())
def test_truncating_below_the_checkpoint_is_caught_at_the_first_missing_seq(
    bodies_: list[dict[str, Any]], data: st.DataObject
) -> None:
    records = build(bodies_)
    cp_seq = data.draw(st.integers(1, len(records)), label="checkpoint seq")
    keep = data.draw(st.integers(0, cp_seq - 1), label="records kept")

    result = verify_chain(records[:keep], PUBLIC, head_checkpoint(records, cp_seq))

    assert not result.ok
    assert result.first_bad_seq == keep + 1
    assert result.records == keep
    assert "truncated" in (result.problem or "")


@settings(max_examples=30, deadline=None)
@given(chains, st.data())
def test_truncating_at_or_above_the_checkpoint_is_not_an_error(
    bodies_: list[dict[str, Any]], data: st.DataObject
) -> None:
    # Records committed after the last checkpoint was written (a crash in between) are legal.
    records = build(bodies_)
    cp_seq = data.draw(st.integers(0, len(records)))
    keep = data.draw(st.integers(cp_seq, len(records)))
    assert verify_chain(records[:keep], PUBLIC, head_checkpoint(records, cp_seq)).ok
    # Without a checkpoint, the chain alone cannot tell a truncated log from a short one.
    assert verify_chain(records[:keep], PUBLIC).ok


@settings(max_examples=40, deadline=None)
@given(chains, st.data())
def test_a_checkpoint_with_a_bad_signature_is_rejected(
    bodies_: list[dict[str, Any]], data: st.DataObject
) -> None:
    records = build(bodies_)
    good = head_checkpoint(records)
    how = data.draw(st.sampled_from(["other key", "garbage", "empty", "seq", "hash", "ts"]))
    if how == "other key":
        bad = make_checkpoint(ATTACKER, good.seq, good.hash, good.ts)
    elif how == "garbage":
        bad = Checkpoint(good.seq, good.hash, good.ts, hex_other_than(data.draw, good.signature))
    elif how == "empty":
        bad = Checkpoint(good.seq, good.hash, good.ts, "")
    elif how == "seq":  # claim the log is shorter (or longer) than it was when signed
        bad = Checkpoint(
            data.draw(st.integers(0, 50).filter(lambda s: s != good.seq)), good.hash, good.ts, good.signature
        )
    elif how == "hash":
        bad = Checkpoint(good.seq, records[0]["prev_hash"], good.ts, good.signature)
    else:
        bad = Checkpoint(good.seq, good.hash, "2031-01-01T00:00:00.000000+00:00", good.signature)

    result = verify_chain(records, PUBLIC, bad)

    assert not result.ok
    assert result.first_bad_seq == bad.seq
    assert result.problem == "checkpoint signature is invalid"


@settings(max_examples=40, deadline=None)
@given(chains, st.data())
def test_a_signed_checkpoint_that_disagrees_with_the_record_is_caught_there(
    bodies_: list[dict[str, Any]], data: st.DataObject
) -> None:
    records = build(bodies_)
    cp_seq = data.draw(st.integers(1, len(records)))
    checkpoint = make_checkpoint(KEY, cp_seq, hashlib.sha256(b"another head").hexdigest(), "t")
    result = verify_chain(records, PUBLIC, checkpoint)
    assert (result.ok, result.first_bad_seq) == (False, cp_seq)
    assert "checkpoint" in (result.problem or "")


# -- keys -------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(chains, st.data())
def test_a_record_signed_by_another_key_is_caught_there(
    bodies_: list[dict[str, Any]], data: st.DataObject
) -> None:
    records = build(bodies_)
    k = data.draw(st.integers(0, len(records) - 1), label="index")
    records[k]["signature"] = sign(ATTACKER, records[k]["hash"])

    result = verify_chain(records, PUBLIC)

    assert (result.ok, result.first_bad_seq) == (False, k + 1)
    assert "invalid signature" in (result.problem or "")


def test_a_whole_chain_signed_by_another_key_fails_at_the_first_record() -> None:
    records = build([BODY] * 5, key=ATTACKER)
    assert verify_chain(records, ATTACKER.public_key()).ok
    result = verify_chain(records, PUBLIC)
    assert (result.ok, result.first_bad_seq) == (False, 1)


@settings(max_examples=20, deadline=None)
@given(chains)
def test_verification_does_not_mutate_or_need_more_than_one_pass(bodies_: list[dict[str, Any]]) -> None:
    # The log feeds the verifier a generator (batches from the database): one pass must do.
    records = build(bodies_)
    snapshot = [dict(r) for r in records]
    assert verify_chain(iter(records), PUBLIC, head_checkpoint(records)).ok
    assert records == snapshot
