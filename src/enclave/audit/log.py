"""Appending to and verifying the audit chain stored in the database.

Appends happen inside the caller's transaction, so a record commits if and only if the
action it records commits. The head row is locked (``SELECT … FOR UPDATE``; SQLite
transactions are already serialised) so concurrent writers, even in different server
processes, extend one chain instead of forking it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, insert, select
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.orm import Session

from enclave.audit.chain import (
    Checkpoint,
    VerifyResult,
    canonical_json,
    make_checkpoint,
    public_key_text,
    record_hash,
    same_key,
    sign,
    verify_chain,
)
from enclave.audit.events import AuditEvent, Outcome
from enclave.audit.sink import Sink, checkpoint_line
from enclave.store.db import bulk_insert
from enclave.store.models import AuditHead, AuditRecord

VERIFY_BATCH = 2000
# append_many's statements (``?`` placeholders; DirectTx adapts them to the driver)
_INSERT = insert(AuditRecord).compile(dialect=SQLiteDialect())  # qmark, all columns
_INSERT_SQL = str(_INSERT)
_RECORD_COLUMNS = tuple(_INSERT.positiontup or ())
_HEAD_SQL = "SELECT seq, hash FROM audit_head WHERE id = 1"
_HEAD_FOR_UPDATE_SQL = _HEAD_SQL + " FOR UPDATE"
_MOVE_HEAD_SQL = "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1"
_HEAD_KEY = "enclave.audit.head"  # session.info: (transaction, locked head row)
KEY_FILE = Path("keys") / "audit-ed25519.pem"  # under ENCLAVE_HOME, unless placed elsewhere
CREDENTIAL_NAME = "enclave-audit-key"  # systemd LoadCredential= name
log = logging.getLogger("enclave.audit")


@dataclass(frozen=True)
class Entry:
    """What a service wants recorded; the log adds sequence, time, chain and signature."""

    event: AuditEvent
    outcome: Outcome = Outcome.ALLOW
    actor: str | None = None
    agency: str | None = None
    session_label: str | None = None
    object_kind: str | None = None
    object_id: str | None = None
    object_label: str | None = None
    label_rank: int = 0
    details: dict[str, Any] | None = None


def key_path(home: Path, configured: Path | None = None) -> Path:
    """Where the audit signing key is: the configured file; else a systemd credential
    (``LoadCredential=enclave-audit-key:…`` puts it in ``$CREDENTIALS_DIRECTORY``, readable
    by the service alone); else ``$ENCLAVE_HOME/keys/audit-ed25519.pem``, beside the store."""
    if configured is not None:
        return configured.expanduser()
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL_NAME).is_file():
        return Path(credentials) / CREDENTIAL_NAME
    return home / KEY_FILE


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The server's audit signing key (PEM, mode 0600), created on first use.

    A key file that others can read or write is refused: anyone who can read it can sign a
    checkpoint for a truncated log, anyone who can write it can swap the key."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ValueError(f"audit key {path} is accessible to others (mode {mode:o}); chmod 600 it")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return key


class AuditLog:
    """Appends, checkpoints and verification of one store's chain.

    Every checkpoint is written to ``checkpoint_path`` and then shipped to each of
    ``sinks`` (append-only copies the store's attacker cannot rewrite).
    """

    def __init__(self, key: Ed25519PrivateKey, checkpoint_path: Path, sinks: Sequence[Sink] = ()) -> None:
        self._key = key
        self.public_key: Ed25519PublicKey = key.public_key()
        self.public_key_text = public_key_text(self.public_key)
        self._checkpoint_path = checkpoint_path
        self._checkpoint_lock = threading.Lock()
        self._sinks = list(sinks)

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()

    def _locked_head(self, session: Session) -> AuditHead:
        """The chain head, locked once per transaction and then reused: the lock is held until
        the transaction ends, so nobody else can move the head meanwhile."""
        txn = session.get_transaction()
        cached = session.info.get(_HEAD_KEY)
        if cached is not None and cached[0] is txn:
            head: AuditHead = cached[1]
            return head
        head = session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one()
        session.info[_HEAD_KEY] = (txn, head)
        return head

    def appended_head(self, session: Session) -> tuple[int, str] | None:
        """After a commit: the head this session's appends left, to checkpoint it (else None)."""
        cached = session.info.pop(_HEAD_KEY, None)
        if cached is None:
            return None
        return int(cached[1].seq), str(cached[1].hash)

    def append(self, session: Session, entry: Entry, now: datetime) -> AuditRecord:
        head = self._locked_head(session)
        fields = _fields(head.seq + 1, entry, now)
        digest = record_hash(head.hash, fields)
        record = AuditRecord(
            **fields,
            prev_hash=head.hash,
            hash=digest,
            signature=sign(self._key, digest),
        )
        session.add(record)
        head.seq, head.hash = record.seq, digest
        return record

    def append_all(self, session: Session, entries: Sequence[tuple[Entry, datetime]]) -> None:
        """:meth:`append` for each ``(entry, time)``, in order, as one multi-row insert in the
        session's transaction (no ORM object per record: at thousands a request those dominate)."""
        if not entries:
            return
        head = self._locked_head(session)
        seq, prev = int(head.seq), str(head.hash)
        rows = []
        for entry, now in entries:
            seq += 1
            fields = _fields(seq, entry, now)
            digest = record_hash(prev, fields)
            fields.update(prev_hash=prev, hash=digest, signature=sign(self._key, digest))
            rows.append(fields)
            prev = digest
        # A bulk insert, not the ORM one: that costs ~17 µs a row sorting out which
        # attributes each plain dict sets; these rows are uniform and complete.
        bulk_insert(session, AuditRecord.__table__, rows)
        head.seq, head.hash = seq, prev

    def append_many(
        self, tx: DirectTx, entries: Sequence[Entry], clock: Callable[[], datetime]
    ) -> tuple[int, str]:
        """Append ``entries`` in order inside ``tx``'s transaction: one head lock, one
        multi-row insert, one head update, straight through the DB-API. The same records,
        links and signatures as :meth:`append` one by one, for a fraction of the CPU. Returns
        the new head ``(seq, hash)``, to checkpoint once the transaction has committed."""
        tx.execute(_HEAD_FOR_UPDATE_SQL if tx.for_update else _HEAD_SQL)
        row = tx.fetchone()
        seq, prev = int(row[0]), str(row[1])
        rows = []
        for entry in entries:
            seq += 1
            fields = _fields(seq, entry, clock())
            digest = record_hash(prev, fields)
            fields.update(prev_hash=prev, hash=digest, signature=sign(self._key, digest))
            rows.append(tuple(fields[c] for c in _RECORD_COLUMNS))
            prev = digest
        if rows:
            tx.executemany(_INSERT_SQL, rows)
            tx.execute(_MOVE_HEAD_SQL, (seq, prev))
        return seq, prev

    # -- checkpoints -------------------------------------------------------------------
    def write_checkpoint(self, session: Session, now: datetime) -> Checkpoint:
        """Sign the current head and store it beside the database (atomic replace)."""
        head = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
        return self.checkpoint(head.seq, head.hash, now)

    def checkpoint(self, seq: int, head_hash: str, now: datetime) -> Checkpoint:
        """Sign a committed head, store it beside the database unless a newer one is there
        (threads of this process and other processes sharing the file: a lock file), then
        ship it to the sinks, in the same order."""
        cp = make_checkpoint(self._key, seq, head_hash, now.isoformat(timespec="microseconds"))
        with self._checkpoint_lock, self._file_lock():
            current = self.read_checkpoint()
            if current is not None and current.seq > cp.seq:
                return current  # another writer checkpointed a newer head already
            tmp = self._checkpoint_path.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(cp.__dict__))
            os.replace(tmp, self._checkpoint_path)
            self._ship(cp)
            return cp

    def _ship(self, cp: Checkpoint) -> None:
        if not self._sinks:
            return
        line = checkpoint_line(cp, self.public_key_text)
        for sink in self._sinks:
            try:
                sink.ship(line)
            except Exception:
                # The action is committed; a sink that cannot take the line is an operator's
                # alarm, not a reason to fail the request. The next checkpoint covers it.
                log.exception("could not ship audit checkpoint %d to %s", cp.seq, type(sink).__name__)

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        self._checkpoint_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._checkpoint_path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read_checkpoint(self) -> Checkpoint | None:
        try:
            data = json.loads(self._checkpoint_path.read_text())
            return Checkpoint(int(data["seq"]), str(data["hash"]), str(data["ts"]), str(data["signature"]))
        except FileNotFoundError:
            return None
        except (ValueError, OSError, KeyError, TypeError):
            # An unreadable checkpoint is itself tampering: verify against an impossible one.
            return Checkpoint(seq=0, hash="", ts="", signature="")

    # -- verification ------------------------------------------------------------------
    def verify(
        self,
        session: Session,
        pinned: Ed25519PublicKey | None = None,
        sink: Sequence[Checkpoint] = (),
    ) -> VerifyResult:
        """Check the chain against the local checkpoint and checkpoints from the sink.

        ``pinned`` is the key the operator recorded: records and checkpoints are checked
        with it rather than with the key this server holds (which the store's attacker may
        have replaced), and a server holding another key fails even on an intact chain.
        """
        public = pinned or self.public_key
        checkpoint = self.read_checkpoint()
        result = verify_chain(self._rows(session), public, checkpoint, sink)
        if not result.ok:
            return result
        if checkpoint is None and result.records:
            # Every commit that appends records rewrites the checkpoint, so records without
            # one mean it was removed — and without it a truncated tail would pass unseen.
            return VerifyResult(
                False,
                result.records,
                result.records + 1,
                f"the signed checkpoint is missing: records after {result.records} may have been removed",
            )
        if pinned is not None and not same_key(pinned, self.public_key):
            return VerifyResult(
                False,
                result.records,
                None,
                f"the server signs with {self.public_key_text}, not the pinned key {public_key_text(pinned)}",
            )
        return result

    @staticmethod
    def _rows(session: Session) -> Iterator[dict[str, Any]]:
        cols = [c for c in AuditRecord.__table__.columns]
        last = 0
        while True:
            batch = session.execute(
                select(*cols).where(AuditRecord.seq > last).order_by(AuditRecord.seq).limit(VERIFY_BATCH)
            ).all()
            if not batch:
                return
            for row in batch:
                yield dict(row._mapping)
            last = batch[-1].seq


