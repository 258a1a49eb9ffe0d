"""The policy gate: every rule, every branch, and the attacks the rules exist to stop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave import policy
from enclave.errors import Forbidden, NotFound
from enclave.labels import DEFAULT_SCHEME, Label
from enclave.policy import (
    ALLOW,
    REVIEWS_FOR_DOWNGRADE,
    Action,
    Decision,
    Resource,
    Role,
    Subject,
    TransferPlan,
    decide,
    derived_label,
    may_hold_session,
    may_place,
    plan_transfer,
    require,
    reviewer_clearance,
    tenancy,
    visible,
)

S = DEFAULT_SCHEME
ALL_ACTIONS = list(Action)
# Actions on an existing labelled object: a session that may not read it may not learn it exists.
ON_EXISTING = [
    Action.READ,
    Action.WRITE,
    Action.DELETE,
    Action.SHARE,
    Action.REQUEST_TRANSFER,
    Action.REVIEW_TRANSFER,
]
CHANGES = [Action.WRITE, Action.DELETE, Action.SHARE]


def L(marking: str) -> Label:
    return S.parse(marking)


def subject(
    session: str = "SECRET",
    clearance: str | None = None,
    *,
    user: str = "alice",
    agency: str = "doe",
    roles: tuple[Role, ...] = (),
) -> Subject:
    return Subject(user, agency, L(clearance or session), L(session), frozenset(roles))


def resource(
    label: str | None = "SECRET",
    *,
    agency: str | None = "doe",
    shared_with: tuple[str, ...] = (),
    owner: str | None = None,
    kind: str = "dataset",
) -> Resource:
    return Resource(kind, None if label is None else L(label), agency, frozenset(shared_with), owner)


def assert_denied(d: Decision, rule: str, *, visible: bool) -> None:
    assert not d.allowed and not d
    assert d.rule == rule
    assert d.visible is visible


def everyone(user: str = "alice") -> Subject:
    """A TS-cleared user holding every role, so only the rule under test can deny."""
    return subject("TOP SECRET//SI/TK/HCS/G", user=user, roles=tuple(Role))


# -- the happy path ----------------------------------------------------------------------
@pytest.mark.parametrize("action", [*ON_EXISTING, Action.CREATE])
def test_owner_at_the_object_label_is_allowed(action: Action) -> None:
    s = subject("SECRET//SI", "TOP SECRET//SI/TK", roles=(Role.RELEASE_AUTHORITY,))
    d = decide(s, action, resource("SECRET//SI", owner="bob"))
    assert d == ALLOW and d.allowed and d and d.visible


@pytest.mark.parametrize("action", [Action.ADMINISTER, Action.READ_AUDIT, Action.MINT_TOKEN])
def test_privileged_actions_allowed_with_the_role(action: Action) -> None:
    s = subject("CUI", "SECRET", roles=(Role.ADMIN,))
    assert decide(s, action, resource(None, agency="doe", kind="system")).allowed


# -- session within clearance ------------------------------------------------------------
@pytest.mark.parametrize("action", ALL_ACTIONS)
def test_session_above_clearance_is_denied_on_every_action(action: Action) -> None:
    """A token whose clearance was lowered after minting is worthless, whatever it asks."""
    s = subject("TOP SECRET", "SECRET", roles=tuple(Role))
    for r in (resource("UNCLASSIFIED"), resource("TOP SECRET"), resource(None, agency=None)):
        assert_denied(decide(s, action, r), "session_within_clearance", visible=False)


@pytest.mark.parametrize("action", ALL_ACTIONS)
def test_session_with_a_compartment_outside_clearance_is_denied(action: Action) -> None:
    s = subject("SECRET//SI", "TOP SECRET//TK", roles=tuple(Role))
    assert_denied(decide(s, action, resource("UNCLASSIFIED")), "session_within_clearance", visible=False)


def test_session_may_be_below_clearance() -> None:
    s = subject("CUI", "TOP SECRET//SI")
    assert decide(s, Action.READ, resource("CUI")).allowed
    assert decide(s, Action.MINT_TOKEN, resource(None, agency=None)).allowed


# -- tenancy -----------------------------------------------------------------------------
@pytest.mark.parametrize("action", [*ON_EXISTING, Action.CREATE])
def test_another_agencys_object_is_invisible(action: Action) -> None:
    d = decide(everyone(), action, resource("SECRET", agency="nasa"))
    assert_denied(d, "tenancy", visible=False)


def test_shared_agency_can_read() -> None:
    s = subject("SECRET", agency="nasa")
    assert decide(s, Action.READ, resource("SECRET", agency="doe", shared_with=("nasa",))).allowed
    assert decide(s, Action.READ, resource("CUI", agency="doe", shared_with=("noaa", "nasa"))).allowed


@pytest.mark.parametrize("action", [*CHANGES, Action.REQUEST_TRANSFER])
def test_shared_agency_cannot_write_delete_share_or_transfer(action: Action) -> None:
    s = subject("SECRET", agency="nasa", roles=tuple(Role))
    d = decide(s, action, resource("SECRET", agency="doe", shared_with=("nasa",)))
    assert_denied(d, "owning_agency", visible=True)


def test_sharing_with_another_agency_does_not_share_with_everyone() -> None:
    s = subject("SECRET", agency="noaa")
    assert_denied(
        decide(s, Action.READ, resource("SECRET", agency="doe", shared_with=("nasa",))),
        "tenancy",
        visible=False,
    )


def test_shared_agency_cannot_create_in_the_owners_name() -> None:
    s = subject("SECRET", agency="nasa")
    d = decide(s, Action.CREATE, resource("SECRET", agency="doe", shared_with=("nasa",)))
    assert_denied(d, "owning_agency", visible=True)


def test_shared_with_an_object_does_not_bypass_labels() -> None:
    s = subject("CUI", agency="nasa")
    d = decide(s, Action.READ, resource("SECRET", agency="doe", shared_with=("nasa",)))
    assert_denied(d, "simple_security", visible=False)


def test_objects_of_no_agency_are_seen_by_every_agency_but_still_labelled() -> None:
    assert decide(subject("SECRET", agency="nasa"), Action.READ, resource("CUI", agency=None)).allowed
    assert_denied(
        decide(subject("CUI", agency="nasa"), Action.READ, resource("SECRET", agency=None)),
        "simple_security",
        visible=False,
    )


def test_tenancy_rule_directly() -> None:
    auditor = subject(agency="doe", roles=(Role.AUDITOR,))
    user = subject(agency="doe")
    nasa = resource(agency="nasa")
    assert tenancy(user, Action.READ, resource(agency=None)) is None
    assert tenancy(user, Action.READ, resource(agency="doe")) is None
    assert tenancy(user, Action.READ, resource(agency="nasa", shared_with=("doe",))) is None
    assert tenancy(auditor, Action.READ_AUDIT, nasa) is None
    assert tenancy(auditor, Action.READ, nasa) is not None  # auditing is not reading the data
    assert tenancy(user, Action.READ_AUDIT, nasa) is not None


# -- simple security: no read up ---------------------------------------------------------
@pytest.mark.parametrize(
    ("session", "label"),
    [
        ("SECRET", "TOP SECRET"),  # read up
        ("TOP SECRET", "SECRET//SI"),  # missing compartment
        ("SECRET//SI", "SECRET//TK"),  # incomparable
        ("UNCLASSIFIED", "CUI"),
    ],
)
def test_read_up_is_denied_and_invisible(session: str, label: str) -> None:
    d = decide(subject(session, "TOP SECRET//SI/TK/HCS/G"), Action.READ, resource(label))
    assert_denied(d, "simple_security", visible=False)
    with pytest.raises(NotFound):
        require(subject(session), Action.READ, resource(label))


@pytest.mark.parametrize(
    ("session", "label"), [("SECRET", "CUI"), ("TOP SECRET//SI/TK", "SECRET//SI"), ("CUI", None)]
)
def test_read_down_and_unlabelled_are_allowed(session: str, label: str | None) -> None:
    assert decide(subject(session), Action.READ, resource(label)).allowed


# -- star property: no write down, no write up -------------------------------------------
@pytest.mark.parametrize("action", CHANGES)
@pytest.mark.parametrize("label", ["CUI", "UNCLASSIFIED", "SECRET//SI"])
def test_write_down_is_forbidden_but_visible(action: Action, label: str) -> None:
    """The session can read the object (it dominates it), so the answer is 403, not 404."""
    s = subject("SECRET//SI/TK")
    d = decide(s, action, resource(label))
    assert_denied(d, "star_property", visible=True)
    with pytest.raises(Forbidden, match="session label SECRET//SI/TK"):
        require(s, action, resource(label))


@pytest.mark.parametrize("action", CHANGES)
def test_write_up_is_invisible(action: Action) -> None:
    d = decide(subject("CUI", "TOP SECRET"), action, resource("SECRET"))
    assert_denied(d, "simple_security", visible=False)


@pytest.mark.parametrize("action", CHANGES)
def test_changes_to_unlabelled_objects_of_the_agency_are_allowed(action: Action) -> None:
    assert decide(subject("CUI"), action, resource(None)).allowed


def test_create_happens_exactly_at_the_session_label() -> None:
    s = subject("SECRET//SI", "TOP SECRET//SI/TK")
    assert decide(s, Action.CREATE, resource("SECRET//SI")).allowed
    assert decide(s, Action.CREATE, resource("SECRET//SI", agency=None)).allowed
    for label in ("SECRET", "CUI", "TOP SECRET//SI", "SECRET//SI/TK", "SECRET//TK"):
        assert_denied(decide(s, Action.CREATE, resource(label)), "star_property", visible=True)


def test_create_needs_a_label() -> None:
    """Mandatory access control on every object: a create without a label is refused."""
    d = decide(subject("SECRET"), Action.CREATE, resource(None))
    assert_denied(d, "new_object_labelled", visible=True)


# -- transfers ---------------------------------------------------------------------------
def test_request_transfer_of_a_readable_object_below_the_session() -> None:
    """Requesting a copy is a read of the source, so an object below the session qualifies."""
    assert decide(subject("TOP SECRET//SI"), Action.REQUEST_TRANSFER, resource("SECRET")).allowed
    assert_denied(
        decide(subject("SECRET"), Action.REQUEST_TRANSFER, resource("TOP SECRET")),
        "simple_security",
        visible=False,
    )


def test_review_needs_the_release_authority_role() -> None:
    s = subject("SECRET", roles=(Role.ADMIN, Role.AUDITOR, Role.OPERATOR, Role.USER))
    d = decide(s, Action.REVIEW_TRANSFER, resource("SECRET", owner="bob"))
    assert_denied(d, "role", visible=True)
    assert "release-authority" in d.reason


def test_release_authority_reviews_someone_elses_transfer() -> None:
    s = subject("SECRET//SI", roles=(Role.RELEASE_AUTHORITY,))
    assert decide(s, Action.REVIEW_TRANSFER, resource("SECRET//SI", owner="bob")).allowed
    assert decide(s, Action.REVIEW_TRANSFER, resource("CUI", owner="bob")).allowed
    assert decide(s, Action.REVIEW_TRANSFER, resource(None, owner="bob")).allowed


def test_requester_cannot_review_their_own_transfer() -> None:
    s = subject("SECRET", user="alice", roles=(Role.RELEASE_AUTHORITY,))
    d = decide(s, Action.REVIEW_TRANSFER, resource("SECRET", owner="alice"))
    assert_denied(d, "two_person", visible=True)
    with pytest.raises(Forbidden, match="own transfer"):
        require(s, Action.REVIEW_TRANSFER, resource("SECRET", owner="alice"))


def test_release_authority_without_the_clearance_cannot_even_see_the_transfer() -> None:
    s = subject("SECRET", "SECRET", roles=(Role.RELEASE_AUTHORITY,))
    for label in ("TOP SECRET", "SECRET//SI"):
        assert_denied(
            decide(s, Action.REVIEW_TRANSFER, resource(label, owner="bob")), "simple_security", visible=False
        )


def test_release_authority_must_raise_the_session_to_review() -> None:
    s = subject("CUI", "TOP SECRET", roles=(Role.RELEASE_AUTHORITY,))
    assert not decide(s, Action.REVIEW_TRANSFER, resource("SECRET", owner="bob")).visible


def test_reviewer_clearance_rule_directly() -> None:
    """Defence in depth: after simple security it cannot fire through decide(), so call it."""
    s = subject("CUI", "SECRET", roles=(Role.RELEASE_AUTHORITY,))
    assert reviewer_clearance(s, Action.REVIEW_TRANSFER, resource("SECRET")) is None
    assert reviewer_clearance(s, Action.REVIEW_TRANSFER, resource(None)) is None
    d = reviewer_clearance(s, Action.REVIEW_TRANSFER, resource("TOP SECRET"))
    assert d is not None
    assert_denied(d, "reviewer_clearance", visible=True)


@pytest.mark.parametrize(
    ("source", "target", "downgrade"),
    [
        ("SECRET", "SECRET", False),
        ("SECRET", "TOP SECRET", False),
        ("SECRET//SI", "TOP SECRET//SI/TK", False),
        ("SECRET", "CUI", True),
        ("SECRET//SI", "SECRET", True),  # dropping a compartment is a downgrade
        ("SECRET//SI", "TOP SECRET//TK", True),  # incomparable is a downgrade
    ],
)
def test_plan_transfer(source: str, target: str, downgrade: bool) -> None:
    plan = plan_transfer(L(source), L(target))
    reviews = REVIEWS_FOR_DOWNGRADE if downgrade else 0
    assert plan == TransferPlan(downgrade=downgrade, reviews_needed=reviews)


def test_a_downgrade_needs_two_people() -> None:
    assert REVIEWS_FOR_DOWNGRADE >= 2


# -- administration, audit, tokens -------------------------------------------------------
@pytest.mark.parametrize("roles", [(), (Role.USER,), (Role.AUDITOR, Role.RELEASE_AUTHORITY)])
def test_non_admin_cannot_administer(roles: tuple[Role, ...]) -> None:
    s = subject("TOP SECRET//SI/TK/HCS/G", roles=roles)
    for agency in (None, "doe", "nasa"):  # the same answer whatever the target's agency
        d = decide(s, Action.ADMINISTER, resource(None, agency=agency, kind="administration"))
        assert_denied(d, "role", visible=True)
    with pytest.raises(Forbidden, match="admin"):
        require(s, Action.ADMINISTER, resource(None, agency=None, kind="administration"))


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.OPERATOR])
def test_auditors_and_operators_read_audit_across_agencies(role: Role) -> None:
    s = subject("SECRET", agency="doe", roles=(role, Role.AUDITOR))
    for r in (resource(None, agency=None), resource("SECRET", agency="doe"), resource("CUI", agency="nasa")):
        assert decide(s, Action.READ_AUDIT, r).allowed


def test_an_agency_admin_reads_only_its_own_agencys_audit() -> None:
    s = subject("SECRET", agency="doe", roles=(Role.ADMIN,))
    assert decide(s, Action.READ_AUDIT, resource("SECRET", agency="doe")).allowed
    assert decide(s, Action.READ_AUDIT, resource(None, agency=None)).allowed
    assert_denied(decide(s, Action.READ_AUDIT, resource("CUI", agency="nasa")), "tenancy", visible=False)


def test_plain_user_cannot_read_audit() -> None:
    d = decide(
        subject("SECRET", roles=(Role.USER, Role.OPERATOR)), Action.READ_AUDIT, resource(None, agency=None)
    )
    assert_denied(d, "role", visible=True)


def test_audit_records_above_the_session_are_invisible_even_to_auditors() -> None:
    s = subject("CUI", "TOP SECRET", roles=(Role.AUDITOR,))
    assert_denied(
        decide(s, Action.READ_AUDIT, resource("SECRET", agency=None)), "simple_security", visible=False
    )


def test_audit_refusal_for_a_non_auditor_does_not_confirm_an_unreadable_record() -> None:
    """The role check comes last: probing a record above the session or of another agency
    gets the same 404 as a record that does not exist."""
    s = subject("CUI", roles=(Role.USER,))
    assert_denied(
        decide(s, Action.READ_AUDIT, resource("TOP SECRET", agency=None)), "simple_security", visible=False
    )
    assert_denied(decide(s, Action.READ_AUDIT, resource("CUI", agency="nasa")), "tenancy", visible=False)


def test_mint_token_only_needs_the_session_within_clearance() -> None:
    assert decide(
        subject("CUI", "SECRET"), Action.MINT_TOKEN, resource(None, agency=None, kind="token")
    ).allowed
    assert not decide(
        subject("SECRET", "CUI"), Action.MINT_TOKEN, resource(None, agency=None, kind="token")
    ).allowed


def test_may_hold_session() -> None:
    assert may_hold_session(L("TOP SECRET//SI"), L("SECRET//SI"))
    assert may_hold_session(L("SECRET"), L("SECRET"))
    assert not may_hold_session(L("SECRET"), L("TOP SECRET"))
    assert not may_hold_session(L("TOP SECRET"), L("SECRET//SI"))


def test_may_place() -> None:
    ts_region = L("TOP SECRET//SI/TK/HCS/G")
    assert may_place(L("SECRET//SI"), ts_region)
    assert may_place(L("CUI"), L("CUI"))
    assert not may_place(L("SECRET"), L("CUI"))
    assert not may_place(L("SECRET//SI"), L("SECRET"))


def test_derived_label_is_the_lub_of_session_and_inputs() -> None:
    assert derived_label(S, L("SECRET"), []) == L("SECRET")
    assert derived_label(S, L("SECRET//SI"), [L("CUI"), L("SECRET")]) == L("SECRET//SI")
    # An input reached by other means (a system job) still raises the result.
    assert derived_label(S, L("CUI"), [L("SECRET//TK"), L("CUI//SI")]) == L("SECRET//SI/TK")


# -- deny by default and rule order ------------------------------------------------------
def test_unknown_action_is_denied_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = dict(policy.RULES)
    del rules[Action.READ]
    monkeypatch.setattr(policy, "RULES", rules)
    d = decide(everyone(), Action.READ, resource("UNCLASSIFIED"))
    assert_denied(d, "default_deny", visible=False)
    with pytest.raises(NotFound):
        require(everyone(), Action.READ, resource("UNCLASSIFIED"))


def test_an_empty_rule_list_is_denied_not_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(policy.RULES, Action.MINT_TOKEN, ())
    assert_denied(decide(everyone(), Action.MINT_TOKEN, resource(None)), "default_deny", visible=False)


def test_every_action_has_rules_and_all_start_with_the_clearance_check() -> None:
    for action in Action:
        assert policy.RULES[action][0] is policy.session_within_clearance


def test_first_denying_rule_wins() -> None:
    # Other agency *and* above the session: tenancy comes first.
    d = decide(subject("CUI"), Action.WRITE, resource("TOP SECRET", agency="nasa"))
    assert d.rule == "tenancy"
    # Readable but both another owner's (shared) and written down: owning agency first.
    d = decide(
        subject("SECRET", agency="nasa"), Action.WRITE, resource("CUI", agency="doe", shared_with=("nasa",))
    )
    assert d.rule == "owning_agency"


def test_role_rules_are_named_after_their_roles() -> None:
    names = {rule.__name__ for rules in policy.RULES.values() for rule in rules}
    assert "needs_role_release-authority" in names
    assert "needs_role_auditor_admin" in names


# -- require -----------------------------------------------------------------------------
def test_require_returns_the_decision_when_allowed() -> None:
    assert require(subject("SECRET"), Action.READ, resource("SECRET")) is ALLOW


@pytest.mark.parametrize(
    ("s", "r"),
    [
        (subject("CUI"), resource("TOP SECRET//SI/HCS", agency="doe", owner="mallory", kind="model")),
        (
            subject("TOP SECRET//SI/HCS"),
            resource("TOP SECRET//SI/HCS", agency="nasa", owner="mallory", kind="model"),
        ),
        (
            subject("TOP SECRET//SI/HCS", "SECRET"),
            resource("CUI", agency="nasa", owner="mallory", kind="model"),
        ),
    ],
)
def test_not_found_does_not_leak_the_object(s: Subject, r: Resource) -> None:
    with pytest.raises(NotFound) as info:
        require(s, Action.READ, r)
    message = info.value.detail
    assert message == "model not found"  # the very words of a miss (services say "model <id> not found")
    for secret in ("TOP SECRET", "HCS", "SI", "nasa", "mallory", "session", "clearance", "agency"):
        assert secret not in message


def test_forbidden_carries_the_reason() -> None:
    with pytest.raises(Forbidden, match="only the owning agency"):
        require(subject("SECRET", agency="nasa"), Action.DELETE, resource("SECRET", shared_with=("nasa",)))


def test_visible_filters_and_keeps_order() -> None:
    rs = [
        resource("CUI", kind="a"),
        resource("TOP SECRET", kind="b"),
        resource("SECRET", agency="nasa", kind="c"),
        resource("SECRET", agency="nasa", shared_with=("doe",), kind="d"),
        resource(None, kind="e"),
    ]
    assert [r.kind for r in visible(subject("SECRET"), rs)] == ["a", "d", "e"]
    assert visible(subject("TOP SECRET", "SECRET"), rs) == []


# -- properties --------------------------------------------------------------------------
AGENCIES = ["doe", "nasa", "noaa"]
label_st = st.builds(
    S.level, st.sampled_from(S.levels), st.frozensets(st.sampled_from(sorted(S.compartments)))
)
subjects = st.builds(
    Subject,
    user=st.sampled_from(["alice", "bob"]),
    agency=st.sampled_from(AGENCIES),
    clearance=label_st,
    session=label_st,
    roles=st.frozensets(st.sampled_from(list(Role))),
)
resources = st.builds(
    Resource,
    kind=st.just("thing"),
    label=st.none() | label_st,
    agency=st.none() | st.sampled_from(AGENCIES),
    shared_with=st.frozensets(st.sampled_from(AGENCIES)),
    owner=st.none() | st.sampled_from(["alice", "bob"]),
    roles=st.frozensets(st.sampled_from(list(Role))),
    requested_by=st.none() | st.sampled_from(["alice", "bob"]),
)


@given(subjects, resources)
def test_read_allowed_implies_dominance_and_tenancy(s: Subject, r: Resource) -> None:
    if decide(s, Action.READ, r).allowed:
        assert s.clearance.dominates(s.session)
        assert r.label is None or s.session.dominates(r.label)
        assert r.agency is None or r.agency == s.agency or s.agency in r.shared_with


@given(subjects, resources)
def test_create_allowed_implies_exactly_the_session_label(s: Subject, r: Resource) -> None:
    if decide(s, Action.CREATE, r).allowed:
        assert r.label == s.session
        assert s.clearance.dominates(r.label)
        assert r.agency in (None, s.agency)


@given(subjects, resources, st.sampled_from(CHANGES))
def test_changes_allowed_imply_no_write_down(s: Subject, r: Resource, action: Action) -> None:
    if decide(s, action, r).allowed:
        assert r.label is None or r.label == s.session
        assert r.agency in (None, s.agency)


@given(subjects, resources, st.sampled_from(ON_EXISTING))
def test_an_unreadable_object_is_invisible_to_every_action(s: Subject, r: Resource, action: Action) -> None:
    if not decide(s, Action.READ, r).allowed:
        d = decide(s, action, r)
        assert not d.allowed and not d.visible
        with pytest.raises(NotFound):
            require(s, action, r)


@given(subjects, resources, st.sampled_from(ALL_ACTIONS))
def test_nothing_is_allowed_above_clearance(s: Subject, r: Resource, action: Action) -> None:
    d = decide(s, action, r)
    if d.allowed:
        assert d is ALLOW
        assert s.clearance.dominates(s.session)
    else:
        assert d.rule and d.reason


@given(subjects, resources)
def test_review_allowed_implies_two_people_and_the_role(s: Subject, r: Resource) -> None:
    if decide(s, Action.REVIEW_TRANSFER, r).allowed:
        assert Role.RELEASE_AUTHORITY in s.roles
        assert r.owner != s.user
        assert r.label is None or s.clearance.dominates(r.label)


ADMINISTRATION = [
    Action.ADMINISTER,
    Action.MANAGE_USER,
    Action.ISSUE_CREDENTIALS,
    Action.CHANGE_CLEARANCE,
    Action.APPROVE_CLEARANCE,
]


@given(subjects, resources, st.sampled_from(ADMINISTRATION))
def test_administration_allowed_implies_the_role_and_the_scope(
    s: Subject, r: Resource, action: Action
) -> None:
    """An agency admin acts in its own agency only; deployment-wide objects and other
    agencies are the operator's."""
    if decide(s, action, r).allowed:
        assert s.roles & {Role.ADMIN, Role.OPERATOR}
        assert Role.OPERATOR in s.roles or (r.agency is not None and r.agency == s.agency)


