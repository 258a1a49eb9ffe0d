"""The pure part of the audit log: canonical encoding, chaining, signing and verification.

Each record's hash is ``SHA-256(prev_hash || canonical_json(fields))`` and its signature an
Ed25519 signature over that hash. A checkpoint is a signed ``(seq, hash)`` of the head kept
outside the database, so truncating the tail is caught as well as any modification,
deletion, insertion or reordering of records.

Two checkpoints can be given. The *local* one (``audit/checkpoint.json``) sits beside the
store: whoever can write the store can put an older one back. The *sink* one is the newest
checkpoint shipped to an append-only sink (a file opened ``O_APPEND``, syslog): the chain
must reach it with the same hash, and the local checkpoint must not be older than it. The
verifying key can be *pinned* (the operator recorded it at the first start): a log or
checkpoint re-signed with another key then fails at its first signature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS_HASH = "0" * 64
PUBLIC_KEY_PREFIX = "ed25519:"
HASHED_FIELDS = (
    "seq",
    "ts",
    "event",
    "outcome",
    "actor",
    "agency",
    "session_label",
    "object_kind",
    "object_id",
    "object_label",
    "label_rank",  # listings filter on it: an unhashed rank could hide a record from auditors
    "details",
)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    body = canonical_json({k: fields[k] for k in HASHED_FIELDS})
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def sign(key: Ed25519PrivateKey, digest_hex: str) -> str:
    return key.sign(bytes.fromhex(digest_hex)).hex()


def signature_ok(public: Ed25519PublicKey, digest_hex: str, signature_hex: str) -> bool:
    try:
        public.verify(bytes.fromhex(signature_hex), bytes.fromhex(digest_hex))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    ts: str
    signature: str

    def digest(self) -> str:
        return hashlib.sha256(
            canonical_json({"seq": self.seq, "hash": self.hash, "ts": self.ts}).encode()
        ).hexdigest()


def make_checkpoint(key: Ed25519PrivateKey, seq: int, head_hash: str, ts: str) -> Checkpoint:
    unsigned = Checkpoint(seq, head_hash, ts, "")
    return Checkpoint(seq, head_hash, ts, sign(key, unsigned.digest()))


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int  # records examined
    first_bad_seq: int | None = None
    problem: str | None = None


def public_key_text(public: Ed25519PublicKey) -> str:
    """``ed25519:<64 hex digits>``: the form operators record and pass to ``--pubkey``."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + raw.hex()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from ``ed25519:<hex>``, bare hex, or a PEM ``PUBLIC KEY`` block.

    Raises ``ValueError`` (with a message fit for the operator) for anything else.
    """
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM public key is not an Ed25519 key")
        return key
    hex_part = text.removeprefix(PUBLIC_KEY_PREFIX)
    try:
        raw = bytes.fromhex(hex_part)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"an audit public key is {PUBLIC_KEY_PREFIX}<64 hex digits> or a PEM block")
    return Ed25519PublicKey.from_public_bytes(raw)


def same_key(a: Ed25519PublicKey, b: Ed25519PublicKey) -> bool:
    return public_key_text(a) == public_key_text(b)


def verify_chain(
    records: Iterable[Mapping[str, Any]],
    public: Ed25519PublicKey,
    checkpoint: Checkpoint | None = None,
    sink: Sequence[Checkpoint] = (),
) -> VerifyResult:
    """Walk the records in ``seq`` order; report the first record that breaks the chain.

    ``records`` are mappings with the hashed fields plus ``prev_hash``, ``hash`` and
    ``signature``. Sequence numbers start at 1 and have no gaps, so a deleted or inserted
    record shows up as a gap or a broken link at the first record after it. ``checkpoint``
    is the local signed checkpoint; ``sink`` holds checkpoints from the append-only sink
    (its newest, and the newest before each place where its sequence numbers go back). The
    chain must reach each of them with their hashes, and the local checkpoint must not be
    older than the newest of the sink's (an older checkpoint put back).
    """
    if checkpoint is not None and not signature_ok(public, checkpoint.digest(), checkpoint.signature):
        return VerifyResult(False, 0, checkpoint.seq, "checkpoint signature is invalid")
    for cp in sink:
        if not signature_ok(public, cp.digest(), cp.signature):
            return VerifyResult(
                False, 0, cp.seq, f"the sink's checkpoint of record {cp.seq} has an invalid signature"
            )
    pinned: dict[int, set[str]] = {}
    for cp in sink:
        pinned.setdefault(cp.seq, set()).add(cp.hash)
    prev = GENESIS_HASH
    expected = 1
    count = 0
    for rec in records:
        count += 1
        seq = int(rec["seq"])
        if seq != expected:
            return VerifyResult(
                False, count, expected, f"record {expected} is missing or out of order (found {seq})"
            )
        if rec["prev_hash"] != prev:
            return VerifyResult(False, count, seq, f"record {seq} does not link to record {seq - 1}")
        if record_hash(prev, rec) != rec["hash"]:
            return VerifyResult(False, count, seq, f"record {seq} was modified (hash mismatch)")
        if not signature_ok(public, rec["hash"], rec["signature"]):
            return VerifyResult(False, count, seq, f"record {seq} has an invalid signature")
        if checkpoint is not None and seq == checkpoint.seq and rec["hash"] != checkpoint.hash:
            return VerifyResult(False, count, seq, f"record {seq} differs from the signed checkpoint")
        if seq in pinned and pinned[seq] != {rec["hash"]}:
            return VerifyResult(
                False,
                count,
                seq,
                f"record {seq} differs from the sink's checkpoint (the log was truncated and rewritten)",
            )
        prev = rec["hash"]
        expected += 1
    last = expected - 1
    top = max(pinned, default=0)
    if last < top:
        return VerifyResult(
            False,
            count,
            last + 1,
            f"log truncated: the sink's checkpoint covers {top} records, found {last}: "
            f"{_span(last + 1, top)} missing",
        )
    if checkpoint is not None and last < checkpoint.seq:
        return VerifyResult(
            False,
            count,
            last + 1,
            f"log truncated: checkpoint covers {checkpoint.seq} records, found {last}: "
            f"{_span(last + 1, checkpoint.seq)} missing",
        )
    if checkpoint is not None and checkpoint.seq < top:
        return VerifyResult(
            False,
            count,
            checkpoint.seq + 1,
            f"an older checkpoint was put back: the local checkpoint covers {checkpoint.seq} records, "
            f"the sink's {top}",
        )
    return VerifyResult(True, count)


def _span(first: int, last: int) -> str:
    return f"record {first} is" if first == last else f"records {first}-{last} are"
