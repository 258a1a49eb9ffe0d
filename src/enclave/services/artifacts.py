"""Labelled artifacts: encrypted blobs plus metadata, read and written only through the gate.

An artifact is created at exactly the session label (star property), stored encrypted with
its label's key, checksummed, size-limited and soft-deleted. Uploads stream: content is
encrypted to a temporary file as it arrives and published only when the size, checksum and
policy checks have passed, so a refused upload leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, func, join, select
from sqlalchemy.orm import Session

from enclave.audit.events import AuditEvent
from enclave.errors import Conflict, InvalidInput, NotFound, TooLarge
from enclave.executors import outputs
from enclave.policy import Action, Resource
from enclave.services import listing
from enclave.services.context import Context
from enclave.services.listing import Window
from enclave.services.readable import Source
from enclave.services.tenancy import agency_by_name, project_id_of
from enclave.services.unit import Actor, Unit, entry_for, unit
from enclave.store.models import Agency, Artifact, Share

log = logging.getLogger("enclave.artifacts")
MAX_NAME_CHARS = 256
MAX_SYSTEM_FILE_BYTES = 256 << 20  # per job output stream kept as an artifact (the per-job cap)


def resource_of(
    ctx: Context, art: Artifact, agency: str, shared_with: frozenset[str] = frozenset()
) -> Resource:
    return Resource(
        kind="artifact", label=ctx.scheme.parse(art.label), agency=agency, shared_with=shared_with
    )


def load(
    u: Unit, actor: Actor, artifact_id: str, action: Action = Action.READ, kind: str | None = None
) -> tuple[Artifact, Resource]:
    """Fetch an artifact through the gate: missing and invisible look the same. ``kind``
    narrows the look-up (a dataset id names a dataset, not any artifact)."""
    query = (
        select(Artifact, Agency.name)
        .join(Agency, Artifact.agency_id == Agency.id)
        .where(Artifact.id == artifact_id, Artifact.deleted_at.is_(None))
    )
    if kind is not None:
        query = query.where(Artifact.kind == kind)
    row = u.session.execute(query).first()
    if row is None:
        raise NotFound(f"{kind or 'artifact'} {artifact_id} not found")
    art, agency = row
    res = resource_of(u.ctx, art, agency, _shares(u.session, art.id))
    if kind is not None:  # refusals name what was asked for, exactly as a missing one does
        res = dataclasses.replace(res, kind=kind)
    u.require(actor, action, res, artifact_id)
    return art, res


def _shares(session: Session, object_id: str) -> frozenset[str]:
    return _shares_of(session, [object_id]).get(object_id, frozenset())


def _shares_of(session: Session, object_ids: list[str]) -> dict[str, frozenset[str]]:
    """The agencies each of ``object_ids`` is shared with."""
    rows = session.execute(
        select(Share.object_id, Agency.name)
        .join(Agency, Share.agency_id == Agency.id)
        .where(Share.object_id.in_(object_ids))
    )
    out: dict[str, set[str]] = {}
    for object_id, name in rows:
        out.setdefault(object_id, set()).add(name)
    return {k: frozenset(v) for k, v in out.items()}


def view(art: Artifact, agency: str, shared_with: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {
        "id": art.id,
        "name": art.name,
        "kind": art.kind,
        "label": art.label,
        "agency": agency,
        "size_bytes": art.size_bytes,
        "sha256": art.sha256,
        "metadata": art.meta,
        "derived_from": art.derived_from,
        "version": art.version,
        "shared_with": sorted(shared_with),
        "created_at": art.created_at.isoformat(),
    }


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or any(ord(c) < 32 for c in name):
        raise InvalidInput(f"artifact name must be 1-{MAX_NAME_CHARS} printable characters")
    return name


async def put(
    ctx: Context,
    actor: Actor,
    name: str,
    content: AsyncIterator[bytes],
    *,
    expected_sha256: str | None = None,
    project: str | None = None,
    kind: str = "artifact",
    meta: dict[str, Any] | None = None,
    max_bytes: int | None = None,
    versioned: bool = False,
    on_commit: Callable[[Unit, Artifact], None] | None = None,
) -> dict[str, Any]:
    """Store streamed content as a new artifact at the session label.

    ``versioned`` numbers artifacts of one (agency, kind, name, label) 1, 2, ... (datasets):
    the number counts only uploads at the session label, never ones it may not read.
    The agency's storage quota holds at each label on its own (see :func:`storage_left`).
    ``on_commit`` runs inside the publishing transaction, after the row is added, so a
    record built on the artifact (a registered model) commits with it or not at all.
    """
    name = _check_name(name)
    if expected_sha256 is not None and (len(expected_sha256) != 64 or not _is_hex(expected_sha256)):
        raise InvalidInput("checksum must be 64 hex digits of SHA-256")
    label = actor.subject.session
    res = Resource(kind="artifact", label=label, agency=actor.subject.agency)
    limit = min(max_bytes or ctx.settings.max_upload_bytes, ctx.settings.max_upload_bytes)
    # Check policy and quota before reading a byte, then again when committing.
    with unit(ctx) as u:
        u.require(actor, Action.CREATE, res)
        project_id = project_id_of(u.session, actor.agency_id, actor.subject.agency, project)
        limit = min(limit, storage_left(u.session, actor.agency_id, label.marking))
    art_id = str(uuid.uuid4())
    writer = ctx.blobs.writer(label.marking, art_id, limit)
    try:
        async for chunk in content:
            writer.write(chunk)
        if writer.size == 0:
            raise InvalidInput("empty content: nothing to store")
        if expected_sha256 is not None and expected_sha256.lower() != writer.sha256:
            raise InvalidInput("checksum mismatch: the content is not what was sent")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    try:
        with unit(ctx) as u:
            u.require(actor, Action.CREATE, res)
            if writer.size > storage_left(u.session, actor.agency_id, label.marking):
                raise TooLarge(f"the agency's storage quota at {label.marking} is exceeded")
            art = Artifact(
                id=art_id,
                name=name,
                kind=kind,
                label=label.marking,
                label_rank=label.rank,
                agency_id=actor.agency_id,
                project_id=project_id,
                owner_id=actor.user_id,
                size_bytes=writer.size,
                sha256=writer.sha256,
                blob_key=art_id,
                meta=meta or {},
                derived_from=[],
                version=_next_version(u.session, actor.agency_id, kind, name, label.marking)
                if versioned
                else None,
                created_at=ctx.now(),
            )
            u.session.add(art)
            u.record(
                entry_for(
                    actor,
                    AuditEvent.ARTIFACT_CREATED,
                    res,
                    art_id,
                    details={"name": name, "kind": kind, "size": writer.size, "sha256": writer.sha256},
                )
            )
            if on_commit is not None:
                on_commit(u, art)
    except BaseException:
        ctx.blobs.delete(label.marking, art_id)
        raise
    return view(art, actor.subject.agency)


def _next_version(session: Session, agency_id: int, kind: str, name: str, label: str) -> int:
    """One more than the highest version of this name at this label, deleted ones included
    (numbers are never reused). Versions at other labels do not count: the number a session
    gets must not reveal uploads it may not read. Two racing uploads hit the unique
    constraint; one of them fails cleanly."""
    top = session.execute(
        select(func.max(Artifact.version)).where(
            Artifact.agency_id == agency_id,
            Artifact.kind == kind,
            Artifact.name == name,
            Artifact.label == label,
        )
    ).scalar_one()
    return int(top or 0) + 1


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def storage_left(session: Session, agency_id: int, label: str) -> int:
    """Bytes the agency may still store at ``label`` (a marking).

    The agency's storage quota holds per label: usage at one label is counted against that
    label only. A shared pool would let an upload at one label learn, from how much room is
    left (or the 413 that says so), the size of what was stored at a label it may not read.
    """
    quota = session.execute(select(Agency.quota_storage_bytes).where(Agency.id == agency_id)).scalar_one()
    if quota is None:
        return 1 << 62
    used = session.execute(
        select(func.coalesce(func.sum(Artifact.size_bytes), 0)).where(
            Artifact.agency_id == agency_id, Artifact.label == label, Artifact.deleted_at.is_(None)
        )
    ).scalar_one()
    return max(0, int(quota) - int(used))


def list_visible(
    ctx: Context, actor: Actor, kind: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """The newest ``limit`` artifacts the session may read (see :func:`page`)."""
    return list(page(ctx, actor, kind, Window(limit))["items"])


def page(ctx: Context, actor: Actor, kind: str | None = None, window: Window = Window()) -> dict[str, Any]:
    """One page of the artifacts the session may read, newest first: its agency's and those
    shared with it (read through the share, which carries the artifact's label), at the labels
    it dominates only (:mod:`enclave.services.listing`)."""
    filters: list[ColumnElement[bool]] = [Artifact.deleted_at.is_(None)]
    if kind is not None:
        filters.append(Artifact.kind == kind)
    sources = [
        Source(Artifact.label, [Artifact.agency_id == actor.agency_id], filters),
        Source(
            Share.label,
            [Share.agency_id == actor.agency_id],
            filters,
            joined=join(Artifact, Share, Share.object_id == Artifact.id),
        ),
    ]
    with unit(ctx) as u:
        found = listing.page(u, actor, "artifact", [Artifact.created_at, Artifact.id], sources, window)
        rows = u.session.execute(
            select(Artifact, Agency.name)
            .join(Agency, Artifact.agency_id == Agency.id)
            .where(Artifact.id.in_(found.ids))
        ).all()
        shares = _shares_of(u.session, found.ids)
        items = [
            view(art, agency, shares.get(art.id, frozenset()))
            for art, agency in found.ordered(rows, lambda row: str(row[0].id))
        ]
    return found.answer(items)


def show(ctx: Context, actor: Actor, artifact_id: str, kind: str | None = None) -> dict[str, Any]:
    with unit(ctx) as u:
        art, res = load(u, actor, artifact_id, kind=kind)
        u.record(entry_for(actor, AuditEvent.ARTIFACT_READ, res, artifact_id, details={"part": "metadata"}))
        return view(art, res.agency or "", res.shared_with)


def open_content(
    ctx: Context, actor: Actor, artifact_id: str, kind: str | None = None
) -> tuple[dict[str, Any], Iterator[bytes]]:
    """Authorise and audit a read, then return the metadata and a decrypting iterator."""
    with unit(ctx) as u:
        art, res = load(u, actor, artifact_id, kind=kind)
        u.record(entry_for(actor, AuditEvent.ARTIFACT_READ, res, artifact_id, details={"part": "content"}))
    return view(art, res.agency or "", res.shared_with), ctx.blobs.read(art.label, art.blob_key)


def delete(ctx: Context, actor: Actor, artifact_id: str, kind: str | None = None) -> None:
    """Soft delete: the row stays (for audit and lineage), the artifact disappears."""
    with unit(ctx) as u:
        art, res = load(u, actor, artifact_id, Action.DELETE, kind=kind)
        art.deleted_at = ctx.now()
        u.record(entry_for(actor, AuditEvent.ARTIFACT_DELETED, res, artifact_id))


def share(ctx: Context, actor: Actor, artifact_id: str, agency_name: str) -> dict[str, Any]:
    with unit(ctx) as u:
        art, res = load(u, actor, artifact_id, Action.SHARE)
        target = agency_by_name(u.session, agency_name)
        if target.id == actor.agency_id:
            raise InvalidInput("an artifact is always visible to its own agency")
        if u.session.get(Share, (artifact_id, target.id)) is not None:
            raise Conflict(f"artifact already shared with {agency_name}")
        u.session.add(
            Share(object_id=artifact_id, agency_id=target.id, label=art.label, created_at=ctx.now())
        )
        u.record(
            entry_for(actor, AuditEvent.ARTIFACT_SHARED, res, artifact_id, details={"with": agency_name})
        )
        shared = res.shared_with | {agency_name}
        return view(art, res.agency or "", shared)


def store_system_file(
    ctx: Context,
    path: Path,
    *,
    name: str,
    kind: str,
    label: str,
    agency_id: int,
    owner_id: int,
    meta: dict[str, Any],
    on_commit: Callable[[Unit, Artifact], None] | None = None,
    max_bytes: int = MAX_SYSTEM_FILE_BYTES,
    whole: bool = False,
) -> str | None:
    """Encrypt a file the system produced (a job's log) as an artifact at ``label``.

    No policy check: the system writes at the label of the work that produced the file, never
    lower. Job output counts against the agency's storage quota at that label: at most
    ``max_bytes`` (the per-job output cap) and what the quota leaves are kept; ``meta`` then
    says ``truncated`` and the file's full size. The file is read without following links
    (a job may have written it). Returns the new id, or None when the file is missing or
    empty, or the quota has no room left. The caller records the artifact in its own
    transaction. ``whole``: keep all of it or nothing (TooLarge) — an archive cut short is no
    model.
    """
    fd = outputs.open_file(path)
    if fd is None:
        return None
    try:
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size == 0:
        return None
    parsed_label = ctx.scheme.parse(label).marking
    with ctx.read_sessions() as session:
        room = min(max_bytes, storage_left(session, agency_id, parsed_label))
    if whole and size > room:
        raise TooLarge(f"{name}: {size} bytes do not fit the agency's storage quota at {parsed_label}")
    if room <= 0:
        log.warning("no storage left at %s for agency %s: %s not kept", parsed_label, agency_id, name)
        return None
    if size > room:
        meta = {**meta, "truncated": True, "full_size_bytes": size}
    art_id = str(uuid.uuid4())
    writer = ctx.blobs.writer(label, art_id, min(size, room) + (1 << 20))
    try:
        for block in outputs.chunks(path, room):
            writer.write(block)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    parsed = ctx.scheme.parse(label)
    try:
        with unit(ctx) as u:
            art = Artifact(
                id=art_id,
                name=name,
                kind=kind,
                label=parsed.marking,
                label_rank=parsed.rank,
                agency_id=agency_id,
                project_id=None,
                owner_id=owner_id,
                size_bytes=writer.size,
                sha256=writer.sha256,
                blob_key=art_id,
                meta=meta,
                derived_from=[],
                created_at=ctx.now(),
            )
            if writer.size > storage_left(u.session, agency_id, parsed.marking):
                raise TooLarge(f"the agency's storage quota at {parsed.marking} is exceeded")
            u.session.add(art)
            u.record(
                entry_for(
                    None,
                    AuditEvent.ARTIFACT_CREATED,
                    Resource(kind="artifact", label=parsed),
                    art_id,
                    details={"by": "system", **meta},
                )
            )
            if on_commit is not None:
                on_commit(u, art)
    except BaseException:
        ctx.blobs.delete(label, art_id)
        raise
    return art_id
