"""Every kind of audit record. Services emit these; tests assert exact sequences."""

from __future__ import annotations

from enum import StrEnum


class AuditEvent(StrEnum):
    SERVER_BOOTSTRAPPED = "server.bootstrapped"
    LOGIN_SUCCEEDED = "auth.login_succeeded"
    LOGIN_FAILED = "auth.login_failed"
    TOKEN_MINTED = "auth.token_minted"
    TOKEN_REVOKED = "auth.token_revoked"
    ACCESS_DENIED = "access.denied"
    AGENCY_CREATED = "admin.agency_created"
    AGENCY_UPDATED = "admin.agency_updated"
    PROJECT_CREATED = "admin.project_created"
    USER_CREATED = "admin.user_created"
    USER_UPDATED = "admin.user_updated"
    PASSWORD_SET = "admin.password_set"
    CLEARANCE_REQUESTED = "admin.clearance_requested"  # a raise, waiting for a second admin
    CLEARANCE_APPROVED = "admin.clearance_approved"  # ... approved by it, and applied
    CLEARANCE_REFUSED = "admin.clearance_refused"  # ... refused or withdrawn
    CLEARANCE_LOWERED = "admin.clearance_lowered"  # a lowering: applied at once
    ARTIFACT_CREATED = "artifact.created"
    ARTIFACT_READ = "artifact.read"
    ARTIFACT_DELETED = "artifact.deleted"
    ARTIFACT_SHARED = "artifact.shared"
    TRANSFER_REQUESTED = "transfer.requested"
    TRANSFER_APPROVED = "transfer.approved"  # one reviewer's approval
    TRANSFER_REFUSED = "transfer.refused"
    TRANSFER_SCAN_REFUSED = "transfer.scan_refused"
    TRANSFER_SCAN_OVERRIDDEN = "transfer.scan_overridden"  # unreadable content vouched for, with a reason
    TRANSFER_RELEASED = "transfer.released"
    JOB_SUBMITTED = "job.submitted"
    JOB_TRANSITION = "job.transition"
    JOB_CANCEL_REQUESTED = "job.cancel_requested"
    JOB_LOGS_READ = "job.logs_read"
    MODEL_REGISTERED = "model.registered"
    MODEL_DELETED = "model.deleted"
    TRAINING_SUBMITTED = "training.submitted"
    TRAINING_FINISHED = "training.finished"  # the model it registered, or why none
    ENDPOINT_DEPLOYED = "endpoint.deployed"
    ENDPOINT_SCALED = "endpoint.scaled"
    ENDPOINT_DELETED = "endpoint.deleted"
    ENDPOINT_REPLICA_REPLACED = "endpoint.replica_replaced"
    GATEWAY_CALL = "gateway.call"
    GATEWAY_REFUSED = "gateway.refused"  # guardrail, rate limit or budget
    WORKER_CREDENTIAL_CREATED = "worker.credential_created"
    WORKER_CREDENTIAL_REVOKED = "worker.credential_revoked"
    WORKER_BOUND = "worker.bound"  # a credential bound to the worker name it first synced as
    WORKER_CONNECTED = "worker.connected"  # a region worker process started (new session)
    WORKER_CLAIMED = "worker.claimed"  # jobs handed to a region worker
    WORKER_REFUSED = "worker.refused"  # a worker asked for what its credential does not allow
    AUDIT_LISTED = "audit.listed"
    AUDIT_VERIFIED = "audit.verified"
    # failed authentications of one source in one minute, with their count (one record, not one per try)
    AUTH_FAILURES = "auth.failures"


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
