"""Authentication: passwords (Argon2id), login throttling, bearer tokens bound to one label.

Tokens are 256-bit random strings; only their SHA-256 is stored (a high-entropy secret
needs no slow hash) and lookups compare digests with ``hmac.compare_digest``. Passwords are
hashed with Argon2id, a memory-hard function. Failed logins are counted per user *name*,
whether or not the user exists, so the throttle cannot be used to probe for names.

Unauthenticated load stays cheap: password attempts are also bounded per client address
(in memory, before any database work), at most ``HASH_CONCURRENCY`` Argon2 computations run
at once (a request finding no free slot is answered 429 at once rather than holding a
worker thread), and failed bearer authentications are audited as one ``auth.failures``
record per source and minute with a count, written by :class:`AuthFailureRecorder`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from enclave.audit.events import AuditEvent, Outcome
from enclave.audit.log import Entry
from enclave.errors import Forbidden, InvalidInput, NotAuthenticated, NotFound, RateLimited
from enclave.labels import Label
from enclave.policy import Action, Resource, Role, Subject, may_hold_session
from enclave.services.context import LOGIN_LOCKOUT_S, LOGIN_MAX_FAILURES, LOGIN_WINDOW_S, Context
from enclave.services.throttle import Tallied, source_of
from enclave.services.unit import Actor, Unit, entry_for, unit
from enclave.store.models import Agency, LoginThrottle, Token, User

TOKEN_PREFIX = "enc_"
MIN_PASSWORD_CHARS = 12
# Argon2 computations at once in this process: each takes 64 MiB and four lanes of CPU for
# ~50 ms (far more on a loaded machine), so about one per four cores.
HASH_CONCURRENCY = max(1, (os.cpu_count() or 1) // 4)
log = logging.getLogger("enclave.auth")
_hasher = PasswordHasher()  # argon2id, library defaults (64 MiB, t=3, p=4)
# A fixed hash to verify against when the user does not exist, so timing reveals nothing.
_DUMMY_HASH = _hasher.hash("not-a-real-password-" + secrets.token_hex(8))
_hash_slots = threading.BoundedSemaphore(HASH_CONCURRENCY)


@contextmanager
def _hash_slot() -> Iterator[None]:
    """One of the HASH_CONCURRENCY slots, or 429 at once: a caller never waits for one,
    so a flood of logins cannot hold the worker threads authenticated requests need."""
    if not _hash_slots.acquire(blocking=False):
        raise RateLimited("too many password checks at once; retry in a moment", retry_after_s=1)
    try:
        yield
    finally:
        _hash_slots.release()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    with _hash_slot():
        return _hasher.hash(password)


def password_ok(stored: str | None, password: str) -> bool:
    with _hash_slot():
        try:
            return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def subject_for(ctx: Context, user: User, agency: Agency, session_label: Label) -> Subject:
    return Subject(
        user=user.name,
        agency=agency.name,
        clearance=ctx.scheme.parse(user.clearance),
        session=session_label,
        roles=frozenset(Role(r) for r in user.roles),
    )


def issue_token(ctx: Context, session: Session, user: User, label: Label, ttl_s: int) -> tuple[Token, str]:
    """Create a token row; returns it and the secret (shown once, never stored)."""
    if ttl_s <= 0:
        raise InvalidInput("token lifetime must be positive")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = ctx.now()
    row = Token(
        id=str(uuid.uuid4()),
        user_id=user.id,
        token_hash=token_digest(secret),
        label=label.marking,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    session.add(row)
    return row, secret


def _user_and_agency(session: Session, name: str) -> tuple[User, Agency] | None:
    row = session.execute(
        select(User, Agency).join(Agency, User.agency_id == Agency.id).where(User.name == name)
    ).first()
    return (row[0], row[1]) if row else None


def mint_token(
    ctx: Context, actor: Actor, user_name: str, marking: str, ttl_s: int | None = None
) -> tuple[Token, str]:
    """An admin mints a token for ``user_name`` at ``marking`` (at or below their clearance).

    Whoever holds the token acts as that user, so the policy gate's ``issue_credentials``
    rules apply: an admin of the user's own agency (an operator for a privileged user), at a
    label within the admin's clearance. A non-admin is refused whoever is named; to an agency
    admin another agency's user is missing, in the same words as a name nobody has."""
    label = ctx.scheme.parse(marking)
    missing = InvalidInput(f"no user named {user_name!r}")
    try:
        with unit(ctx) as u:
            u.require(actor, Action.ADMINISTER, Resource(kind="user", agency=actor.subject.agency))
            found = _user_and_agency(u.session, user_name)
            if found is None:
                raise missing
            user, agency = found
            target = Resource(
                kind="user",
                label=label,
                agency=agency.name,
                owner=user.name,
                roles=frozenset(Role(r) for r in user.roles),
            )
            u.require(actor, Action.ISSUE_CREDENTIALS, target, user_name)
            return _mint(ctx, u, actor, user, label, ttl_s)
    except NotFound:  # the user is of another agency: answered as one that does not exist
        raise missing from None