@given(subjects, resources, st.sampled_from(ADMINISTRATION))
def test_another_agency_is_invisible_to_an_agency_admin(s: Subject, r: Resource, action: Action) -> None:
    if (
        Role.ADMIN in s.roles
        and Role.OPERATOR not in s.roles
        and r.agency not in (None, s.agency)
        and s.clearance.dominates(s.session)
    ):
        d = decide(s, action, r)
        assert_denied(d, "admin_scope", visible=False)
        with pytest.raises(NotFound):
            require(s, action, r)


@given(subjects, resources, st.sampled_from([Action.MANAGE_USER, Action.ISSUE_CREDENTIALS]))
def test_privileged_users_are_an_operators_to_manage(s: Subject, r: Resource, action: Action) -> None:
    """Only an operator grants admin, operator, auditor or release-authority, and only an
    operator issues a token or password for someone else who holds one of them."""
    if decide(s, action, r).allowed and r.roles & policy.PRIVILEGED_ROLES:
        assert Role.OPERATOR in s.roles or (action is Action.ISSUE_CREDENTIALS and r.owner == s.user)


@given(subjects, resources, st.sampled_from(ADMINISTRATION[1:]))
def test_nobody_hands_out_more_than_their_clearance(s: Subject, r: Resource, action: Action) -> None:
    if decide(s, action, r).allowed:
        assert r.label is None or s.clearance.dominates(r.label)


