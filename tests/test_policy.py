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
    assert decide(s, action, resource(None, agency=None, kind="system")).allowed


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
@pytest.mark.parametrize("roles", [(), (Role.USER,), (Role.OPERATOR, Role.AUDITOR, Role.RELEASE_AUTHORITY)])
def test_non_admin_cannot_administer(roles: tuple[Role, ...]) -> None:
    s = subject("TOP SECRET//SI/TK/HCS/G", roles=roles)
    d = decide(s, Action.ADMINISTER, resource(None, agency=None, kind="administration"))
    assert_denied(d, "role", visible=True)
    with pytest.raises(Forbidden, match="admin"):
        require(s, Action.ADMINISTER, resource(None, agency=None, kind="administration"))


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMIN])
def test_auditors_and_admins_read_audit_across_agencies(role: Role) -> None:
    s = subject("SECRET", agency="doe", roles=(role,))
    for r in (resource(None, agency=None), resource("SECRET", agency="doe"), resource("CUI", agency="nasa")):
        assert decide(s, Action.READ_AUDIT, r).allowed


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
    assert message == "no such model"
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
