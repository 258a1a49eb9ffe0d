"""First start: the system agency, the bootstrap admin and its token file."""

from __future__ import annotations

import os

from sqlalchemy import select

from enclave.audit.events import AuditEvent
from enclave.policy import Role
from enclave.services import tenancy
from enclave.services.auth import issue_token
from enclave.services.context import ADMIN_TOKEN_TTL_S, Context
from enclave.services.unit import entry_for, unit
from enclave.store.models import User

ADMIN_USER = "admin"


def bootstrap(ctx: Context) -> bool:
    """Create the admin on an empty store and write ``$ENCLAVE_HOME/admin.token``.

    Returns True when it bootstrapped. The admin's clearance is the top label (it manages
    every level), its token the bottom label: administration needs no classified reads, so
    the standing credential on disk can read nothing classified.
    """
    with ctx.sessions() as session:
        has_users = session.execute(select(User.id).limit(1)).first() is not None
        session.rollback()
    if has_users:
        return False
    tenancy.create_agency(ctx, None, tenancy.SYSTEM_AGENCY)
    roles = [str(Role.ADMIN), str(Role.AUDITOR), str(Role.OPERATOR)]
    tenancy.create_user(ctx, None, ADMIN_USER, tenancy.SYSTEM_AGENCY, ctx.scheme.top.marking, roles)
    with unit(ctx) as u:
        admin = tenancy.user_by_name(u.session, ADMIN_USER)
        _row, secret = issue_token(ctx, u.session, admin, ctx.scheme.bottom, ADMIN_TOKEN_TTL_S)
        u.record(
            entry_for(
                None, AuditEvent.SERVER_BOOTSTRAPPED, details={"admin": ADMIN_USER, "fleet": ctx.fleet.name}
            )
        )
    path = ctx.settings.home / "admin.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return True