@given(subjects, resources, st.sampled_from([Action.CHANGE_CLEARANCE, Action.APPROVE_CLEARANCE]))
def test_nobody_changes_their_own_clearance(s: Subject, r: Resource, action: Action) -> None:
    if decide(s, action, r).allowed:
        assert r.owner is not None and r.owner != s.user


@given(subjects, resources)
def test_a_clearance_raise_is_approved_by_a_second_admin(s: Subject, r: Resource) -> None:
    if decide(s, Action.APPROVE_CLEARANCE, r).allowed:
        assert r.requested_by is not None and r.requested_by != s.user
        assert r.owner != s.user


def admin(agency: str = "doe", clearance: str = "TOP SECRET", user: str = "ada") -> Subject:
    return subject("UNCLASSIFIED", clearance, user=user, agency=agency, roles=(Role.ADMIN,))


def operator(clearance: str = "TOP SECRET//SI/TK/HCS/G", user: str = "root") -> Subject:
    return subject("UNCLASSIFIED", clearance, user=user, agency="enclave", roles=(Role.ADMIN, Role.OPERATOR))


def user_of(
    agency: str = "doe", *, name: str = "alice", label: str | None = None, roles: tuple[Role, ...] = ()
) -> Resource:
    return Resource("user", None if label is None else L(label), agency, owner=name, roles=frozenset(roles))


