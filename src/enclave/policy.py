"""The policy gate: the one function that answers every access question.

Pure: values in, a :class:`Decision` out. Services call :func:`decide` (or :func:`require`)
before every read or write of a labelled object and before every privileged action; an API
route never decides access itself.

The model is Bell–LaPadula over :mod:`enclave.labels` plus tenancy:

* a session label must be dominated by the user's clearance (checked on every decision, so
  lowering a clearance takes effect on tokens already minted);
* *simple security*: reading needs the session label to dominate the object's label;
* *star property*: creating or changing an object happens at exactly the session label
  (no write-down — and, to keep objects at the level they were made, no write-up);
* tenancy is a second, independent check: an agency sees only its own objects and those
  explicitly shared with it;
* an object the session may not read is *invisible*: the decision says so and callers answer
  404, leave it out of listings and counts, and never name it in an error.

Rules are small, named and ordered; the first that denies wins. An action with no rule set
(or an empty one) is denied (deny by default). Rules that make an object invisible come
before rules that answer "forbidden", so a refusal never confirms that an unreadable object
exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from enclave.errors import Forbidden, NotFound
from enclave.labels import Label, LabelScheme


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    USER = "user"
    RELEASE_AUTHORITY = "release-authority"
    AUDITOR = "auditor"


class Action(StrEnum):
    READ = "read"  # see an object or its content
    CREATE = "create"  # make a new object (at the session label)
    WRITE = "write"  # change an existing object
    DELETE = "delete"
    SHARE = "share"  # share an object with another agency
    REQUEST_TRANSFER = "request_transfer"  # ask the guard to copy an object to another label
    REVIEW_TRANSFER = "review_transfer"  # approve or refuse a downgrade
    ADMINISTER = "administer"  # agencies, projects, quotas, users: read and manage
    MANAGE_USER = "manage_user"  # create a user, change its roles, disable or enable it
    ISSUE_CREDENTIALS = "issue_credentials"  # a token or a password for a user
    CHANGE_CLEARANCE = "change_clearance"  # ask for (or, lowering, make) a clearance change
    APPROVE_CLEARANCE = "approve_clearance"  # the second admin's approval of a raise
    READ_AUDIT = "read_audit"  # list or verify audit records
    MINT_TOKEN = "mint_token"  # a token for oneself at the session label
    USE_URGENT_QOS = "use_urgent_qos"  # submit work that may preempt others
    INVOKE = "invoke"  # call a model endpoint through the gateway
    READ_METRICS = "read_metrics"  # the deployment's /metrics page (operators)


@dataclass(frozen=True)
class Subject:
    """Who is acting: a user, their agency, clearance and roles, and the session label."""

    user: str
    agency: str
    clearance: Label
    session: Label
    roles: frozenset[Role] = frozenset()


@dataclass(frozen=True)
class Resource:
    """What is acted on. ``label`` is None for unlabelled system objects (agencies, users)."""

    kind: str
    label: Label | None = None
    agency: str | None = None
    shared_with: frozenset[str] = frozenset()
    owner: str | None = None
    accreditation: Label | None = None  # where the object runs: an endpoint's region
    # Administration of a user: the roles it holds or is being given, and who asked for a
    # clearance change (the second admin must be someone else).
    roles: frozenset[Role] = frozenset()
    requested_by: str | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    visible: bool
    rule: str
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


ALLOW = Decision(True, True, "allow", "allowed")
Rule = Callable[[Subject, Action, Resource], Decision | None]


def _deny(rule: str, reason: str, *, visible: bool) -> Decision:
    return Decision(False, visible, rule, reason)


# -- rules -------------------------------------------------------------------------------
def session_within_clearance(s: Subject, a: Action, r: Resource) -> Decision | None:
    if not s.clearance.dominates(s.session):
        return _deny("session_within_clearance", "session label exceeds the user's clearance", visible=False)
    return None


# Auditors and operators are deployment-wide; an agency admin reads its own agency's records.
_CROSS_AGENCY_AUDIT = frozenset({Role.AUDITOR, Role.OPERATOR})


def tenancy(s: Subject, a: Action, r: Resource) -> Decision | None:
    """An agency sees its own objects and those shared with it (auditors read audit records
    across agencies; to anyone else another agency's audit record is invisible)."""
    if r.agency is None or (a is Action.READ_AUDIT and s.roles & _CROSS_AGENCY_AUDIT):
        return None
    if r.agency == s.agency or s.agency in r.shared_with:
        return None
    return _deny("tenancy", "object belongs to another agency", visible=False)


def simple_security(s: Subject, a: Action, r: Resource) -> Decision | None:
    """No read up: the session must dominate the label of anything it sees."""
    if r.label is None or s.session.dominates(r.label):
        return None
    return _deny("simple_security", "session label does not dominate the object label", visible=False)


def star_property(s: Subject, a: Action, r: Resource) -> Decision | None:
    """Writes happen at exactly the session label: no write-down, no write-up."""
    if r.label is None or r.label == s.session:
        return None
    # Reached only after simple_security passed for existing objects, so the object is
    # visible and the answer is "forbidden"; a create above the session is invisible-safe
    # to report because the caller chose the label.
    return _deny(
        "star_property",
        f"writes happen at the session label {s.session}; to work at {r.label}, use a session at"
        f" that label (`enclave login --label '{r.label}'`, or a token minted for it)",
        visible=True,
    )


def owning_agency(s: Subject, a: Action, r: Resource) -> Decision | None:
    """Only the owning agency changes, deletes or shares an object, not agencies it is shared with."""
    if r.agency is None or r.agency == s.agency:
        return None
    return _deny("owning_agency", "only the owning agency may do this", visible=True)


def new_object_labelled(s: Subject, a: Action, r: Resource) -> Decision | None:
    """Every object a session creates carries a label (mandatory access control on every
    object); unlabelled system objects such as agencies and users are made by ADMINISTER."""
    if r.label is None:
        return _deny("new_object_labelled", "a new object needs a label", visible=True)
    return None


def _needs_role(*roles: Role) -> Rule:
    def rule(s: Subject, a: Action, r: Resource) -> Decision | None:
        if s.roles & set(roles):
            return None
        names = " or ".join(str(role) for role in roles)
        return _deny("role", f"needs the {names} role", visible=True)

    rule.__name__ = f"needs_role_{'_'.join(roles)}"
    return rule


def reviewer_clearance(s: Subject, a: Action, r: Resource) -> Decision | None:
    """A release authority's clearance must dominate the label being released."""
    if r.label is not None and not s.clearance.dominates(r.label):
        return _deny(
            "reviewer_clearance", "reviewer clearance does not dominate the source label", visible=True
        )
    return None


def not_own_request(s: Subject, a: Action, r: Resource) -> Decision | None:
    """Two-person rule: a requester never reviews their own transfer."""
    if r.owner is not None and r.owner == s.user:
        return _deny("two_person", "a requester cannot review their own transfer", visible=True)
    return None


def call_at_endpoint_label(s: Subject, a: Action, r: Resource) -> Decision | None:
    """A call reads the endpoint (its answers) *and* writes to it (the prompt goes to a process
    chosen at the endpoint's label): both BLP rules at once, so the labels must be equal. A
    SECRET prompt never reaches a replica, or an upstream URL, chosen at UNCLASSIFIED."""
    if r.label is None or r.label == s.session:
        return None
    # Reached only after simple_security: the endpoint is readable, so saying why is safe.
    return _deny(
        "call_at_endpoint_label",
        f"an endpoint is called at its own label: use a session at {r.label}",
        visible=True,
    )


def region_accredited_for_session(s: Subject, a: Action, r: Resource) -> Decision | None:
    """A call carries data at the session label into the serving region: that region's
    accreditation must dominate the session label, not only the model's."""
    if r.accreditation is not None and not r.accreditation.dominates(s.session):
        return _deny(
            "region_accredited_for_session",
            "the endpoint's region is not accredited for the session label",
            visible=True,
        )
    return None


# -- administration ----------------------------------------------------------------------
# Two scopes. An agency admin (the admin role) administers its own agency: its users, their
# tokens, passwords and clearances, its projects. The operator role is deployment-wide:
# agencies and their quotas, worker credentials of regions, every agency's users. Roles that
# act beyond one's own data — operator, auditor (reads every agency's audit), admin and
# release-authority (the second person of the two-person rules) — are granted, and their
# holders' credentials issued, only by an operator: otherwise an agency admin could create,
# or borrow, its own second person.
PRIVILEGED_ROLES = frozenset({Role.OPERATOR, Role.AUDITOR, Role.ADMIN, Role.RELEASE_AUTHORITY})


def administered_agency(s: Subject) -> str | None:
    """The one agency whose users, projects and requests ``s`` administers (its own), or None
    for every agency (an operator). :func:`admin_scope` decides by it, and the administrative
    listings filter their query by it, so a page never holds, nor counts, what it refuses."""
    return None if Role.OPERATOR in s.roles else s.agency


def admin_scope(s: Subject, a: Action, r: Resource) -> Decision | None:
    """An operator administers the whole deployment, an agency admin its own agency only.
    Another agency's users, tokens and requests are invisible to an agency admin (answered as
    missing); deployment-wide objects (``agency`` None: agencies, quotas, worker credentials)
    are the operator's, and asking for them reveals nothing, so the refusal is open."""
    scope = administered_agency(s)
    if scope is None:
        return None
    if r.agency is None:
        return _deny("operator_only", "needs the operator role", visible=True)
    if r.agency != scope:
        return _deny("admin_scope", "object belongs to another agency", visible=False)
    return None


def privileged_roles_by_operators(s: Subject, a: Action, r: Resource) -> Decision | None:
    """Only an operator grants a privileged role or manages a user who holds one."""
    if r.roles & PRIVILEGED_ROLES and Role.OPERATOR not in s.roles:
        return _deny(
            "privileged_roles",
            "only an operator manages the admin, operator, auditor and release-authority roles",
            visible=True,
        )
    return None


def no_impersonation(s: Subject, a: Action, r: Resource) -> Decision | None:
    """A token or a password for a privileged user other than oneself is an operator's to
    issue: whoever holds it acts as that user (an agency admin holding another admin's token
    would be its own second approver)."""
    if r.owner is not None and r.owner == s.user:
        return None
    return privileged_roles_by_operators(s, a, r)


def grants_within_clearance(s: Subject, a: Action, r: Resource) -> Decision | None:
    """Nobody hands out access they do not hold: a clearance granted, a token's label, or the
    clearance of the user whose credentials are issued must be within the admin's clearance."""
    if r.label is not None and not s.clearance.dominates(r.label):
        return _deny(
            "grants_within_clearance", "this is beyond the administrator's own clearance", visible=True
        )
    return None


def not_own_clearance(s: Subject, a: Action, r: Resource) -> Decision | None:
    """Nobody changes (or approves a change of) their own clearance; a change names its user."""
    if r.owner is None or r.owner == s.user:
        return _deny("own_clearance", "nobody changes their own clearance", visible=True)
    return None


def second_admin(s: Subject, a: Action, r: Resource) -> Decision | None:
    """Two-person rule for a raise: the approver is not the admin who asked for it."""
    if r.requested_by is None or r.requested_by == s.user:
        return _deny(
            "two_person", "a clearance change is approved by an admin other than its requester", visible=True
        )
    return None


# A non-admin is refused before the scope is looked at: that answer is the same whatever the
# target, so it confirms nothing about objects of other agencies.
_ADMIN_RULES: tuple[Rule, ...] = (
    session_within_clearance,
    _needs_role(Role.ADMIN, Role.OPERATOR),
    admin_scope,
)

RULES: dict[Action, tuple[Rule, ...]] = {
    Action.READ: (session_within_clearance, tenancy, simple_security),
    Action.CREATE: (session_within_clearance, tenancy, owning_agency, new_object_labelled, star_property),
    Action.WRITE: (session_within_clearance, tenancy, simple_security, owning_agency, star_property),
    Action.DELETE: (session_within_clearance, tenancy, simple_security, owning_agency, star_property),
    Action.SHARE: (session_within_clearance, tenancy, simple_security, owning_agency, star_property),
    Action.REQUEST_TRANSFER: (session_within_clearance, tenancy, simple_security, owning_agency),
    Action.REVIEW_TRANSFER: (
        session_within_clearance,
        tenancy,
        simple_security,
        _needs_role(Role.RELEASE_AUTHORITY),
        reviewer_clearance,
        not_own_request,
    ),
    Action.ADMINISTER: _ADMIN_RULES,
    Action.MANAGE_USER: (*_ADMIN_RULES, privileged_roles_by_operators, grants_within_clearance),
    Action.ISSUE_CREDENTIALS: (*_ADMIN_RULES, no_impersonation, grants_within_clearance),
    Action.CHANGE_CLEARANCE: (*_ADMIN_RULES, not_own_clearance, grants_within_clearance),
    Action.APPROVE_CLEARANCE: (*_ADMIN_RULES, not_own_clearance, second_admin, grants_within_clearance),
    Action.READ_AUDIT: (
        session_within_clearance,
        tenancy,
        simple_security,
        _needs_role(Role.AUDITOR, Role.ADMIN),
    ),
    Action.MINT_TOKEN: (session_within_clearance,),
    Action.USE_URGENT_QOS: (session_within_clearance, _needs_role(Role.OPERATOR, Role.ADMIN)),
    Action.INVOKE: (
        session_within_clearance,
        tenancy,
        simple_security,
        call_at_endpoint_label,
        region_accredited_for_session,
    ),
    Action.READ_METRICS: (session_within_clearance, _needs_role(Role.OPERATOR)),
}


def decide(subject: Subject, action: Action, resource: Resource) -> Decision:
    """Answer one access question. Deny by default; the first denying rule wins."""
    rules = RULES.get(action)
    if not rules:
        return _deny("default_deny", f"no policy for action {action}", visible=False)
    for rule in rules:
        verdict = rule(subject, action, resource)
        if verdict is not None:
            return verdict
    return ALLOW


def refusal(decision: Decision, kind: str, ref: str = "") -> NotFound | Forbidden:
    """The one way a denial reaches a caller: an invisible object is *missing* — the very
    words of a miss (``<kind> <ref> not found``), so the two cannot be told apart — and a
    visible one is forbidden, with the rule's reason."""
    if decision.visible:
        return Forbidden(decision.reason)
    return NotFound(f"{kind} {ref} not found".replace("  ", " "))


def require(subject: Subject, action: Action, resource: Resource, ref: str = "") -> Decision:
    """Like :func:`decide` but raises the :func:`refusal` of a denial."""
    decision = decide(subject, action, resource)
    if decision.allowed:
        return decision
    raise refusal(decision, resource.kind, ref)


def visible(subject: Subject, resources: Iterable[Resource]) -> list[Resource]:
    """The resources the subject may read, in order (for listings and counts)."""
    return [r for r in resources if decide(subject, Action.READ, r).allowed]


def may_hold_session(clearance: Label, session: Label) -> bool:
    """A token may be minted for ``session`` only at or below the user's clearance."""
    return clearance.dominates(session)


def may_place(label: Label, accreditation: Label) -> bool:
    """A labelled object may live or run in a region only if the accreditation dominates it."""
    return accreditation.dominates(label)


def worker_decision(
    credential_region: str, region: str, accreditation: Label | None = None, label: Label | None = None
) -> Decision:
    """May a region worker, holding a credential for ``credential_region``, act for ``region``
    (and, with ``label``, be handed work at that label)? A worker acts only for the region its
    credential names, whatever it claims, and only receives work the region is accredited for.
    Region names are public (the fleet file), so acting for another region is refused
    openly; a job outside what the worker may run is invisible to it."""
    if credential_region != region:
        return _deny(
            "worker_own_region", f"this worker credential is for region {credential_region}", visible=True
        )
    if label is not None and accreditation is not None and not may_place(label, accreditation):
        return _deny(
            "worker_region_accredited", "the region is not accredited for the work's label", visible=False
        )
    return ALLOW


def worker_name_decision(bound: str | None, claimed: str, taken: bool = False) -> Decision:
    """May a credential act as the worker named ``claimed``? A credential is one worker's: the
    name it was issued for, or the first name it synced as (bound then) unless another live
    credential of the region is ``taken`` under that name. Refusals are open: the worker
    knows its own name, and what matters is that a second credential of the region cannot
    pass for the worker holding a job."""
    if bound is not None and bound != claimed:
        return _deny("worker_bound_name", "this worker credential is bound to another worker", visible=True)
    if bound is None and taken:
        return _deny(
            "worker_name_taken", "another credential of the region acts as this worker", visible=True
        )
    return ALLOW


def worker_holds_job(holder: str | None, worker: str | None) -> Decision:
    """Only the worker that claimed (or adopted) a job reports its state, end or output. To
    any other worker, of the same region or not, the job is invisible: answered as one that
    does not exist."""
    if holder is None or worker is None or holder != worker:
        return _deny("worker_holds_job", "the job is held by another worker", visible=False)
    return ALLOW


def worker_may_adopt(holder: str | None, worker: str, holder_alive: bool) -> Decision:
    """A job held by a worker passes to another only once its holder's lease has run out (no
    sync for the worker timeout); a worker restarted under its own name takes its jobs back."""
    if holder is not None and holder != worker and holder_alive:
        return _deny("worker_lease_held", "the job's worker is alive", visible=False)
    return ALLOW


def lowers_clearance(current: Label, new: Label) -> bool:
    """A new clearance that the current one dominates only takes access away — every session
    the user may hold afterwards was allowed before, and sessions already above it lose their
    reads at once (``session_within_clearance`` runs on every decision) — so it applies at
    once. Anything else, a raise or an incomparable change adding a compartment, waits for a
    second admin's approval."""
    return current.dominates(new)


def derived_label(scheme: LabelScheme, session: Label, inputs: Iterable[Label]) -> Label:
    """The label of something derived from ``inputs`` by a session: at least their lub.

    The result is the lub of the inputs and the session label; since a session can only
    read inputs it dominates, this equals the session label in practice, but computing it
    keeps the rule true even for inputs reached by other means (e.g. a system job).
    """
    return scheme.lub(session, *inputs)


@dataclass(frozen=True)
class TransferPlan:
    """What the guard must do for a requested label change."""

    downgrade: bool  # target does not dominate source: needs review and a content scan
    reviews_needed: int = field(default=0)


REVIEWS_FOR_DOWNGRADE = 2


def plan_transfer(source: Label, target: Label) -> TransferPlan:
    """A move to a label that dominates the source is an upgrade (no review, audited);
    anything else — lower or incomparable — is a downgrade needing two reviews."""
    if target.dominates(source):
        return TransferPlan(downgrade=False, reviews_needed=0)
    return TransferPlan(downgrade=True, reviews_needed=REVIEWS_FOR_DOWNGRADE)