def _mint(
    ctx: Context, u: Unit, actor: Actor, user: User, label: Label, ttl_s: int | None
) -> tuple[Token, str]:
    if user.disabled:
        raise Forbidden(f"user {user.name!r} is disabled")
    if not may_hold_session(ctx.scheme.parse(user.clearance), label):
        raise Forbidden(f"label {label} is above {user.name}'s clearance")
    row, secret = issue_token(ctx, u.session, user, label, ttl_s or ctx.settings.token_ttl_s)
    u.record(
        entry_for(
            actor,
            AuditEvent.TOKEN_MINTED,
            Resource(kind="token", label=label),
            row.id,
            details={"for_user": user.name, "expires_at": row.expires_at.isoformat()},
        )
    )
    return row, secret


def login(ctx: Context, user_name: str, password: str, marking: str, client: str = "") -> tuple[Token, str]:
    """Password login for one session label; throttled per client address, then per user name."""
    label = ctx.scheme.parse(marking)
    now = ctx.now()
    source = source_of(client)
    wait = ctx.login_throttle.begin(source, time.monotonic())
    if wait:
        # Not one record per refused try (that would flood the log): counted per minute.
        ctx.auth_failures.note(source, "login_throttled", now)
        raise RateLimited("too many failed logins from this address; try again later", retry_after_s=wait)
    with unit(ctx) as u:
        throttle = u.session.get(LoginThrottle, user_name, with_for_update=True)
        if throttle and throttle.locked_until and throttle.locked_until > now:
            retry = int((throttle.locked_until - now).total_seconds()) + 1
            raise RateLimited("too many failed logins; try again later", retry_after_s=retry)
        found = _user_and_agency(u.session, user_name)
        user_ok = found is not None and not found[0].disabled
        if not (password_ok(found[0].password_hash if found else None, password) and user_ok):
            _count_failure(u.session, throttle, user_name, now)
            u.record(
                entry_for(
                    None,
                    AuditEvent.LOGIN_FAILED,
                    outcome=Outcome.DENY,
                    details={"user": user_name, "client": client},
                )
            )
            failed = True
        else:
            failed = False
    if failed or found is None:  # committed above: the failure count and its record persist
        raise NotAuthenticated("wrong user name or password")
    user, agency = found
    if not may_hold_session(ctx.scheme.parse(user.clearance), label):
        with unit(ctx) as u:  # the refusal is a security decision: audited, then raised
            u.record(
                entry_for(
                    None,
                    AuditEvent.LOGIN_FAILED,
                    outcome=Outcome.DENY,
                    details={"user": user_name, "client": client, "reason": "label above clearance"},
                )
            )
        raise Forbidden(f"label {label} is above your clearance")
    ctx.login_throttle.succeeded(source)
    with unit(ctx) as u:
        throttle = u.session.get(LoginThrottle, user_name)
        if throttle is not None:
            u.session.delete(throttle)
        row, secret = issue_token(ctx, u.session, user, label, ctx.settings.token_ttl_s)
        subj = subject_for(ctx, user, agency, label)
        me = Actor(subj, user.id, agency.id, row.id)
        u.record(
            entry_for(
                me,
                AuditEvent.LOGIN_SUCCEEDED,
                Resource(kind="token", label=label),
                row.id,
                details={"client": client},
            )
        )
    return row, secret


