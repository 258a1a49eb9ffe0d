"""Labels: parsing and formatting markings, and the lattice laws of dominance, lub and glb."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.errors import InvalidInput
from enclave.labels import (
    DEFAULT_COMPARTMENTS,
    DEFAULT_LEVELS,
    DEFAULT_SCHEME,
    MAX_MARKING_CHARS,
    Label,
    LabelScheme,
)

S = DEFAULT_SCHEME


@st.composite
def schemes(draw: st.DrawFn) -> LabelScheme:
    """Custom schemes: 1-6 distinct levels (some of two words) and 0-6 compartments."""
    word = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8)
    name = st.one_of(word, st.tuples(word, word).map(" ".join))
    levels = draw(st.lists(name, min_size=1, max_size=6, unique=True))
    comps = draw(st.lists(st.from_regex(r"[A-Z][A-Z0-9-]{0,5}", fullmatch=True), max_size=6, unique=True))
    return LabelScheme.build(levels, comps, aliases={})


def labels_of(scheme: LabelScheme) -> st.SearchStrategy[Label]:
    return st.builds(
        scheme.level,
        st.sampled_from(scheme.levels),
        st.frozensets(st.sampled_from(sorted(scheme.compartments))) if scheme.compartments else st.just(()),
    )


labels = labels_of(S)


def lab(marking: str) -> Label:
    return S.parse(marking)


# -- dominance is a partial order --------------------------------------------------------
@given(labels)
def test_dominance_is_reflexive(a: Label) -> None:
    assert a.dominates(a)


@given(labels, labels)
def test_dominance_is_antisymmetric(a: Label, b: Label) -> None:
    if a.dominates(b) and b.dominates(a):
        assert a == b


@given(labels, labels, labels)
def test_dominance_is_transitive(a: Label, b: Label, c: Label) -> None:
    if a.dominates(b) and b.dominates(c):
        assert a.dominates(c)


@given(labels, labels)
def test_dominance_is_level_and_compartments(a: Label, b: Label) -> None:
    assert a.dominates(b) == (a.rank >= b.rank and a.compartments >= b.compartments)


def test_dominance_examples() -> None:
    assert lab("TOP SECRET//SI/TK").dominates(lab("SECRET//SI"))
    assert not lab("TOP SECRET").dominates(lab("SECRET//SI"))  # higher level, missing compartment
    assert not lab("SECRET//SI").dominates(lab("TOP SECRET"))
    assert not lab("SECRET//SI").dominates(lab("SECRET//TK"))  # incomparable
    assert not lab("SECRET//TK").dominates(lab("SECRET//SI"))


# -- lub and glb -------------------------------------------------------------------------
@given(labels, labels, labels)
def test_lub_is_the_least_upper_bound(a: Label, b: Label, c: Label) -> None:
    j = S.lub(a, b)
    assert j.dominates(a) and j.dominates(b)
    if c.dominates(a) and c.dominates(b):
        assert c.dominates(j)


@given(labels, labels, labels)
def test_glb_is_the_greatest_lower_bound(a: Label, b: Label, c: Label) -> None:
    m = S.glb(a, b)
    assert a.dominates(m) and b.dominates(m)
    if a.dominates(c) and b.dominates(c):
        assert m.dominates(c)


@given(labels, labels)
def test_lub_and_glb_are_commutative(a: Label, b: Label) -> None:
    assert S.lub(a, b) == S.lub(b, a)
    assert S.glb(a, b) == S.glb(b, a)


@given(labels, labels, labels)
def test_lub_and_glb_are_associative(a: Label, b: Label, c: Label) -> None:
    assert S.lub(S.lub(a, b), c) == S.lub(a, S.lub(b, c)) == S.lub(a, b, c)
    assert S.glb(S.glb(a, b), c) == S.glb(a, S.glb(b, c)) == S.glb(a, b, c)


@given(labels)
def test_lub_and_glb_are_idempotent(a: Label) -> None:
    assert S.lub(a, a) == a == S.glb(a, a)
    assert S.lub(a) == a == S.glb(a)


@given(labels, labels)
def test_absorption(a: Label, b: Label) -> None:
    assert S.lub(a, S.glb(a, b)) == a
    assert S.glb(a, S.lub(a, b)) == a


@given(labels, labels)
def test_lub_and_glb_agree_with_dominance(a: Label, b: Label) -> None:
    assert a.dominates(b) == (S.lub(a, b) == a) == (S.glb(a, b) == b)


@given(labels)
def test_bottom_and_top_bound_every_label(a: Label) -> None:
    assert a.dominates(S.bottom)
    assert S.top.dominates(a)
    assert S.lub(a, S.bottom) == a
    assert S.glb(a, S.top) == a


def test_empty_lub_is_bottom_and_empty_glb_is_top() -> None:
    assert S.lub() == S.bottom == Label(0, "UNCLASSIFIED", frozenset())
    assert S.glb() == S.top == Label(3, "TOP SECRET", frozenset(DEFAULT_COMPARTMENTS))


def test_lub_and_glb_examples() -> None:
    assert S.lub(lab("SECRET//SI"), lab("CUI//TK")) == lab("SECRET//SI/TK")
    assert S.glb(lab("TOP SECRET//SI/TK"), lab("SECRET//TK/G")) == lab("SECRET//TK")


# -- parse and format --------------------------------------------------------------------
@given(labels)
def test_parse_format_round_trip(a: Label) -> None:
    assert S.parse(a.marking) == a
    assert str(a) == a.marking


@given(schemes().flatmap(lambda sc: st.tuples(st.just(sc), labels_of(sc))))
def test_round_trip_in_custom_schemes(pair: tuple[LabelScheme, Label]) -> None:
    scheme, a = pair
    assert scheme.parse(a.marking) == a
    assert scheme.lub(a, scheme.bottom) == a
    assert scheme.top.dominates(a)


def test_format_sorts_compartments() -> None:
    assert S.level("TOP SECRET", ["TK", "SI", "G"]).marking == "TOP SECRET//G/SI/TK"
    assert S.level("CUI").marking == "CUI"


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("secret", "SECRET"),
        ("  Top   Secret  ", "TOP SECRET"),
        ("top secret // si / tk", "TOP SECRET//SI/TK"),
        ("TOP\tSECRET//TK/SI", "TOP SECRET//SI/TK"),
        ("TS//SI", "TOP SECRET//SI"),
        ("ts", "TOP SECRET"),
        ("S", "SECRET"),
        ("u", "UNCLASSIFIED"),
        ("S//SI/SI", "SECRET//SI"),
    ],
)
def test_case_whitespace_and_alias_normalisation(written: str, canonical: str) -> None:
    assert S.parse(written).marking == canonical


@pytest.mark.parametrize(
    ("marking", "message"),
    [
        ("CONFIDENTIAL", "unknown classification level"),
        ("SECRET//SI/NOFORN", "unknown compartment"),
        ("TOP SECRET//XX/YY", "unknown compartment"),
        ("", "non-empty"),
        ("   ", "non-empty"),
        ("SECRET//SI//TK", "more than one '//'"),
        ("SECRET//SI//", "more than one '//'"),
        ("SECRET//", "empty compartment"),
        ("SECRET//SI/", "empty compartment"),
        ("SECRET//SI//NOFORN", "more than one '//'"),
        ("SECRET// /TK", "empty compartment"),
        ("//SI", "unknown classification level"),
        ("SECRET/SI", "unknown classification level"),
        ("SECRETSI", "unknown classification level"),
        ("SECRET " + "/" * 2 + "SI" * MAX_MARKING_CHARS, "too long"),
    ],
)
def test_bad_markings_are_invalid_input(marking: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        S.parse(marking)


def test_a_long_but_allowed_marking_parses() -> None:
    marking = "TOP SECRET//" + "/".join(["SI"] * 80)
    assert len(marking) <= MAX_MARKING_CHARS
    assert S.parse(marking) == lab("TOP SECRET//SI")
    with pytest.raises(InvalidInput, match="too long"):
        S.parse(marking + " " * (MAX_MARKING_CHARS - len(marking) + 1))


def test_non_string_marking_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        S.parse(None)  # type: ignore[arg-type]


FRAGMENTS = ["SECRET", "TOP", "CUI", "ts", "s", "U", " ", "\t", "//", "/", "SI", "tk", "HCS", "XX", "("]
marking_like = st.one_of(st.text(max_size=40), st.lists(st.sampled_from(FRAGMENTS), max_size=8).map("".join))


@given(marking_like)
def test_parse_either_returns_a_scheme_label_or_raises_invalid_input(text: str) -> None:
    try:
        a = S.parse(text)
    except InvalidInput:
        return
    assert a.level in S.levels and S.levels.index(a.level) == a.rank
    assert a.compartments <= S.compartments
    assert S.parse(a.marking) == a


@given(labels, st.sampled_from(["XX", "NOFORN", "SI-G", "Q1"]))
def test_an_unknown_compartment_is_never_dropped(a: Label, unknown: str) -> None:
    with pytest.raises(InvalidInput, match=unknown):
        S.parse(f"{a.level}//{'/'.join([*sorted(a.compartments), unknown])}")


def test_level_constructor_validates() -> None:
    assert S.level("ts", ["si"]) == lab("TOP SECRET//SI")
    with pytest.raises(InvalidInput, match="unknown compartment"):
        S.level("SECRET", ["SI", "ZZ"])
    with pytest.raises(InvalidInput, match="unknown classification level"):
        S.level("RESTRICTED")


# -- schemes -----------------------------------------------------------------------------
def test_default_scheme() -> None:
    assert S.levels == DEFAULT_LEVELS
    assert S.compartments == frozenset(DEFAULT_COMPARTMENTS)
    assert [lab(level).rank for level in DEFAULT_LEVELS] == [0, 1, 2, 3]


def test_custom_scheme_orders_its_levels() -> None:
    scheme = LabelScheme.build(
        ["public", "internal", "restricted"], ["hr", "fin"], aliases={"R": "restricted"}
    )
    assert scheme.levels == ("PUBLIC", "INTERNAL", "RESTRICTED")
    assert scheme.parse("r//hr").marking == "RESTRICTED//HR"
    assert scheme.parse("internal").dominates(scheme.parse("public"))
    assert not scheme.parse("internal").dominates(scheme.parse("public//fin"))
    assert scheme.bottom == scheme.parse("PUBLIC")
    assert scheme.top == scheme.parse("RESTRICTED//FIN/HR")
    with pytest.raises(InvalidInput):
        scheme.parse("SECRET")  # a level of the default scheme, not of this one
    with pytest.raises(InvalidInput):
        scheme.parse("S")  # default aliases are replaced by the explicit ones


def test_default_aliases_kept_only_for_levels_the_scheme_has() -> None:
    scheme = LabelScheme.build(["UNCLASSIFIED", "SECRET"], [])
    assert dict(scheme.aliases) == {"U": "UNCLASSIFIED", "S": "SECRET"}
    assert scheme.parse("s") == scheme.parse("SECRET")
    with pytest.raises(InvalidInput):
        scheme.parse("TS")


def test_single_level_scheme() -> None:
    scheme = LabelScheme.build(["ONLY"], [], aliases={})
    assert scheme.bottom == scheme.top == scheme.parse("only")
    assert scheme.lub() == scheme.glb() == scheme.bottom


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"levels": []}, "at least one level"),
        ({"levels": ["LOW", "HIGH", "low"]}, "distinct"),
        ({"levels": ["LOW", "A/B"]}, "without '/'"),
        ({"levels": ["LOW", "A//B"]}, "without '/'"),
        ({"levels": ["", "HIGH"]}, "non-empty"),
        ({"levels": ["  ", "HIGH"]}, "non-empty"),
        ({"compartments": ["SI", "S I"]}, "compartment name"),
        ({"compartments": ["1SI"]}, "compartment name"),
        ({"compartments": ["A" * 17]}, "compartment name"),
        ({"compartments": ["SI/TK"]}, "compartment name"),
        ({"aliases": {"X": "RESTRICTED"}}, "unknown level"),
        ({"aliases": {"SECRET": "CUI"}}, "already a level name"),
        ({"aliases": {"": "CUI"}}, "non-empty"),
        ({"aliases": {"A/B": "CUI"}}, "without '/'"),
        ({"aliases": {"s": "SECRET", "S": "SECRET"}}, "defined twice"),
    ],
)
def test_invalid_scheme_definitions(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        LabelScheme.build(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"levels": ("LOW", "high")},
        {"levels": ("LOW", "TOP  SECRET")},
        {"compartments": frozenset({"si"})},
        {"aliases": (("s", "SECRET"),)},
        {"aliases": (("X", "secret"),)},
    ],
)
def test_scheme_constructor_rejects_names_not_in_canonical_form(kwargs: dict[str, object]) -> None:
    """The dataclass constructor takes canonical names only (``build`` normalises)."""
    with pytest.raises(InvalidInput):
        LabelScheme(**kwargs)  # type: ignore[arg-type]