def test_an_agency_admin_administers_its_own_agency() -> None:
    for action in (Action.ADMINISTER, Action.MANAGE_USER, Action.ISSUE_CREDENTIALS, Action.CHANGE_CLEARANCE):
        assert decide(admin(), action, user_of(label="SECRET")).allowed


def test_an_agency_admin_does_not_administer_another_agency_and_cannot_tell_it_apart() -> None:
    """Finding: an admin of one agency minted tokens for another agency's users."""
    for action in ADMINISTRATION:
        d = decide(admin(), action, Resource("user", L("SECRET"), "nasa", owner="bob", requested_by="carl"))
        assert_denied(d, "admin_scope", visible=False)
        with pytest.raises(NotFound, match="user not found"):
            require(admin(), action, Resource("user", None, "nasa", owner="bob"))


def test_deployment_wide_objects_are_the_operators() -> None:
    agencies = Resource("administration")
    assert_denied(decide(admin(), Action.ADMINISTER, agencies), "operator_only", visible=True)
    assert decide(operator(), Action.ADMINISTER, agencies).allowed
    for action in ADMINISTRATION:  # and the operator reaches every agency
        r = Resource("user", L("SECRET"), "nasa", owner="bob", requested_by="carl")
        assert decide(operator(), action, r).allowed


