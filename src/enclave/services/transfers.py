"""The cross-domain guard: the only way content moves to a label it is not already at.

* Upgrade (target dominates source): copied at once, no review, audited.
* Downgrade (target lower or incomparable): a request with a justification; the content is
  read by :mod:`enclave.guard_content` (encodings, archives, documents, base64) and refused
  at once if it carries markings above the target, or if any part of it cannot be read as
  text; two distinct release authorities whose clearance dominates the source approve (the
  requester never counts); the guard scans again and writes a copy at the target label.
  One refusal ends it — with one exception: content refused *only* because the guard could
  not read it may be vouched for by a release authority with a written reason
  (:func:`override`, audited); that counts as their approval and the transfer is pending again.

States: ``pending → approved → released``, or ``refused`` from pending or approved
(``refused → pending`` only by :func:`override`). The approval that completes the review
commits before the release runs, so a release that fails midway (disk, crash) leaves an
``approved`` transfer that ``release`` finishes later.

The release reads the stored content once: the same chunks go to the scanner and to the
copy, the copy is committed only if the scan passes, and the SHA-256 of what was scanned
must equal both the artifact's recorded digest and the digest of the copy written.
"""

from __future__ import annotations

import hashlib
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from enclave.audit.events import AuditEvent, Outcome
from enclave.blobs import BlobWriter, IntegrityError
from enclave.errors import Conflict, InvalidInput, NotFound
from enclave.guard_content import ContentScanner, Verdict
from enclave.guard_scan import MarkingScanner
from enclave.labels import Label
from enclave.policy import Action, Resource, Subject, plan_transfer
from enclave.services import artifacts, listing
from enclave.services.context import Context
from enclave.services.listing import Window
from enclave.services.readable import Source
from enclave.services.unit import Actor, Unit, entry_for, unit
from enclave.store.models import Agency, Artifact, Transfer, TransferReview, User

MAX_JUSTIFICATION_CHARS = 4000
MAX_OVERRIDE_REASON_CHARS = 4000
UNREADABLE = "the guard cannot read the content as text"  # how a refusal it may override begins
APPROVING = ("approve", "override")  # review decisions that count as an approval


class TransferState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REFUSED = "refused"
    RELEASED = "released"


def _resource(ctx: Context, t: Transfer, agency: str, requester: str) -> Resource:
    return Resource(kind="transfer", label=ctx.scheme.parse(t.source_label), agency=agency, owner=requester)


def _load(u: Unit, actor: Actor, transfer_id: str, action: Action = Action.READ) -> tuple[Transfer, Resource]:
    row = u.session.execute(
        select(Transfer, Agency.name, User.name)
        .join(Agency, Transfer.agency_id == Agency.id)
        .join(User, Transfer.requester_id == User.id)
        .where(Transfer.id == transfer_id)
    ).first()
    if row is None:
        raise NotFound(f"transfer {transfer_id} not found")
    t, agency, requester = row
    res = _resource(u.ctx, t, agency, requester)
    u.require(actor, action, res, transfer_id)
    return t, res


def _view(u: Unit, t: Transfer, requester: str, viewer: Subject) -> dict[str, Any]:
    """A transfer as ``viewer`` may see it: the copy's id only if the viewer can read its label
    (an upgrade's copy sits above the transfer's own label)."""
    reviews = u.session.execute(
        select(TransferReview, User.name)
        .join(User, TransferReview.reviewer_id == User.id)
        .where(TransferReview.transfer_id == t.id)
        .order_by(TransferReview.id)
    )
    return {
        "id": t.id,
        "artifact_id": t.artifact_id,
        "source_label": t.source_label,
        "target_label": t.target_label,
        "justification": t.justification,
        "requester": requester,
        "downgrade": t.downgrade,
        "state": t.state,
        "reason": t.reason,
        "reviews": [
            {"reviewer": name, "decision": r.decision, "comment": r.comment, "at": r.created_at.isoformat()}
            for r, name in reviews
        ],
        "released_artifact_id": (
            t.result_artifact_id if viewer.session.dominates(u.ctx.scheme.parse(t.target_label)) else None
        ),
        "created_at": t.created_at.isoformat(),
        "updated_at": t.updated_at.isoformat(),
    }


