"""Request bodies. Unknown fields are errors; sizes and lengths are bounded."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

Name = Annotated[str, Field(min_length=1, max_length=64)]
Marking = Annotated[str, Field(min_length=1, max_length=256)]
Password = Annotated[str, Field(min_length=1, max_length=1024)]
MAX_INT64 = (1 << 63) - 1  # the widest integer column of either store


def has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    return False


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL can neither store nor compare text holding NUL (it would be a 500).
        if has_nul(value):
            raise ValueError("NUL characters are not allowed")
        return value


class LoginIn(Strict):
    user: Name
    password: Password
    label: Marking


class TokenIn(Strict):
    user: Name
    label: Marking
    ttl_s: Annotated[int, Field(gt=0, le=366 * 24 * 3600)] | None = None


class QuotasIn(Strict):
    gpu_hours: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    kwh: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    storage_bytes: Annotated[int, Field(ge=0, le=MAX_INT64)] | None = None
    gateway_rpm: Annotated[int, Field(ge=0, le=1 << 31)] | None = None
    gateway_tpm: Annotated[int, Field(ge=0, le=1 << 31)] | None = None
    gateway_token_budget: Annotated[int, Field(ge=0, le=MAX_INT64)] | None = None


class AgencyIn(Strict):
    name: Name
    quotas: QuotasIn = QuotasIn()


class ProjectIn(Strict):
    name: Name


class UserIn(Strict):
    name: Name
    agency: Name
    clearance: Marking
    roles: Annotated[list[str], Field(max_length=8)] = ["user"]
    password: Password | None = None


class UserPatch(Strict):
    clearance: Marking | None = None
    roles: Annotated[list[str], Field(max_length=8)] | None = None
    disabled: bool | None = None


class ClearanceIn(Strict):
    clearance: Marking


class PasswordIn(Strict):
    new_password: Password
    current_password: Password | None = None


class ShareIn(Strict):
    agency: Name


class TransferIn(Strict):
    artifact_id: Annotated[str, Field(min_length=1, max_length=64)]
    to: Marking
    why: Annotated[str, Field(min_length=1, max_length=4000)]


class ReviewIn(Strict):
    comment: Annotated[str, Field(max_length=4000)] | None = None


class OverrideIn(Strict):
    reason: Annotated[str, Field(min_length=1, max_length=4000)]


class ResourcesIn(Strict):
    nodes: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    cpus_per_node: Annotated[int, Field(ge=1, le=100_000)] = 1
    memory_mb: Annotated[int, Field(ge=1, le=1 << 40)] = 1024
    gpus_per_node: Annotated[int, Field(ge=0, le=1024)] = 0


class DependencyIn(Strict):
    type: Literal["afterok", "afterany"] = "afterok"
    job: Annotated[str, Field(min_length=1, max_length=64)]


class JobIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=256)] = "job"
    command: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(min_length=1, max_length=256)]
    label: Marking | None = None
    walltime_s: Annotated[int, Field(ge=1, le=30 * 24 * 3600)] = 3600
    resources: ResourcesIn = ResourcesIn()
    region: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    qos: Literal["low", "normal", "high", "urgent"] = "normal"
    env: Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=64)] = {}
    depends_on: Annotated[list[DependencyIn], Field(max_length=64)] = []
    array: Annotated[int, Field(ge=1, le=10_000)] | None = None
    idempotency_key: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    project: Name | None = None


class JobBatchIn(Strict):
    jobs: Annotated[list[JobIn], Field(min_length=1, max_length=10_000)]


class TrainingIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=256)] = "training"
    script: Annotated[str, Field(min_length=1, max_length=64, description="artifact id of the script")]
    model_name: Annotated[str, Field(min_length=1, max_length=256)]
    runtime: Literal["sklearn", "pytorch", "sentence-embeddings"]
    datasets: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=64)] = []
    base_models: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=64)] = []
    hyperparameters: dict[str, Any] = {}
    args: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(max_length=64)] = []
    walltime_s: Annotated[int, Field(ge=1, le=30 * 24 * 3600)] = 3600
    resources: ResourcesIn = ResourcesIn(memory_mb=2048)
    region: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    qos: Literal["low", "normal", "high", "urgent"] = "normal"
    idempotency_key: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class DeployIn(Strict):
    model: Annotated[str, Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    region: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    replicas: Annotated[int, Field(ge=0, le=16)] = 1
    min_replicas: Annotated[int, Field(ge=0, le=16)] | None = None
    max_replicas: Annotated[int, Field(ge=1, le=16)] | None = None
    cpus_per_replica: Annotated[int, Field(ge=1, le=256)] = 1
    memory_mb: Annotated[int, Field(ge=256, le=1 << 22)] = 3072
    pii: Literal["off", "mask"] = "off"
    log_content: bool = False


class ScaleIn(Strict):
    replicas: Annotated[int, Field(ge=0, le=16)] | None = None
    min_replicas: Annotated[int, Field(ge=0, le=16)] | None = None
    max_replicas: Annotated[int, Field(ge=1, le=16)] | None = None


WorkerName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class WorkerCredentialIn(Strict):
    region: Name
    worker: WorkerName | None = None  # the one worker name it acts as (else its first sync's)


class WorkerHealthIn(Strict):
    healthy: bool
    detail: Annotated[str, Field(max_length=2000)] = ""


class WorkerReportIn(Strict):
    job_id: Annotated[str, Field(min_length=1, max_length=36)]
    event: Literal["started", "running", "ended", "start_failed"]
    handle: dict[str, Any] | None = None
    exit_code: Annotated[int, Field(ge=-(1 << 31), lt=1 << 31)] | None = None
    signal: Annotated[int, Field(ge=0, le=128)] | None = None
    cpu_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    energy_j: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    lost: bool = False
    error: Annotated[str, Field(max_length=2000)] | None = None


class WorkerSyncIn(Strict):
    worker: WorkerName
    session: UUID
    capacity: Annotated[int, Field(ge=0, le=100_000)]
    health: WorkerHealthIn
    reports: Annotated[list[WorkerReportIn], Field(max_length=10_000)] = []
    holding: Annotated[list[Annotated[str, Field(max_length=36)]], Field(max_length=100_000)] = []