def _count_failure(session: Session, throttle: LoginThrottle | None, user_name: str, now: datetime) -> None:
    if throttle is None:
        throttle = LoginThrottle(user_name=user_name, failures=0, window_start=now)
        session.add(throttle)
    if now - throttle.window_start > timedelta(seconds=LOGIN_WINDOW_S):
        throttle.failures, throttle.window_start = 0, now
    throttle.failures += 1
    if throttle.failures >= LOGIN_MAX_FAILURES:
        throttle.locked_until = now + timedelta(seconds=LOGIN_LOCKOUT_S)
        throttle.failures, throttle.window_start = 0, now


def authenticate(ctx: Context, token: str) -> Actor:
    """Resolve a bearer token to an actor; any problem is the same 401."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        raise NotAuthenticated("invalid or expired token")
    digest = token_digest(token)
    with ctx.read_sessions() as session:
        row = session.execute(
            select(Token, User, Agency)
            .join(User, Token.user_id == User.id)
            .join(Agency, User.agency_id == Agency.id)
            .where(Token.token_hash == digest)
        ).first()
        if row is None:
            raise NotAuthenticated("invalid or expired token")
        tok, user, agency = row
        if not hmac.compare_digest(tok.token_hash, digest):
            raise NotAuthenticated("invalid or expired token")
        if tok.revoked_at is not None or tok.expires_at <= ctx.now() or user.disabled:
            raise NotAuthenticated("invalid or expired token")
        return Actor(subject_for(ctx, user, agency, ctx.scheme.parse(tok.label)), user.id, agency.id, tok.id)


def revoke_token(ctx: Context, actor: Actor, token_id: str) -> None:
    """Admins revoke any token; users revoke their own."""
    with unit(ctx) as u:
        tok = u.session.get(Token, token_id)
        # Authorise before saying whether the id exists, so that a non-admin gets the same
        # answer for someone else's token and for one that does not exist; to an agency admin,
        # another agency's token is missing, in the same words.
        if tok is None or tok.user_id != actor.user_id:
            u.require(actor, Action.ADMINISTER, Resource(kind="token", agency=actor.subject.agency))
        if tok is not None and tok.user_id != actor.user_id:
            owner_agency = u.session.execute(
                select(Agency.name).join(User, User.agency_id == Agency.id).where(User.id == tok.user_id)
            ).scalar_one()
            u.require(actor, Action.ADMINISTER, Resource(kind="token", agency=owner_agency), token_id)
        if tok is None:
            raise NotFound(f"token {token_id} not found")
        if tok.revoked_at is None:
            tok.revoked_at = ctx.now()
            u.record(entry_for(actor, AuditEvent.TOKEN_REVOKED, Resource(kind="token"), token_id))


# -- failed bearer authentication ---------------------------------------------------------------
def note_failed_authentication(ctx: Context, client: str | None, kind: str = "bearer") -> None:
    """Count one failed authentication of ``client``: recorded with the others of its source
    and minute by :func:`record_auth_failures`."""
    ctx.auth_failures.note(source_of(client), kind, ctx.now())


def record_auth_failures(ctx: Context, everything: bool = False) -> int:
    """Write one ``auth.failures`` record per (source, minute, kind) of the minutes that have
    ended (every minute with ``everything``), in one transaction; returns how many."""
    items = ctx.auth_failures.drain(ctx.now(), everything)
    if not items:
        return 0
    try:
        with unit(ctx) as u:
            for t in items:
                u.record(_failures_entry(t))
    except Exception:
        ctx.auth_failures.put_back(items)  # tried again at the next minute
        raise
    return len(items)


def _failures_entry(t: Tallied) -> Entry:
    return entry_for(
        None,
        AuditEvent.AUTH_FAILURES,
        outcome=Outcome.DENY,
        details={"source": t.source, "minute": t.minute, "kind": t.kind, "count": t.count},
    )


class AuthFailureRecorder:
    """A thread writing the failed-authentication counts of each minute once it has ended
    (and everything left when stopped)."""

    AFTER_MINUTE_S = 1.0  # how long after a minute ends its counts are written

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="enclave-auth-failures", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        record_auth_failures(self.ctx, everything=True)

    def _run(self) -> None:
        while not self._stop.wait(60.0 - time.time() % 60.0 + self.AFTER_MINUTE_S):
            try:
                record_auth_failures(self.ctx)
            except Exception:
                log.exception("could not record failed authentications")