def _refuse_for_scan(
    u: Unit, actor: Actor, t: Transfer, res: Resource, target: Label, verdict: Verdict
) -> None:
    """Refuse for what the scan found: markings above the target (final) or, if none, parts
    it could not read (a release authority may :func:`override` that)."""
    found = [f.text for f in verdict.above(target)]
    t.state = TransferState.REFUSED
    details: dict[str, object]
    if found:
        t.reason = f"guard scan found markings above {target}: {', '.join(found[:10])}"
        details = {"found": found[:50]}
    else:
        t.reason = (
            f"{UNREADABLE}: {'; '.join(verdict.unreadable[:5])}"
            " (a release authority may override this with a written reason)"
        )
        details = {"unreadable": list(verdict.unreadable[:50])}
    details["sha256"] = verdict.sha256
    u.record(
        entry_for(actor, AuditEvent.TRANSFER_SCAN_REFUSED, res, t.id, outcome=Outcome.DENY, details=details)
    )


def _scan(ctx: Context, art: Artifact, copy: BlobWriter | None = None, read: bool = True) -> Verdict:
    """One read of the stored content: every chunk to the scanner (unless ``read`` is false:
    an upgrade is only hashed) and, if given, to the copy."""
    reader = ContentScanner(MarkingScanner(ctx.scheme, ctx.guard_patterns))
    digest = hashlib.sha256()
    for chunk in ctx.blobs.read(art.label, art.blob_key):
        if read:
            reader.feed(chunk)
        digest.update(chunk)
        if copy is not None:
            copy.write(chunk)
    verdict = reader.finish()
    verdict = Verdict(verdict.findings, verdict.unreadable, digest.hexdigest(), verdict.size_bytes)
    if verdict.sha256 != art.sha256:
        raise IntegrityError(f"artifact {art.id}: the stored content does not match its recorded SHA-256")
    return verdict


def _blocks(verdict: Verdict, target: Label, overridden: bool) -> bool:
    """Whether the verdict stops a release: markings above the target always; unreadable
    parts unless a release authority vouched for them."""
    return bool(verdict.above(target)) or (not verdict.readable and not overridden)


def request(
    ctx: Context, actor: Actor, artifact_id: str, target_marking: str, justification: str
) -> dict[str, Any]:
    target = ctx.scheme.parse(target_marking)
    justification = justification.strip()
    if not justification or len(justification) > MAX_JUSTIFICATION_CHARS:
        raise InvalidInput(f"a justification of 1-{MAX_JUSTIFICATION_CHARS} characters is required")
    with unit(ctx) as u:
        art, art_res = artifacts.load(u, actor, artifact_id, Action.REQUEST_TRANSFER)
        source = ctx.scheme.parse(art.label)
        # The request also *creates* a record (with the justification) that is readable at
        # the source label, so, like every write, it happens at exactly the session label:
        # from a higher session it would carry that session's information down.
        u.require(actor, Action.CREATE, Resource(kind="transfer", label=source, agency=art_res.agency))
    if target == source:
        raise InvalidInput(f"artifact is already at {target}")
    plan = plan_transfer(source, target)
    verdict = _scan(ctx, art) if plan.downgrade else None
    now = ctx.now()
    transfer_id = str(uuid.uuid4())
    with unit(ctx) as u:
        art, art_res = artifacts.load(u, actor, artifact_id, Action.REQUEST_TRANSFER)
        t = Transfer(
            id=transfer_id,
            artifact_id=artifact_id,
            agency_id=art.agency_id,
            source_label=source.marking,
            source_rank=source.rank,
            target_label=target.marking,
            justification=justification,
            requester_id=actor.user_id,
            downgrade=plan.downgrade,
            state=TransferState.PENDING if plan.downgrade else TransferState.APPROVED,
            created_at=now,
            updated_at=now,
        )
        u.session.add(t)
        res = _resource(ctx, t, art_res.agency or "", actor.subject.user)
        details: dict[str, object] = {
            "artifact": artifact_id,
            "to": target.marking,
            "downgrade": plan.downgrade,
        }
        u.record(entry_for(actor, AuditEvent.TRANSFER_REQUESTED, res, transfer_id, details=details))
        if verdict is not None and _blocks(verdict, target, overridden=False):
            _refuse_for_scan(u, actor, t, res, target, verdict)
    if not plan.downgrade:
        return release(ctx, actor, transfer_id)
    return show(ctx, actor, transfer_id)