def _fields(seq: int, entry: Entry, now: datetime) -> dict[str, Any]:
    """A record's hashed columns."""
    return {
        "seq": seq,
        "ts": now.isoformat(timespec="microseconds"),
        "event": str(entry.event),
        "outcome": str(entry.outcome),
        "actor": entry.actor,
        "agency": entry.agency,
        "session_label": entry.session_label,
        "object_kind": entry.object_kind,
        "object_id": entry.object_id,
        "object_label": entry.object_label,
        "label_rank": entry.label_rank,
        "details": canonical_json(entry.details or {}),
    }


class DirectTx:
    """One transaction on a :class:`DirectWriter`'s connection: DB-API calls with ``?``
    placeholders (adapted to the driver's), no SQLAlchemy statement layer in between."""

    def __init__(self, cursor: Any, qmark: bool, for_update: bool) -> None:
        self._cursor = cursor
        self._qmark = qmark
        self.for_update = for_update  # the driver locks rows with SELECT ... FOR UPDATE

    def _sql(self, sql: str) -> str:
        return sql if self._qmark else sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the rows it changed."""
        self._cursor.execute(self._sql(sql), params)
        return int(self._cursor.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cursor.executemany(self._sql(sql), rows)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()


class DirectWriter:
    """A connection of ``engine`` kept by one writer thread for many short transactions,
    driven through the DB-API: SQLAlchemy's per-statement work costs several times what the
    database does for a small transaction. SQLite transactions begin IMMEDIATE (writers are
    serialised up front, as the engine's sessions do); PostgreSQL ones begin implicitly, at
    the engine's isolation level. A failed transaction rolls back and drops the connection
    (the next one starts afresh). For one thread at a time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._qmark = engine.dialect.paramstyle == "qmark"
        self._conn: Any = None

    @contextmanager
    def transaction(self) -> Iterator[DirectTx]:
        if self._conn is None:
            self._conn = self.engine.raw_connection()
        conn = self._conn
        cursor = conn.cursor()
        try:
            if self._sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            yield DirectTx(cursor, self._qmark, for_update=not self._sqlite)
            conn.commit()
        except BaseException:
            with suppress(Exception):
                cursor.close()
            self.close(failed=True)
            raise
        cursor.close()

    def close(self, failed: bool = False) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.rollback()
        except Exception:
            failed = True
        if failed:
            conn.invalidate()  # not back into the pool: it may be broken
        else:
            conn.close()
