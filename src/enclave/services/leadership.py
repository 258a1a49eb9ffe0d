"""One leader among control-plane replicas sharing a store.

Every replica serves the API; only the leader runs the live scheduling loop and manages
endpoint replicas, so two replicas never plan the same free capacity or start the same job
twice. The others watch: each second they try to become leader, and take over (reconciling
running jobs from the store) when the leader's lock goes away with its process.

PostgreSQL: a session-level advisory lock held on a dedicated connection; it is released by
the server when that connection ends, however the leader dies. The leader checks its
connection on every renewal and steps down (stopping its loops) if it was lost.
SQLite: an exclusive ``flock`` on a file beside the database, released by the kernel when
the process ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from enclave.services.context import Context

log = logging.getLogger("enclave.leadership")

LOCK_KEY = 0x656E636C  # "encl": the advisory lock id of Enclave's live loop
RETRY_S = 1.0


class Leadership:
    def __init__(self, ctx: Context, on_gain: Callable[[], None], on_loss: Callable[[], None]) -> None:
        self.ctx = ctx
        self._on_gain, self._on_loss = on_gain, on_loss
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self._fd: int | None = None
        self.leader = False

    def start(self) -> None:
        """Try once now (so a lone server starts its loops at once), then keep trying."""
        self._step()
        self._thread = threading.Thread(target=self._run, name="enclave-leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.leader:
            self.leader = False
            self._on_loss()
        self._release()

    def _run(self) -> None:
        while not self._stop.wait(RETRY_S):
            try:
                self._step()
            except Exception:  # keep watching; the error is logged
                log.exception("leadership check failed")

    def _step(self) -> None:
        if self.leader:
            if not self._still_held():
                log.warning("lost the leader lock: stopping the live loop")
                self.leader = False
                self._release()
                self._on_loss()
            return
        if self._acquire():
            self.leader = True
            log.info("became the leader: starting the live loop")
            self._on_gain()

    # -- the lock --------------------------------------------------------------------------
    def _acquire(self) -> bool:
        if self.ctx.engine.dialect.name == "postgresql":
            conn = self.ctx.engine.connect()
            try:
                got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar())
                conn.commit()
            except SQLAlchemyError:
                conn.close()
                return False
            if got:
                self._conn = conn
            else:
                conn.close()
            return got
        fd = os.open(self._lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _still_held(self) -> bool:
        if self._conn is None:
            return self._fd is not None
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
            return True
        except SQLAlchemyError:
            return False

    def _release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                self._conn.commit()
            with contextlib.suppress(SQLAlchemyError):
                self._conn.close()
            self._conn = None
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def _lock_path(self) -> Path:
        """Beside the SQLite file, so replicas with different homes but one database agree."""
        database: Any = self.ctx.engine.url.database
        if database and database != ":memory:":
            return Path(f"{database}.leader")
        return self.ctx.settings.home / "leader.lock"