@pytest.mark.parametrize("role", sorted(policy.PRIVILEGED_ROLES))
def test_privileged_roles_are_granted_only_by_operators(role: Role) -> None:
    given_role = user_of(roles=(Role.USER, role))
    assert_denied(decide(admin(), Action.MANAGE_USER, given_role), "privileged_roles", visible=True)
    assert decide(operator(), Action.MANAGE_USER, given_role).allowed
    # ... and an agency admin neither changes its own roles nor borrows another admin's token.
    assert_denied(
        decide(admin(), Action.MANAGE_USER, user_of(name="ada", roles=(Role.ADMIN,))),
        "privileged_roles",
        visible=True,
    )
    assert_denied(decide(admin(), Action.ISSUE_CREDENTIALS, given_role), "privileged_roles", visible=True)
    assert decide(operator(), Action.ISSUE_CREDENTIALS, given_role).allowed


def test_an_admin_issues_its_own_credentials() -> None:
    assert decide(admin(), Action.ISSUE_CREDENTIALS, user_of(name="ada", roles=(Role.ADMIN,))).allowed


@pytest.mark.parametrize("action", ADMINISTRATION[1:])
def test_nothing_is_granted_beyond_the_admins_own_clearance(action: Action) -> None:
    r = Resource("user", L("TOP SECRET//SI"), "doe", owner="alice", requested_by="carl")
    assert_denied(decide(admin(clearance="TOP SECRET"), action, r), "grants_within_clearance", visible=True)
    assert decide(admin(clearance="TOP SECRET//SI"), action, r).allowed


