"""Tables of the control plane (SQLAlchemy 2 declarative). Schema changes go through Alembic.

Labels are stored as canonical marking text plus the level rank, so listings can pre-filter
by rank in SQL; the policy gate still makes every final decision in Python.
Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite drops the zone; put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        # SQLite keeps the wall time and drops the offset: store the UTC wall time, so that
        # values read back, compared and ordered in SQL are the same instants.
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)  # PostgreSQL answers in the session's time zone


class Base(DeclarativeBase):
    pass


class Agency(Base):
    __tablename__ = "agencies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    quota_gpu_hours: Mapped[float | None]
    quota_kwh: Mapped[float | None]
    quota_storage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    gateway_rpm: Mapped[int | None] = mapped_column(Integer)  # requests per minute
    gateway_tpm: Mapped[int | None] = mapped_column(Integer)  # tokens per minute
    gateway_token_budget: Mapped[int | None] = mapped_column(BigInteger)  # tokens per UTC day
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("agency_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    clearance: Mapped[str] = mapped_column(String(256))
    roles: Mapped[list[str]] = mapped_column(JSON)
    password_hash: Mapped[str | None] = mapped_column(String(256))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ClearanceRequest(Base):
    """A change of a user's clearance waiting for a second admin (``pending``), then
    ``approved`` (applied) or ``refused``; a lowering is applied at once (``applied``)."""

    __tablename__ = "clearance_requests"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    from_clearance: Mapped[str] = mapped_column(String(256))
    to_clearance: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16), index=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class LoginThrottle(Base):
    """Failed password attempts per user name (existing or not, so names cannot be probed)."""

    __tablename__ = "login_throttle"
    user_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Artifact(Base):
    """A labelled, encrypted blob plus metadata: the object datasets and models build on.

    Datasets are artifacts of kind ``dataset`` with a ``version`` per (agency, name, label)."""

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("agency_id", "kind", "name", "label", "version", name="uq_artifacts_version"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(32), default="artifact")
    label: Mapped[str] = mapped_column(String(256))
    label_rank: Mapped[int] = mapped_column(Integer, index=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"), index=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(128))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    derived_from: Mapped[list[str]] = mapped_column(JSON, default=list)
    version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Share(Base):
    """An artifact shared with another agency. ``label`` is the artifact's (labels never
    change): the agency's listing reads its shares one label at a time, never those above."""

    __tablename__ = "shares"
    object_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"), primary_key=True)
    label: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Transfer(Base):
    __tablename__ = "transfers"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"), index=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"), index=True)
    source_label: Mapped[str] = mapped_column(String(256))
    source_rank: Mapped[int] = mapped_column(Integer)
    target_label: Mapped[str] = mapped_column(String(256))
    justification: Mapped[str] = mapped_column(Text)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    downgrade: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    result_artifact_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TransferReview(Base):
    __tablename__ = "transfer_reviews"
    __table_args__ = (UniqueConstraint("transfer_id", "reviewer_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transfer_id: Mapped[str] = mapped_column(ForeignKey("transfers.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decision: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditRecord(Base):
    """One link of the hash chain. ``details`` is canonical JSON text so hashes are exact."""

    __tablename__ = "audit_records"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(40))
    event: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(64))
    agency: Mapped[str | None] = mapped_column(String(64))
    session_label: Mapped[str | None] = mapped_column(String(256))
    object_kind: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(64), index=True)
    object_label: Mapped[str | None] = mapped_column(String(256))
    label_rank: Mapped[int] = mapped_column(Integer)
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