def review(
    ctx: Context, actor: Actor, transfer_id: str, approve: bool, comment: str | None = None
) -> dict[str, Any]:
    with unit(ctx) as u:
        t, res = _load(u, actor, transfer_id, Action.REVIEW_TRANSFER)
        # A review writes a decision and comment readable at the transfer's (source) label:
        # star property, so a session above that label cannot write down through it.
        u.require(actor, Action.WRITE, res, transfer_id)
        if t.state != TransferState.PENDING:
            raise Conflict(f"transfer is {t.state}, not pending")
        _not_reviewed_yet(u, t, actor)
        now = ctx.now()
        u.session.add(
            TransferReview(
                transfer_id=t.id,
                reviewer_id=actor.user_id,
                decision="approve" if approve else "refuse",
                comment=comment,
                created_at=now,
            )
        )
        t.updated_at = now
        if not approve:
            t.state = TransferState.REFUSED
            t.reason = f"refused by {actor.subject.user}" + (f": {comment}" if comment else "")
            u.record(
                entry_for(
                    actor,
                    AuditEvent.TRANSFER_REFUSED,
                    res,
                    transfer_id,
                    outcome=Outcome.DENY,
                    details={"comment": comment},
                )
            )
        else:
            _record_approval(u, ctx, actor, t, res, comment)
        state = t.state
    return _release_or_show(ctx, actor, transfer_id, state)


def _not_reviewed_yet(u: Unit, t: Transfer, actor: Actor) -> None:
    already = u.session.execute(
        select(TransferReview.id).where(
            TransferReview.transfer_id == t.id, TransferReview.reviewer_id == actor.user_id
        )
    ).first()
    if already:
        raise Conflict("you have already reviewed this transfer; a second reviewer must be someone else")


def _count_approvals(u: Unit, ctx: Context, t: Transfer) -> int:
    """The distinct approvals so far (an override counts); approved once there are enough."""
    u.session.flush()
    approvals = set(
        u.session.execute(
            select(TransferReview.reviewer_id).where(
                TransferReview.transfer_id == t.id, TransferReview.decision.in_(APPROVING)
            )
        )
        .scalars()
        .all()
    )
    needed = plan_transfer(ctx.scheme.parse(t.source_label), ctx.scheme.parse(t.target_label)).reviews_needed
    if len(approvals) >= needed:
        t.state = TransferState.APPROVED
    return len(approvals)


def _overridden(u: Unit, t: Transfer) -> bool:
    return (
        u.session.execute(
            select(TransferReview.id).where(
                TransferReview.transfer_id == t.id, TransferReview.decision == "override"
            )
        ).first()
        is not None
    )


