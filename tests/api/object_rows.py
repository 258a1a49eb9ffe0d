"""Rows of every listed kind put straight into the store, many at once, one second apart
(the paging and listing-leak tests need thousands; uploading them would take minutes)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select

from enclave.services.context import Context
from enclave.store.models import Agency, Artifact, Endpoint, Job, Model, Share, Training, Transfer, User

# what the listing is called, and its route
PATHS = {
    "artifacts": "/v1/artifacts",
    "datasets": "/v1/datasets",
    "models": "/v1/registry/models",
    "transfers": "/v1/transfers",
    "endpoints": "/v1/endpoints",
    "training": "/v1/training",
}
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


def _ids(ctx: Context, agency: str, user: str) -> tuple[int, int]:
    with ctx.sessions() as session:
        agency_id = session.execute(select(Agency.id).where(Agency.name == agency)).scalar_one()
        user_id = session.execute(select(User.id).where(User.name == user)).scalar_one()
    return int(agency_id), int(user_id)


def _artifact(
    n: int, label: str, rank: int, agency_id: int, user_id: int, at: datetime, kind: str
) -> dict[str, Any]:
    ident = str(uuid.uuid4())
    return {
        "id": ident,
        "name": f"{kind}-{n}-{ident[:8]}",
        "kind": kind,
        "label": label,
        "label_rank": rank,
        "agency_id": agency_id,
        "owner_id": user_id,
        "size_bytes": 1,
        "sha256": "0" * 64,
        "blob_key": ident,
        "meta": {},
        "derived_from": [],
        "version": 1 if kind == "dataset" else None,
        "created_at": at,
    }


def seed(
    ctx: Context,
    what: str,
    agency: str,
    user: str,
    label: str,
    n: int,
    *,
    start: datetime = EPOCH,
    shared_with: str | None = None,
) -> list[str]:
    """``n`` rows of listing ``what`` of ``agency`` at ``label``, one second apart from
    ``start``; their ids, oldest first (``shared_with``: artifacts shared with that agency)."""
    rank = ctx.scheme.parse(label).rank
    label = ctx.scheme.parse(label).marking
    agency_id, user_id = _ids(ctx, agency, user)
    times = [start + timedelta(seconds=i) for i in range(n)]
    kind = "dataset" if what == "datasets" else "artifact"
    with ctx.sessions() as session, session.begin():
        base = _artifact(-1, label, rank, agency_id, user_id, start - timedelta(days=1), "artifact")
        if what in ("transfers", "training"):  # what they refer to
            session.execute(insert(Artifact), [base])
        model = {
            "id": str(uuid.uuid4()),
            "name": f"base-{uuid.uuid4().hex[:8]}",
            "version": 1,
            "label": label,
            "label_rank": rank,
            "agency_id": agency_id,
            "owner_id": user_id,
            "runtime": "sklearn",
            "size_bytes": 1,
            "metrics": {},
            "meta": {},
            "dataset_ids": [],
            "base_model_ids": [],
            "created_at": start - timedelta(days=1),
        }
        rows: list[dict[str, Any]]
        if what in ("artifacts", "datasets"):
            rows = [_artifact(i, label, rank, agency_id, user_id, at, kind) for i, at in enumerate(times)]
            session.execute(insert(Artifact), rows)
            if shared_with is not None:
                target = session.execute(select(Agency.id).where(Agency.name == shared_with)).scalar_one()
                shares = [
                    {"object_id": r["id"], "agency_id": target, "label": label, "created_at": start}
                    for r in rows
                ]
                session.execute(insert(Share), shares)
        elif what == "models":
            rows = [
                {**model, "id": str(uuid.uuid4()), "name": f"m{i}-{uuid.uuid4().hex[:8]}", "created_at": at}
                for i, at in enumerate(times)
            ]
            session.execute(insert(Model), rows)
        elif what == "transfers":
            rows = [
                {
                    "id": str(uuid.uuid4()),
                    "artifact_id": base["id"],
                    "agency_id": agency_id,
                    "source_label": label,
                    "source_rank": rank,
                    "target_label": "UNCLASSIFIED",
                    "justification": "test",
                    "requester_id": user_id,
                    "downgrade": True,
                    "state": "pending",
                    "created_at": at,
                    "updated_at": at,
                }
                for at in times
            ]
            session.execute(insert(Transfer), rows)
        elif what == "endpoints":
            session.execute(insert(Model), [model])
            rows = [
                {
                    "id": str(uuid.uuid4()),
                    "name": f"ep-{i}-{uuid.uuid4().hex[:8]}",
                    "label": label,
                    "label_rank": rank,
                    "agency_id": agency_id,
                    "owner_id": user_id,
                    "model_id": model["id"],
                    "runtime": "sklearn",
                    "region": "local",
                    "min_replicas": 0,
                    "max_replicas": 1,
                    "replicas": 0,
                    "cpus_per_replica": 1,
                    "memory_mb": 64,
                    "state": "ready",
                    "settings": {},
                    "restarts": 0,
                    "created_at": at,
                    "updated_at": at,
                }
                for i, at in enumerate(times)
            ]
            session.execute(insert(Endpoint), rows)
        elif what == "training":
            rows = [_train_job(i, label, rank, agency_id, user_id, at) for i, at in enumerate(times)]
            session.execute(insert(Job), rows)
            trainings = [
                {
                    "job_id": r["id"],
                    "script_artifact_id": base["id"],
                    "dataset_ids": [],
                    "base_model_ids": [],
                    "hyperparameters": {},
                    "model_name": r["name"],
                    "runtime": "sklearn",
                    "metrics": [],
                    "created_at": r["submitted_at"],
                }
                for r in rows
            ]
            session.execute(insert(Training), trainings)
        else:
            raise ValueError(what)
    return [r["id"] for r in rows]


def _train_job(i: int, label: str, rank: int, agency_id: int, user_id: int, at: datetime) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "kind": "train",
        "name": f"train-{i}",
        "label": label,
        "label_rank": rank,
        "agency_id": agency_id,
        "owner_id": user_id,
        "command": ["true"],
        "env": {},
        "nodes": 1,
        "cpus_per_node": 1,
        "memory_mb": 64,
        "gpus_per_node": 0,
        "walltime_s": 60,
        "qos": "normal",
        "depends_on": [],
        "state": "completed",
        "attempts": 0,
        "cancel_requested": False,
        "submitted_at": at,
        "log_artifacts": {},
    }
