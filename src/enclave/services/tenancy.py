"""Agencies (tenants) with quotas, their projects, and users with clearance and roles."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from enclave.audit.events import AuditEvent
from enclave.errors import Conflict, InvalidInput, NotAuthenticated, NotFound
from enclave.policy import Action, Resource, Role
from enclave.services.auth import hash_password, password_ok
from enclave.services.context import Context
from enclave.services.unit import Actor, entry_for, unit
from enclave.store.models import Agency, Project, User

NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
SYSTEM_AGENCY = "enclave"
ADMIN = Resource(kind="administration")


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


def list_agencies(ctx: Context, actor: Actor) -> list[dict[str, Any]]:
    with unit(ctx) as u:
        u.require(actor, Action.ADMINISTER, ADMIN)
        return [agency_view(a) for a in u.session.execute(select(Agency).order_by(Agency.name)).scalars()]


def get_agency(ctx: Context, actor: Actor, name: str) -> dict[str, Any]:
    """Members see their own agency; admins see any."""
    with unit(ctx) as u:
        if name != actor.subject.agency:
            u.require(actor, Action.ADMINISTER, ADMIN)
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
        u.require(actor, Action.ADMINISTER, ADMIN)
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


def list_projects(ctx: Context, actor: Actor, agency_name: str) -> list[dict[str, Any]]:
    with unit(ctx) as u:
        if agency_name != actor.subject.agency:
            u.require(actor, Action.ADMINISTER, ADMIN)
        agency = agency_by_name(u.session, agency_name)
        rows = u.session.execute(select(Project).where(Project.agency_id == agency.id).order_by(Project.name))
        return [{"agency": agency_name, "name": p.name} for p in rows.scalars()]


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
    marking = ctx.scheme.parse(clearance).marking
    role_list = _roles(roles or [str(Role.USER)])
    pw_hash = hash_password(password) if password is not None else None
    with unit(ctx) as u:
        if actor is not None:
            u.require(actor, Action.ADMINISTER, ADMIN)
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


def update_user(
    ctx: Context,
    actor: Actor,
    name: str,
    clearance: str | None = None,
    roles: list[str] | None = None,
    disabled: bool | None = None,
) -> dict[str, Any]:
    marking = ctx.scheme.parse(clearance).marking if clearance is not None else None
    role_list = _roles(roles) if roles is not None else None
    with unit(ctx) as u:
        u.require(actor, Action.ADMINISTER, ADMIN)
        user = user_by_name(u.session, name)
        changes: dict[str, object] = {}
        if marking is not None:
            user.clearance = changes["clearance"] = marking
        if role_list is not None:
            user.roles = role_list
            changes["roles"] = role_list
        if disabled is not None:
            user.disabled = changes["disabled"] = disabled
        u.record(entry_for(actor, AuditEvent.USER_UPDATED, Resource(kind="user"), name, details=changes))
        return user_view(user, u.session.get_one(Agency, user.agency_id))


def list_users(ctx: Context, actor: Actor) -> list[dict[str, Any]]:
    with unit(ctx) as u:
        u.require(actor, Action.ADMINISTER, ADMIN)
        rows = u.session.execute(
            select(User, Agency).join(Agency, User.agency_id == Agency.id).order_by(User.name)
        )
        return [user_view(user, agency) for user, agency in rows]


def get_user(ctx: Context, actor: Actor, name: str) -> dict[str, Any]:
    with unit(ctx) as u:
        if name != actor.subject.user:
            u.require(actor, Action.ADMINISTER, ADMIN)
        user = user_by_name(u.session, name)
        return user_view(user, u.session.get_one(Agency, user.agency_id))


def set_password(
    ctx: Context, actor: Actor, name: str, new_password: str, current_password: str | None = None
) -> None:
    """Admins set anyone's password; a user sets their own by giving the current one."""
    new_hash = hash_password(new_password)
    with unit(ctx) as u:
        user = user_by_name(u.session, name) if name == actor.subject.user else None
        if user is None or Role.ADMIN in actor.subject.roles:
            u.require(actor, Action.ADMINISTER, ADMIN)
            user = user_by_name(u.session, name)
        elif user.password_hash is not None and not password_ok(user.password_hash, current_password or ""):
            raise NotAuthenticated("current password is wrong")
        user.password_hash = new_hash
        u.record(entry_for(actor, AuditEvent.PASSWORD_SET, Resource(kind="user"), name))