def override(ctx: Context, actor: Actor, transfer_id: str, reason: str) -> dict[str, Any]:
    """A release authority vouches for content the guard could not read, with a written reason.

    Allowed only on a transfer the scan refused *solely* for unreadable parts: the content is
    scanned again here (so an override never covers a marking the scanner finds, nor content
    that changed), and the override names the SHA-256 it covers. It is the authority's
    approval (the requester never counts, as for :func:`review`), audited with the reason;
    the transfer is pending again and needs the usual number of distinct approvals.
    """
    reason = reason.strip()
    if not reason or len(reason) > MAX_OVERRIDE_REASON_CHARS:
        raise InvalidInput(f"a reason of 1-{MAX_OVERRIDE_REASON_CHARS} characters is required")
    with unit(ctx) as u:
        t, res = _load(u, actor, transfer_id, Action.REVIEW_TRANSFER)
        u.require(actor, Action.WRITE, res, transfer_id)  # the reason is written at the source label
        if t.state != TransferState.REFUSED or not (t.reason or "").startswith(UNREADABLE):
            raise Conflict(f"only a transfer refused because {UNREADABLE} can be overridden")
        _not_reviewed_yet(u, t, actor)
        art = u.session.get_one(Artifact, t.artifact_id)
        if art.deleted_at is not None:
            raise Conflict("the source artifact was deleted")
    target = ctx.scheme.parse(t.target_label)
    verdict = _scan(ctx, art)
    if verdict.above(target) or verdict.readable:  # cannot be: the content is immutable
        raise Conflict("the content no longer scans as unreadable only; request the transfer again")
    with unit(ctx) as u:
        t, res = _load(u, actor, transfer_id, Action.REVIEW_TRANSFER)
        if t.state != TransferState.REFUSED or not (t.reason or "").startswith(UNREADABLE):
            raise Conflict(f"transfer is {t.state}; it cannot be overridden")
        now = ctx.now()
        u.session.add(
            TransferReview(
                transfer_id=t.id,
                reviewer_id=actor.user_id,
                decision="override",
                comment=reason,
                created_at=now,
            )
        )
        t.state, t.updated_at = TransferState.PENDING, now
        t.reason = f"unreadable content vouched for by {actor.subject.user}: {reason}"
        details: dict[str, object] = {
            "reason": reason,
            "unreadable": list(verdict.unreadable[:50]),
            "sha256": verdict.sha256,
        }
        u.record(entry_for(actor, AuditEvent.TRANSFER_SCAN_OVERRIDDEN, res, transfer_id, details=details))
        _record_approval(u, ctx, actor, t, res, reason)
        state = t.state
    return _release_or_show(ctx, actor, transfer_id, state)


def _record_approval(
    u: Unit, ctx: Context, actor: Actor, t: Transfer, res: Resource, comment: str | None
) -> None:
    approvals = _count_approvals(u, ctx, t)
    u.record(
        entry_for(
            actor,
            AuditEvent.TRANSFER_APPROVED,
            res,
            t.id,
            details={"approvals": approvals, "comment": comment},
        )
    )


def _release_or_show(ctx: Context, actor: Actor, transfer_id: str, state: str) -> dict[str, Any]:
    """Two approvals release at once; otherwise the transfer as it stands."""
    if state == TransferState.APPROVED:
        return release(ctx, actor, transfer_id)
    return show(ctx, actor, transfer_id)


