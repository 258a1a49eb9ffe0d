"""Rows of the administrative lists (agencies, projects, users, clearance requests, worker
credentials) put straight into the store, a few at once, one second apart: what the paging
tests of those lists page through."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select

from enclave.services.context import Context
from enclave.store.models import Agency, ClearanceRequest, Project, User, WorkerCredential

# what the list is called: its route (``{agency}``: the agency listed) and the field a page's
# cursor names (a name or an id, never a sequence number)
ROUTES = {
    "agencies": ("/v1/agencies", "name"),
    "projects": ("/v1/agencies/{agency}/projects", "name"),
    "users": ("/v1/users", "name"),
    "clearance-requests": ("/v1/clearance-requests", "id"),
    "worker-credentials": ("/v1/worker-credentials", "id"),
}
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


def _agency_id(ctx: Context, agency: str) -> int:
    with ctx.sessions() as session:
        return int(session.execute(select(Agency.id).where(Agency.name == agency)).scalar_one())


def seed(ctx: Context, what: str, agency: str, names: list[str], *, start: datetime = EPOCH) -> list[str]:
    """Rows of list ``what`` of ``agency``, one per name (agencies, projects and users take
    it; clearance requests go to a new user of ``agency`` by that name; worker credentials are
    of a region by that name), one second apart from ``start``: what each lists them by (a
    name or an id), in the order given."""
    agency_id = _agency_id(ctx, agency)
    times = [start + timedelta(seconds=i) for i in range(len(names))]
    rows: list[dict[str, Any]]
    with ctx.sessions() as session, session.begin():
        if what == "agencies":
            session.execute(
                insert(Agency), [{"name": n, "created_at": at} for n, at in zip(names, times, strict=True)]
            )
            return names
        if what == "projects":
            rows = [
                {"agency_id": agency_id, "name": n, "created_at": at}
                for n, at in zip(names, times, strict=True)
            ]
            session.execute(insert(Project), rows)
            return names
        users = [
            {
                "name": n,
                "agency_id": agency_id,
                "clearance": "SECRET",
                "roles": ["user"],
                "disabled": False,
                "created_at": at,
            }
            for n, at in zip(names, times, strict=True)
        ]
        if what == "users":
            session.execute(insert(User), users)
            return names
        ids = [str(uuid.uuid4()) for _ in names]
        if what == "clearance-requests":
            session.execute(insert(User), users)
            user_ids = dict(session.execute(select(User.name, User.id).where(User.name.in_(names))).all())
            rows = [
                {
                    "id": ident,
                    "user_id": user_ids[n],
                    "from_clearance": "CONFIDENTIAL",
                    "to_clearance": "SECRET",
                    "state": "pending",
                    "requested_by": "admin",
                    "requested_at": at,
                }
                for ident, n, at in zip(ids, names, times, strict=True)
            ]
            session.execute(insert(ClearanceRequest), rows)
        else:
            rows = [
                {
                    "id": ident,
                    "region": n,
                    "secret_hash": hashlib.sha256(ident.encode()).hexdigest(),
                    "created_by": "admin",
                    "created_at": at,
                }
                for ident, n, at in zip(ids, names, times, strict=True)
            ]
            session.execute(insert(WorkerCredential), rows)
        return ids