@pytest.mark.parametrize("action", [Action.CHANGE_CLEARANCE, Action.APPROVE_CLEARANCE])
def test_nobody_changes_or_approves_their_own_clearance(action: Action) -> None:
    """Finding: an agency admin raised its own clearance."""
    own = Resource("user", L("TOP SECRET"), "doe", owner="ada", requested_by="carl")
    for who in (admin(), operator(user="ada")):
        assert_denied(decide(who, action, own), "own_clearance", visible=True)
    # A change must name its user: deny by default.
    nameless = Resource("user", L("SECRET"), "doe", requested_by="carl")
    assert_denied(decide(admin(), action, nameless), "own_clearance", visible=True)


def test_the_requester_does_not_approve_its_own_request() -> None:
    mine = Resource("user", L("SECRET"), "doe", owner="alice", requested_by="ada")
    assert_denied(decide(admin(), Action.APPROVE_CLEARANCE, mine), "two_person", visible=True)
    assert_denied(decide(operator(user="ada"), Action.APPROVE_CLEARANCE, mine), "two_person", visible=True)
    unsigned = Resource("user", L("SECRET"), "doe", owner="alice")
    assert_denied(decide(admin(), Action.APPROVE_CLEARANCE, unsigned), "two_person", visible=True)
    assert decide(admin(user="bea"), Action.APPROVE_CLEARANCE, mine).allowed