class AuditHead(Base):
    """Single row holding the chain head; locking it serialises appends across replicas."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class Job(Base):
    """A labelled batch job. ``seq`` orders submissions; every state change is audited."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "agency_id", "label", "idempotency_key", name="uq_jobs_idempotency"),
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="batch")  # batch | train | replica
    parent_id: Mapped[str | None] = mapped_column(String(36), index=True)  # endpoint of a replica
    name: Mapped[str] = mapped_column(String(256))
    label: Mapped[str] = mapped_column(String(256))
    label_rank: Mapped[int] = mapped_column(Integer)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"), index=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    command: Mapped[list[str]] = mapped_column(JSON)
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    nodes: Mapped[int] = mapped_column(Integer)
    cpus_per_node: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    gpus_per_node: Mapped[int] = mapped_column(Integer)
    walltime_s: Mapped[int] = mapped_column(Integer)
    qos: Mapped[str] = mapped_column(String(16))
    region_request: Mapped[str | None] = mapped_column(String(64))
    depends_on: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    array_id: Mapped[str | None] = mapped_column(String(36), index=True)
    array_index: Mapped[int | None] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    region: Mapped[str | None] = mapped_column(String(64))
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cpu_s: Mapped[float | None]
    energy_kwh: Mapped[float | None]
    energy_source: Mapped[str | None] = mapped_column(String(16))
    kgco2e: Mapped[float | None]
    cost: Mapped[float | None]
    log_artifacts: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class Model(Base):
    """A registered model: an artifact (or a model shipped with Enclave) plus its lineage.

    The label is computed by the server from the lineage (at least the lub of the datasets,
    base models and producing job), never taken from the client."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("agency_id", "name", "label", "version", name="uq_models_version"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(256))
    label_rank: Mapped[int] = mapped_column(Integer, index=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    runtime: Mapped[str] = mapped_column(String(32))
    framework: Mapped[str | None] = mapped_column(String(64))
    task: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    artifact_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id"))
    builtin: Mapped[str | None] = mapped_column(String(32))
    source_job_id: Mapped[str | None] = mapped_column(String(36))
    dataset_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    base_model_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Training(Base):
    """What a training job (a job of kind ``train``) reads and what it becomes."""

    __tablename__ = "trainings"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    script_artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"))
    dataset_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    base_model_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_name: Mapped[str] = mapped_column(String(256))
    runtime: Mapped[str] = mapped_column(String(32))
    model_id: Mapped[str | None] = mapped_column(String(36))
    outcome: Mapped[str | None] = mapped_column(Text)  # why no model was registered, if none
    metrics: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Endpoint(Base):
    """A deployed model: replicas (jobs of kind ``replica``) behind the gateway, by name."""

    __tablename__ = "endpoints"
    __table_args__ = (UniqueConstraint("agency_id", "label", "name", name="uq_endpoints_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(256))
    label_rank: Mapped[int] = mapped_column(Integer, index=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    runtime: Mapped[str] = mapped_column(String(32))
    region: Mapped[str] = mapped_column(String(64))
    min_replicas: Mapped[int] = mapped_column(Integer)
    max_replicas: Mapped[int] = mapped_column(Integer)
    replicas: Mapped[int] = mapped_column(Integer)  # desired now, between min and max
    cpus_per_replica: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class GatewayUsage(Base):
    """Gateway metering per agency, UTC day and session label: the budget's ledger (a
    label's calls never change what a session at another label is told). ``label`` is ""
    on rows metered before labels were recorded."""

    __tablename__ = "gateway_usage"
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    label: Mapped[str] = mapped_column(String(256), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    energy_j: Mapped[float] = mapped_column(default=0.0)


class WorkerCredential(Base):
    """A region worker's secret (only its SHA-256 is kept): it names the one region the
    worker may act for, and the one worker name it acts as (given when issued, else bound
    by its first sync; a live credential's name is its own)."""

    __tablename__ = "worker_credentials"
    __table_args__ = (
        Index(
            "uq_worker_credentials_live_worker",
            "region",
            "worker",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    region: Mapped[str] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(128))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RegionWorker(Base):
    """A region worker as last heard from. ``session`` changes each time the worker process
    starts, which is how the control plane tells a restart from a slow worker."""

    __tablename__ = "region_workers"
    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    session: Mapped[str] = mapped_column(String(36))
    credential_id: Mapped[str] = mapped_column(ForeignKey("worker_credentials.id"))
    health: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Dispatch(Base):
    """Work handed to a region's worker: the mailbox between the control plane's runner and
    the worker. ``queued`` until a worker claims it, ``claimed`` until the worker reports the
    engine's handle (``started``; ``running_at`` once out of the engine's own queue),
    ``ended`` with what the engine said."""

    __tablename__ = "dispatches"
    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    region: Mapped[str] = mapped_column(String(64), index=True)
    label: Mapped[str] = mapped_column(String(256))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    worker: Mapped[str | None] = mapped_column(String(128))
    session: Mapped[str | None] = mapped_column(String(36))
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    signal: Mapped[int | None] = mapped_column(Integer)
    cpu_s: Mapped[float | None]
    energy_j: Mapped[float | None]
    lost: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[str | None] = mapped_column(Text)
    cancel_grace_s: Mapped[float | None]
    kill: Mapped[bool] = mapped_column(Boolean, default=False)
    dispatched_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    running_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # out of the engine's queue
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
