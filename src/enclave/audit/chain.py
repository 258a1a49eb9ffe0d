"""The pure part of the audit log: canonical encoding, chaining, signing and verification.

Each record's hash is ``SHA-256(prev_hash || canonical_json(fields))`` and its signature an
Ed25519 signature over that hash. A checkpoint is a signed ``(seq, hash)`` of the head kept
outside the database, so truncating the tail is caught as well as any modification,
deletion, insertion or reordering of records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS_HASH = "0" * 64
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


def verify_chain(
    records: Iterable[Mapping[str, Any]], public: Ed25519PublicKey, checkpoint: Checkpoint | None = None
) -> VerifyResult:
    """Walk the records in ``seq`` order; report the first record that breaks the chain.

    ``records`` are mappings with the hashed fields plus ``prev_hash``, ``hash`` and
    ``signature``. Sequence numbers start at 1 and have no gaps, so a deleted or inserted
    record shows up as a gap or a broken link at the first record after it.
    """
    if checkpoint is not None and not signature_ok(public, checkpoint.digest(), checkpoint.signature):
        return VerifyResult(False, 0, checkpoint.seq, "checkpoint signature is invalid")
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
        prev = rec["hash"]
        expected += 1
    last = expected - 1
    if checkpoint is not None and last < checkpoint.seq:
        return VerifyResult(
            False, count, last + 1, f"log truncated: checkpoint covers {checkpoint.seq} records, found {last}"
        )
    return VerifyResult(True, count)
