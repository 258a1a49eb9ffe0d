"""Everything a use case needs, built once per server process."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from enclave.audit.deferred import DeferredAudit
from enclave.audit.log import AuditLog, key_path, load_or_create_key
from enclave.audit.sink import open_sinks
from enclave.blobs import BlobStore, load_or_create_master_key
from enclave.fleet import Fleet, load_fleet
from enclave.gateway.router import Router
from enclave.guard_scan import ExtraPattern
from enclave.labels import LabelScheme
from enclave.services.throttle import AddressThrottle, FailedAuthTally
from enclave.store.db import make_engine, migrate, session_factory, sqlite_url

DEFAULT_HOME = Path("~/.enclave")
MAX_UPLOAD_BYTES = 1 << 30  # 1 GiB per artifact
MAX_JSON_BYTES = 1 << 20  # 1 MiB per JSON request body
TOKEN_TTL_S = 12 * 3600
ADMIN_TOKEN_TTL_S = 365 * 24 * 3600
LOGIN_MAX_FAILURES = 5  # within LOGIN_WINDOW_S, then locked for LOGIN_LOCKOUT_S
LOGIN_WINDOW_S = 15 * 60
LOGIN_LOCKOUT_S = 15 * 60
MAX_PENDING_JOBS = 10_000  # per agency and label: jobs submitted and not yet started


def default_home() -> Path:
    return Path(os.environ.get("ENCLAVE_HOME", str(DEFAULT_HOME))).expanduser()


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=default_home)
    db_url: str | None = None  # default: SQLite file under home
    fleet: str = "local"
    policy: str = "priority"  # scheduling policy of the live loop (enclave.scheduler.policies)
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_json_bytes: int = MAX_JSON_BYTES
    token_ttl_s: int = TOKEN_TTL_S
    endpoint_idle_s: float = 60.0  # a quiet endpoint gives back a replica (down to its min) after this
    max_pending_jobs: int = MAX_PENDING_JOBS
    audit_key_file: Path | None = None  # default: enclave.audit.log.key_path
    audit_sink_file: Path | None = None  # append-only copy of every audit checkpoint
    audit_syslog: str | None = None  # "/dev/log" or "host:port" (UDP): checkpoints to syslog too

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.home / "enclave.db")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Context:
    """Engine, fleet, keys and stores of one control-plane process."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        home = settings.home
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(home, 0o700)
        self.fleet: Fleet = load_fleet(settings.fleet)
        self.scheme: LabelScheme = self.fleet.scheme
        self.guard_patterns = tuple(ExtraPattern(p.pattern, p.marking) for p in self.fleet.guard.patterns)
        self.engine: Engine = make_engine(settings.database_url)
        migrate(self.engine)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self.read_sessions: sessionmaker[Session] = session_factory(self.engine, read_only=True)
        self.audit = AuditLog(
            load_or_create_key(key_path(home, settings.audit_key_file)),
            home / "audit" / "checkpoint.json",
            open_sinks(settings.audit_sink_file, settings.audit_syslog),
        )
        self.blobs = BlobStore(home / "blobs", load_or_create_master_key(home / "keys" / "master.key"))
        self.now = clock
        self.jobs_changed = threading.Event()  # wakes the live loop on submit/cancel
        self.endpoints_changed = threading.Event()  # wakes the endpoint supervisor
        self.router = Router()  # healthy replicas per endpoint, for the gateway
        # Denials that answer like a miss, recorded off the request path (services.unit)
        self.denials = DeferredAudit(self.sessions, self.audit, lambda: self.now())
        self.auth_failures = FailedAuthTally()  # recorded once a minute (services.auth)
        self.login_throttle = AddressThrottle()  # password attempts per client address

    def notify_jobs(self) -> None:
        self.jobs_changed.set()

    def close(self) -> None:
        self.denials.close()
        self.engine.dispose()
        self.audit.close()