def test_lowers_clearance() -> None:
    assert policy.lowers_clearance(L("TOP SECRET"), L("SECRET"))
    assert policy.lowers_clearance(L("SECRET//SI/TK"), L("SECRET//SI"))
    assert policy.lowers_clearance(L("SECRET"), L("SECRET"))
    assert not policy.lowers_clearance(L("SECRET"), L("TOP SECRET"))
    assert not policy.lowers_clearance(L("SECRET//SI"), L("SECRET//TK"))  # incomparable: a new compartment


# -- region workers --------------------------------------------------------------------------
def test_a_worker_acts_only_for_its_credentials_region() -> None:
    assert policy.worker_decision("ts-east", "ts-east").allowed
    assert_denied(policy.worker_decision("secret-west", "ts-east"), "worker_own_region", visible=True)
    assert policy.worker_decision("ts-east", "ts-east", L("TOP SECRET"), L("SECRET")).allowed
    d = policy.worker_decision("ts-east", "ts-east", L("SECRET"), L("TOP SECRET"))
    assert_denied(d, "worker_region_accredited", visible=False)


def test_a_credential_acts_as_one_worker_name() -> None:
    assert policy.worker_name_decision(None, "w1").allowed  # unbound: bound by this sync
    assert policy.worker_name_decision("w1", "w1").allowed
    assert policy.worker_name_decision("w1", "w1", taken=True).allowed  # its own name
    assert_denied(policy.worker_name_decision("w1", "w2"), "worker_bound_name", visible=True)
    assert_denied(policy.worker_name_decision(None, "w1", taken=True), "worker_name_taken", visible=True)


