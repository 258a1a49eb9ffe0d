"""Agencies (tenants) with quotas, their projects, and users with clearance and roles.

Who administers what is the policy gate's (:mod:`enclave.policy`, "administration"): an
agency admin its own agency's users and projects, an operator the whole deployment. Another
agency's users are invisible to an agency admin: every answer about them is the answer for a
name that does not exist. A clearance raise is a request that a second admin approves
(:func:`request_clearance`, :func:`approve_clearance`); nobody changes their own.

The lists page (issue 13: ``limit``, ``offset`` or ``cursor``; ``total`` and ``next_cursor``,
the name or id of a page's last row) through :mod:`enclave.services.listing`. Which rows an
admin sees is a clause of the query (:func:`administered_rows`), so a page, its total and its
cursor hold nothing of an agency the admin does not administer. These tables are small and
carry no label: unlike the labelled listings, they need no per-label index ranges.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, join, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from enclave.audit.events import AuditEvent
from enclave.errors import Conflict, Forbidden, InvalidInput, NotAuthenticated, NotFound
from enclave.labels import Label
from enclave.policy import Action, Resource, Role, administered_agency, decide, lowers_clearance
from enclave.services import listing
from enclave.services.auth import hash_password, password_ok
from enclave.services.context import Context
from enclave.services.listing import Window
from enclave.services.readable import Source
from enclave.services.unit import Actor, Unit, entry_for, unit
from enclave.store.models import Agency, ClearanceRequest, Project, User

NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
SYSTEM_AGENCY = "enclave"
ADMIN = Resource(kind="administration")  # deployment-wide: the operator's


def agency_resource(name: str) -> Resource:
    """An agency as administered: its own admins' and the operators'."""
    return Resource(kind="agency", agency=name)


def user_resource(
    user: User,
    agency: Agency,
    *,
    kind: str = "user",
    label: Label | None = None,
    roles: frozenset[Role] = frozenset(),
    requested_by: str | None = None,
) -> Resource:
    """A user as administered: its agency, name, the roles it holds plus ``roles`` (being
    given), and ``label``, what the action hands out (a clearance, a token's label)."""
    return Resource(
        kind=kind,
        label=label,
        agency=agency.name,
        owner=user.name,
        roles=frozenset(Role(r) for r in user.roles) | roles,
        requested_by=requested_by,
    )


def check_name(kind: str, name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidInput(f"{kind} name {name!r} must be 1-64 lower-case letters, digits, '.', '_' or '-'")
    return name


@dataclass(frozen=True)
class Quotas:
    gpu_hours: float | None = None
    kwh: float | None = None
    storage_bytes: int | None = None
    gateway_rpm: int | None = None  # model gateway: requests per minute
    gateway_tpm: int | None = None  # model gateway: tokens per minute
    gateway_token_budget: int | None = None  # model gateway: tokens per UTC day

    def __post_init__(self) -> None:
        for name in (
            "gpu_hours",
            "kwh",
            "storage_bytes",
            "gateway_rpm",
            "gateway_tpm",
            "gateway_token_budget",
        ):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidInput(f"quota {name} must not be negative")


def agency_by_name(session: Session, name: str) -> Agency:
    agency = session.execute(select(Agency).where(Agency.name == name)).scalar_one_or_none()
    if agency is None:
        raise NotFound(f"agency {name} not found")
    return agency


def user_by_name(session: Session, name: str) -> User:
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"user {name} not found")
    return user


def agency_view(a: Agency) -> dict[str, Any]:
    return {
        "name": a.name,
        "quotas": {
            "gpu_hours": a.quota_gpu_hours,
            "kwh": a.quota_kwh,
            "storage_bytes": a.quota_storage_bytes,
            "gateway_rpm": a.gateway_rpm,
            "gateway_tpm": a.gateway_tpm,
            "gateway_token_budget": a.gateway_token_budget,
        },
        "created_at": a.created_at.isoformat(),
    }


def user_view(user: User, agency: Agency) -> dict[str, Any]:
    return {
        "name": user.name,
        "agency": agency.name,
        "clearance": user.clearance,
        "roles": sorted(user.roles),
        "disabled": user.disabled,
        "has_password": user.password_hash is not None,
        "created_at": user.created_at.isoformat(),
    }


def administered_rows(actor: Actor, agency_id: Any) -> list[ColumnElement[bool]]:
    """The query's clause for rows (``agency_id``: their agency's id) of the agencies ``actor``
    administers (:func:`enclave.policy.administered_agency`): its own agency's, or, for an
    operator, every agency's (no clause)."""
    return [] if administered_agency(actor.subject) is None else [agency_id == actor.agency_id]


def _insert(session: Session, row: object, clash: str) -> None:
    """Add and flush ``row``; a clash with a unique name inserted concurrently is a Conflict.

    The existence checks before each insert see only committed rows, so two requests for one
    new name can both pass them; the database's unique constraint then refuses the second
    insert, which must read as the same 409 as a name that already existed."""
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(clash) from exc


# -- agencies ------------------------------------------------------------------------------
def create_agency(ctx: Context, actor: Actor | None, name: str, quotas: Quotas = Quotas()) -> dict[str, Any]:
    """``actor`` None is the server bootstrapping itself."""
    check_name("agency", name)
    with unit(ctx) as u:
        if actor is not None:
            u.require(actor, Action.ADMINISTER, ADMIN)
        if u.session.execute(select(Agency.id).where(Agency.name == name)).first():
            raise Conflict(f"agency {name} already exists")
        agency = Agency(
            name=name,
            quota_gpu_hours=quotas.gpu_hours,
            quota_kwh=quotas.kwh,
            quota_storage_bytes=quotas.storage_bytes,
            gateway_rpm=quotas.gateway_rpm,
            gateway_tpm=quotas.gateway_tpm,
            gateway_token_budget=quotas.gateway_token_budget,
            created_at=ctx.now(),
        )
        _insert(u.session, agency, f"agency {name} already exists")
        u.record(
            entry_for(
                actor, AuditEvent.AGENCY_CREATED, Resource(kind="agency"), name, details=quotas.__dict__
            )
        )
        return agency_view(agency)


def update_quotas(ctx: Context, actor: Actor, name: str, quotas: Quotas) -> dict[str, Any]:
    with unit(ctx) as u:
        u.require(actor, Action.ADMINISTER, ADMIN)
        agency = agency_by_name(u.session, name)
        agency.quota_gpu_hours, agency.quota_kwh = quotas.gpu_hours, quotas.kwh
        agency.quota_storage_bytes = quotas.storage_bytes
        agency.gateway_rpm, agency.gateway_tpm = quotas.gateway_rpm, quotas.gateway_tpm
        agency.gateway_token_budget = quotas.gateway_token_budget
        u.record(
            entry_for(
                actor, AuditEvent.AGENCY_UPDATED, Resource(kind="agency"), name, details=quotas.__dict__
            )
        )
        return agency_view(agency)


def list_agencies(ctx: Context, actor: Actor, window: Window = Window()) -> dict[str, Any]:
    """A page of the agencies (an operator's list), by name; the cursor is a name."""
    sources = [Source(None, administered_rows(actor, Agency.id), joined=Agency.__table__)]
    with unit(ctx) as u:
        u.require(actor, Action.ADMINISTER, ADMIN)
        found = listing.page_unlabelled(u, [Agency.name], sources, window)
        rows = u.session.execute(select(Agency).where(Agency.name.in_(found.ids))).scalars().all()
        return found.answer([agency_view(a) for a in found.ordered(rows, lambda a: a.name)])


def get_agency(ctx: Context, actor: Actor, name: str) -> dict[str, Any]:
    """Members see their own agency; operators any (to an agency admin another agency is missing)."""
    with unit(ctx) as u:
        if name != actor.subject.agency:
            u.require(actor, Action.ADMINISTER, agency_resource(name), name)
        return agency_view(agency_by_name(u.session, name))


# -- projects ------------------------------------------------------------------------------
def project_id_of(session: Session, agency_id: int, agency_name: str, project: str | None) -> int | None:
    """The id of a project of the acting agency (None for no project)."""
    if project is None:
        return None
    pid = session.execute(
        select(Project.id).where(Project.agency_id == agency_id, Project.name == project)
    ).scalar_one_or_none()
    if pid is None:
        raise InvalidInput(f"no project {project!r} in agency {agency_name}")
    return pid


def create_project(ctx: Context, actor: Actor, agency_name: str, name: str) -> dict[str, Any]:
    check_name("project", name)
    with unit(ctx) as u:
        u.require(actor, Action.ADMINISTER, agency_resource(agency_name), agency_name)
        agency = agency_by_name(u.session, agency_name)
        exists = u.session.execute(
            select(Project.id).where(Project.agency_id == agency.id, Project.name == name)
        )
        if exists.first():
            raise Conflict(f"project {name} already exists in {agency_name}")
        _insert(
            u.session,
            Project(agency_id=agency.id, name=name, created_at=ctx.now()),
            f"project {name} already exists in {agency_name}",
        )
        u.record(
            entry_for(actor, AuditEvent.PROJECT_CREATED, Resource(kind="project"), f"{agency_name}/{name}")
        )
        return {"agency": agency_name, "name": name}


def list_projects(ctx: Context, actor: Actor, agency_name: str, window: Window = Window()) -> dict[str, Any]:
    """A page of an agency's projects (its members' and its administrators'), by name; the
    cursor is a name."""
    with unit(ctx) as u:
        if agency_name != actor.subject.agency:
            u.require(actor, Action.ADMINISTER, agency_resource(agency_name), agency_name)
        agency = agency_by_name(u.session, agency_name)
        sources = [Source(None, [Project.agency_id == agency.id], joined=Project.__table__)]
        found = listing.page_unlabelled(u, [Project.name], sources, window)
        return found.answer([{"agency": agency_name, "name": name} for name in found.ids])


# -- users ---------------------------------------------------------------------------------
def _roles(values: list[str]) -> list[str]:
    try:
        return sorted({str(Role(v)) for v in values})
    except ValueError as exc:
        raise InvalidInput(f"unknown role; known roles: {', '.join(r.value for r in Role)}") from exc


def create_user(
    ctx: Context,
    actor: Actor | None,
    name: str,
    agency_name: str,
    clearance: str,
    roles: list[str],
    password: str | None = None,
) -> dict[str, Any]:
    check_name("user", name)
    label = ctx.scheme.parse(clearance)
    marking = label.marking
    role_list = _roles(roles or [str(Role.USER)])
    pw_hash = hash_password(password) if password is not None else None
    with unit(ctx) as u:
        if actor is not None:
            # The new user's agency must be the admin's own (else it is "not found", as a
            # missing one); a privileged role is an operator's to grant; nobody creates a
            # user cleared beyond their own clearance.
            new = Resource(
                kind="agency",
                label=label,
                agency=agency_name,
                owner=name,
                roles=frozenset(Role(r) for r in role_list),
            )
            u.require(actor, Action.MANAGE_USER, new, agency_name)
        agency = agency_by_name(u.session, agency_name)
        if u.session.execute(select(User.id).where(User.name == name)).first():
            raise Conflict(f"user {name} already exists")
        user = User(
            name=name,
            agency_id=agency.id,
            clearance=marking,
            roles=role_list,
            password_hash=pw_hash,
            disabled=False,
            created_at=ctx.now(),
        )
        _insert(u.session, user, f"user {name} already exists")
        u.record(
            entry_for(
                actor,
                AuditEvent.USER_CREATED,
                Resource(kind="user"),
                name,
                details={"agency": agency_name, "clearance": marking, "roles": role_list},
            )
        )
        return user_view(user, agency)


def _administered(
    u: Unit,
    actor: Actor,
    name: str,
    action: Action,
    *,
    roles: frozenset[Role] = frozenset(),
    label_of: Callable[[User], Label] | None = None,
) -> tuple[User, Agency]:
    """The user ``name``, if ``actor`` may do ``action`` on it. A non-admin is refused before
    the name is looked up (the same answer whoever is named); to an admin, a user of another
    agency is "not found", in the same words as a name that does not exist. ``roles``: those
    being given; ``label_of``: what the action hands out, given the user found."""
    u.require(actor, Action.ADMINISTER, Resource(kind="user", agency=actor.subject.agency))
    user = user_by_name(u.session, name)
    agency = u.session.get_one(Agency, user.agency_id)
    label = label_of(user) if label_of is not None else None
    u.require(actor, action, user_resource(user, agency, label=label, roles=roles), name)
    return user, agency


def update_user(
    ctx: Context,
    actor: Actor,
    name: str,
    clearance: str | None = None,
    roles: list[str] | None = None,
    disabled: bool | None = None,
) -> dict[str, Any]:
    """Roles and the disabled flag change at once; a clearance here only goes down (a raise is
    a request that a second admin approves: :func:`request_clearance`)."""
    new_label = ctx.scheme.parse(clearance) if clearance is not None else None
    role_list = _roles(roles) if roles is not None else None
    with unit(ctx) as u:
        if new_label is not None:
            user, agency, current = _clearance_target(u, actor, name, new_label)
            if not lowers_clearance(current, new_label):
                raise Forbidden(
                    "raising a clearance needs a second admin's approval: ask for it with "
                    f"POST /v1/users/{name}/clearance (enclave admin user clearance {name} LABEL)"
                )
            _lower(u, actor, user, current, new_label)
        if role_list is not None or disabled is not None or new_label is None:
            given = frozenset(Role(r) for r in role_list or [])
            user, agency = _administered(u, actor, name, Action.MANAGE_USER, roles=given)
            changes: dict[str, object] = {}
            if role_list is not None:
                user.roles = role_list
                changes["roles"] = role_list
            if disabled is not None:
                user.disabled = changes["disabled"] = disabled
            u.record(entry_for(actor, AuditEvent.USER_UPDATED, Resource(kind="user"), name, details=changes))
        return user_view(user, agency)


def list_users(ctx: Context, actor: Actor, window: Window = Window()) -> dict[str, Any]:
    """A page of the users ``actor`` administers (an operator: every user; an agency admin:
    its own agency's), by name; the cursor is a name."""
    sources = [Source(None, administered_rows(actor, User.agency_id), joined=User.__table__)]
    with unit(ctx) as u:
        u.require(actor, Action.ADMINISTER, Resource(kind="user", agency=actor.subject.agency))
        found = listing.page_unlabelled(u, [User.name], sources, window)
        rows = u.session.execute(
            select(User, Agency).join(Agency, User.agency_id == Agency.id).where(User.name.in_(found.ids))
        ).all()
        ordered = found.ordered(rows, lambda row: str(row[0].name))
        return found.answer([user_view(user, agency) for user, agency in ordered])


def get_user(ctx: Context, actor: Actor, name: str) -> dict[str, Any]:
    with unit(ctx) as u:
        if name != actor.subject.user:
            user, agency = _administered(u, actor, name, Action.ADMINISTER)
        else:
            user = user_by_name(u.session, name)
            agency = u.session.get_one(Agency, user.agency_id)
        return user_view(user, agency)


def set_password(
    ctx: Context, actor: Actor, name: str, new_password: str, current_password: str | None = None
) -> None:
    """A user sets their own by giving the current one. Anyone else's — whoever knows it logs
    in as that user — is set by an admin of the user's agency (an operator for a privileged
    user) whose clearance dominates the user's; an admin sets its own without the current one."""
    new_hash = hash_password(new_password)
    with unit(ctx) as u:
        user = user_by_name(u.session, name) if name == actor.subject.user else None
        if user is not None and not decide(
            actor.subject,
            Action.ISSUE_CREDENTIALS,
            user_resource(user, u.session.get_one(Agency, user.agency_id)),
        ):
            if user.password_hash is not None and not password_ok(user.password_hash, current_password or ""):
                raise NotAuthenticated("current password is wrong")
        else:
            user, _ = _administered(
                u, actor, name, Action.ISSUE_CREDENTIALS, label_of=lambda who: ctx.scheme.parse(who.clearance)
            )
        user.password_hash = new_hash
        u.record(entry_for(actor, AuditEvent.PASSWORD_SET, Resource(kind="user"), name))


# -- clearance changes -----------------------------------------------------------------------
class ClearanceState:
    PENDING = "pending"  # a raise, waiting for a second admin
    APPROVED = "approved"  # ... approved and applied
    REFUSED = "refused"  # ... refused, or withdrawn by its requester
    APPLIED = "applied"  # a lowering: applied at once


CLEARANCE_REQUEST = "clearance-request"


def clearance_view(row: ClearanceRequest, user: User) -> dict[str, Any]:
    return {
        "id": row.id,
        "user": user.name,
        "from": row.from_clearance,
        "to": row.to_clearance,
        "state": row.state,
        "requested_by": row.requested_by,
        "requested_at": row.requested_at.isoformat(),
        "decided_by": row.decided_by,
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
    }


def _clearance_target(u: Unit, actor: Actor, name: str, new: Label) -> tuple[User, Agency, Label]:
    """The user whose clearance ``actor`` asks to change to ``new`` (not its own; both the
    current and the new clearance within the actor's), and its current clearance."""
    found: dict[str, Label] = {}

    def span(user: User) -> Label:
        found["current"] = u.ctx.scheme.parse(user.clearance)
        return u.ctx.scheme.lub(found["current"], new)

    user, agency = _administered(u, actor, name, Action.CHANGE_CLEARANCE, label_of=span)
    return user, agency, found["current"]


def _clearance_row(
    u: Unit, actor: Actor, user: User, current: Label, new: Label, state: ClearanceState
) -> ClearanceRequest:
    """A clearance change on record: pending a second admin, or applied (decided) at once."""
    now = u.ctx.now()
    decided = state != ClearanceState.PENDING
    row = ClearanceRequest(
        id=str(uuid.uuid4()),
        user_id=user.id,
        from_clearance=current.marking,
        to_clearance=new.marking,
        state=state,
        requested_by=actor.subject.user,
        requested_at=now,
        decided_by=actor.subject.user if decided else None,
        decided_at=now if decided else None,
    )
    u.session.add(row)
    return row


def _lower(u: Unit, actor: Actor, user: User, current: Label, new: Label) -> ClearanceRequest:
    """Apply a lowering at once (see :func:`enclave.policy.lowers_clearance`), on record."""
    row = _clearance_row(u, actor, user, current, new, ClearanceState.APPLIED)
    user.clearance = new.marking
    u.record(
        entry_for(
            actor,
            AuditEvent.CLEARANCE_LOWERED,
            Resource(kind="user"),
            user.name,
            details={"request": row.id, "from": current.marking, "to": new.marking},
        )
    )
    return row


def request_clearance(ctx: Context, actor: Actor, name: str, clearance: str) -> dict[str, Any]:
    """Ask for ``name``'s clearance to become ``clearance``: a lowering applies at once; a
    raise (or a change adding a compartment) waits, ``pending``, for a second admin."""
    new = ctx.scheme.parse(clearance)
    with unit(ctx) as u:
        user, _agency, current = _clearance_target(u, actor, name, new)
        if lowers_clearance(current, new):
            return clearance_view(_lower(u, actor, user, current, new), user)
        row = _clearance_row(u, actor, user, current, new, ClearanceState.PENDING)
        u.record(
            entry_for(
                actor,
                AuditEvent.CLEARANCE_REQUESTED,
                Resource(kind="user"),
                name,
                details={"request": row.id, "from": current.marking, "to": new.marking},
            )
        )
        return clearance_view(row, user)


def _pending(u: Unit, actor: Actor, request_id: str, action: Action) -> tuple[ClearanceRequest, User]:
    """A pending request ``actor`` may decide with ``action``; of another agency, "not found"."""
    u.require(actor, Action.ADMINISTER, Resource(kind=CLEARANCE_REQUEST, agency=actor.subject.agency))
    row = u.session.get(ClearanceRequest, request_id, with_for_update=True)
    if row is None:
        raise NotFound(f"{CLEARANCE_REQUEST} {request_id} not found")
    user = u.session.get_one(User, row.user_id)
    agency = u.session.get_one(Agency, user.agency_id)
    span = u.ctx.scheme.lub(u.ctx.scheme.parse(row.from_clearance), u.ctx.scheme.parse(row.to_clearance))
    resource = user_resource(user, agency, kind=CLEARANCE_REQUEST, label=span, requested_by=row.requested_by)
    u.require(actor, action, resource, request_id)
    if row.state != ClearanceState.PENDING:
        raise Conflict(f"{CLEARANCE_REQUEST} {request_id} is {row.state}, not pending")
    return row, user


def approve_clearance(ctx: Context, actor: Actor, request_id: str) -> dict[str, Any]:
    """The second admin — of the user's agency or an operator, neither the requester nor the
    user, cleared for the new clearance — approves: the change applies now."""
    with unit(ctx) as u:
        row, user = _pending(u, actor, request_id, Action.APPROVE_CLEARANCE)
        if user.clearance != row.from_clearance:
            raise Conflict(
                f"{user.name}'s clearance changed since this request was made; ask for the change again"
            )
        row.state, row.decided_by, row.decided_at = ClearanceState.APPROVED, actor.subject.user, ctx.now()
        user.clearance = row.to_clearance
        u.record(
            entry_for(
                actor,
                AuditEvent.CLEARANCE_APPROVED,
                Resource(kind="user"),
                user.name,
                details={
                    "request": row.id,
                    "from": row.from_clearance,
                    "to": row.to_clearance,
                    "requested_by": row.requested_by,
                },
            )
        )
        return clearance_view(row, user)


def refuse_clearance(ctx: Context, actor: Actor, request_id: str) -> dict[str, Any]:
    """Any admin who could have asked for it refuses a pending request (its requester withdraws it)."""
    with unit(ctx) as u:
        row, user = _pending(u, actor, request_id, Action.CHANGE_CLEARANCE)
        row.state, row.decided_by, row.decided_at = ClearanceState.REFUSED, actor.subject.user, ctx.now()
        u.record(
            entry_for(
                actor,
                AuditEvent.CLEARANCE_REFUSED,
                Resource(kind="user"),
                user.name,
                details={"request": row.id, "from": row.from_clearance, "to": row.to_clearance},
            )
        )
        return clearance_view(row, user)


def list_clearance_requests(
    ctx: Context, actor: Actor, state: str | None = None, window: Window = Window()
) -> dict[str, Any]:
    """A page of the requests an admin may see: those of the users it administers (its own
    agency's; an operator's: every agency's), oldest first; the cursor is a request's id."""
    sources = [
        Source(
            None,
            administered_rows(actor, User.agency_id),
            [] if state is None else [ClearanceRequest.state == state],
            joined=join(ClearanceRequest, User, ClearanceRequest.user_id == User.id),
        )
    ]
    keys = [ClearanceRequest.requested_at, ClearanceRequest.id]
    with unit(ctx) as u:
        u.require(actor, Action.ADMINISTER, Resource(kind=CLEARANCE_REQUEST, agency=actor.subject.agency))
        found = listing.page_unlabelled(u, keys, sources, window)
        rows = u.session.execute(
            select(ClearanceRequest, User)
            .join(User, ClearanceRequest.user_id == User.id)
            .where(ClearanceRequest.id.in_(found.ids))
        ).all()
        ordered = found.ordered(rows, lambda row: str(row[0].id))
        return found.answer([clearance_view(request, user) for request, user in ordered])