def release(ctx: Context, actor: Actor, transfer_id: str) -> dict[str, Any]:
    """Finish an approved transfer: scan again, write the copy at the target label."""
    with unit(ctx) as u:
        t, res = _load(u, actor, transfer_id)
        if t.state == TransferState.RELEASED:
            return _view(u, t, res.owner or "", actor.subject)
        if t.state != TransferState.APPROVED:
            raise Conflict(f"transfer is {t.state}, not approved")
        art = u.session.get_one(Artifact, t.artifact_id)
        if art.deleted_at is not None:
            t.state, t.reason, t.updated_at = (
                TransferState.REFUSED,
                "the source artifact was deleted",
                ctx.now(),
            )
            u.record(
                entry_for(
                    actor,
                    AuditEvent.TRANSFER_REFUSED,
                    res,
                    transfer_id,
                    outcome=Outcome.DENY,
                    details={"reason": t.reason},
                )
            )
            return _view(u, t, res.owner or "", actor.subject)
        overridden = _overridden(u, t)
    target = ctx.scheme.parse(t.target_label)
    new_id = str(uuid.uuid4())
    # One read: the chunks that are scanned are the chunks that are copied. The copy is
    # committed only if the scan lets it go and its digest is the digest of what was scanned.
    # (A refused copy's temporary file is removed at once; it never becomes an artifact.)
    writer = ctx.blobs.writer(target.marking, new_id, max(art.size_bytes, 1))
    try:
        verdict = _scan(ctx, art, writer, read=t.downgrade)
        refused = t.downgrade and _blocks(verdict, target, overridden)
        if refused:
            writer.abort()
        else:
            if writer.sha256 != verdict.sha256:
                raise IntegrityError(f"transfer {transfer_id}: the copy differs from the content scanned")
            writer.commit()
    except BaseException:
        writer.abort()
        raise
    try:
        with unit(ctx) as u:
            t, res = _load(u, actor, transfer_id)
            if t.state != TransferState.APPROVED:
                raise Conflict(f"transfer is {t.state}, not approved")
            now = ctx.now()
            t.updated_at = now
            if refused:
                _refuse_for_scan(u, actor, t, res, target, verdict)
            else:
                copy = Artifact(
                    id=new_id,
                    name=art.name,
                    kind=art.kind,
                    label=target.marking,
                    label_rank=target.rank,
                    agency_id=art.agency_id,
                    project_id=art.project_id,
                    owner_id=t.requester_id,
                    size_bytes=art.size_bytes,
                    sha256=art.sha256,
                    blob_key=new_id,
                    meta={**art.meta, "transfer": t.id},
                    derived_from=[art.id],
                    created_at=now,
                )
                u.session.add(copy)
                t.state = TransferState.RELEASED
                t.result_artifact_id = new_id
                copy_res = Resource(kind="artifact", label=target, agency=res.agency)
                u.record(
                    entry_for(
                        actor,
                        AuditEvent.TRANSFER_RELEASED,
                        res,
                        transfer_id,
                        details={"artifact": new_id, "to": target.marking},
                    )
                )
                u.record(
                    entry_for(
                        actor,
                        AuditEvent.ARTIFACT_CREATED,
                        copy_res,
                        new_id,
                        details={"by": "guard", "transfer": t.id},
                    )
                )
            return _view(u, t, res.owner or "", actor.subject)
    except BaseException:
        if not refused:
            ctx.blobs.delete(target.marking, new_id)
        raise


def show(ctx: Context, actor: Actor, transfer_id: str) -> dict[str, Any]:
    with unit(ctx) as u:
        t, res = _load(u, actor, transfer_id)
        return _view(u, t, res.owner or "", actor.subject)


def list_visible(
    ctx: Context, actor: Actor, state: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """The newest ``limit`` transfers the session may read (see :func:`page`)."""
    return list(page(ctx, actor, state, Window(limit))["items"])


def page(ctx: Context, actor: Actor, state: str | None = None, window: Window = Window()) -> dict[str, Any]:
    """One page of the agency's transfers the session may read (at their source label), newest
    first, read only at the labels it dominates (:mod:`enclave.services.listing`)."""
    filters = [] if state is None else [Transfer.state == TransferState(state).value]
    sources = [Source(Transfer.source_label, [Transfer.agency_id == actor.agency_id], filters)]
    with unit(ctx) as u:
        found = listing.page(u, actor, "transfer", [Transfer.created_at, Transfer.id], sources, window)
        rows = u.session.execute(
            select(Transfer, User.name)
            .join(User, Transfer.requester_id == User.id)
            .where(Transfer.id.in_(found.ids))
        ).all()
        items = [
            _view(u, t, requester, actor.subject)
            for t, requester in found.ordered(rows, lambda r: str(r[0].id))
        ]
    return found.answer(items)