def test_only_the_holder_reports_on_a_job_and_others_cannot_tell_it_exists() -> None:
    """Finding: a second credential of the region reported another worker's job completed."""
    assert policy.worker_holds_job("w1", "w1").allowed
    assert_denied(policy.worker_holds_job("w1", "w2"), "worker_holds_job", visible=False)
    assert_denied(policy.worker_holds_job(None, "w2"), "worker_holds_job", visible=False)  # not claimed
    assert_denied(policy.worker_holds_job("w1", None), "worker_holds_job", visible=False)  # unbound


def test_a_job_is_adopted_only_after_its_holders_lease_ran_out() -> None:
    assert_denied(policy.worker_may_adopt("w1", "w2", holder_alive=True), "worker_lease_held", visible=False)
    assert policy.worker_may_adopt("w1", "w2", holder_alive=False).allowed
    assert policy.worker_may_adopt("w1", "w1", holder_alive=True).allowed  # its own, after a restart
    assert policy.worker_may_adopt(None, "w2", holder_alive=False).allowed


# -- a gateway call reads and writes ---------------------------------------------------------
@pytest.mark.parametrize(
    ("session", "endpoint", "rule", "visible"),
    [
        ("SECRET", "UNCLASSIFIED", "call_at_endpoint_label", True),  # write-down of the prompt
        ("SECRET//SI", "SECRET", "call_at_endpoint_label", True),
        ("SECRET", "TOP SECRET", "simple_security", False),  # read-up: invisible
        ("SECRET", "SECRET//SI", "simple_security", False),
    ],
)
def test_a_call_needs_the_endpoint_at_the_session_label(
    session: str, endpoint: str, rule: str, visible: bool
) -> None:
    ep = Resource("endpoint", L(endpoint), "doe", accreditation=L("TOP SECRET//SI/TK/HCS/G"))
    assert_denied(
        policy.decide(subject(session, "TOP SECRET//SI/TK/HCS/G"), Action.INVOKE, ep), rule, visible=visible
    )


@given(st.sampled_from(["UNCLASSIFIED", "CUI", "SECRET", "SECRET//SI", "TOP SECRET//TK"]))
def test_a_call_at_the_endpoint_label_is_allowed_where_the_region_is_accredited(marking: str) -> None:
    ep = Resource("endpoint", L(marking), "doe", accreditation=L("TOP SECRET//SI/TK/HCS/G"))
    assert policy.decide(subject(marking, "TOP SECRET//SI/TK/HCS/G"), Action.INVOKE, ep).allowed
    low_region = Resource("endpoint", L(marking), "doe", accreditation=L("UNCLASSIFIED"))
    if marking != "UNCLASSIFIED":
        assert_denied(
            policy.decide(subject(marking, "TOP SECRET//SI/TK/HCS/G"), Action.INVOKE, low_region),
            "region_accredited_for_session",
            visible=True,
        )


def test_a_refusal_is_a_miss_or_a_forbidden_never_a_third_answer() -> None:
    hidden = policy.decide(subject("UNCLASSIFIED"), Action.READ, resource("SECRET"))
    shown = policy.decide(subject("SECRET"), Action.WRITE, resource("UNCLASSIFIED"))
    assert isinstance(policy.refusal(hidden, "job", "j1"), NotFound)
    assert policy.refusal(hidden, "job", "j1").detail == "job j1 not found"
    assert isinstance(policy.refusal(shown, "job", "j1"), Forbidden)
    assert policy.refusal(shown, "job", "j1").detail == shown.reason
