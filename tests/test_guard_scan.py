"""The guard's dirty-word scan: what counts as a marking, what it implies, and streaming."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.errors import InvalidInput
from enclave.guard_scan import ExtraPattern, Finding, MarkingScanner, scan
from enclave.labels import DEFAULT_SCHEME, Label, LabelScheme

S = DEFAULT_SCHEME


def L(marking: str) -> Label:
    return S.parse(marking)


def found(
    content: bytes | list[bytes], scheme: LabelScheme = S, extra: tuple[ExtraPattern, ...] = ()
) -> set[str]:
    """The findings as ``text -> marking`` strings, fed in the given chunks."""
    scanner = MarkingScanner(scheme, extra)
    for chunk in [content] if isinstance(content, bytes) else content:
        scanner.feed(chunk)
    return {f"{f.text} -> {f.label}" for f in scanner.findings()}


def labels(content: bytes | list[bytes], scheme: LabelScheme = S) -> set[str]:
    """Just the implied labels."""
    return {s.split(" -> ")[1] for s in found(content, scheme)}


# -- what is a marking -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"SECRET//SI", "SECRET//SI -> SECRET//SI"),
        (b"header\nTOP SECRET//SI/TK\nbody", "TOP SECRET//SI/TK -> TOP SECRET//SI/TK"),
        (b"TS//SI summary of the plan", "TS//SI -> TOP SECRET//SI"),
        (b"S//TK", "S//TK -> SECRET//TK"),
        (b"(TS//SI) The plan is ...", "(TS//SI) -> TOP SECRET//SI"),
        (b"(S) The plan is ...", "(S) -> SECRET"),
        (b"(CUI) The plan is ...", "(CUI) -> CUI"),
        (b"(SECRET//HCS) The plan is ...", "(SECRET//HCS) -> SECRET//HCS"),
        (b"SECRET\n\nbody text", "SECRET -> SECRET"),
        (b"body\n   CUI  \r\nfooter", "CUI -> CUI"),
        (b"body\nTOP SECRET", "TOP SECRET -> TOP SECRET"),
        (b"this document is TOP SECRET and more", "TOP SECRET -> TOP SECRET"),
        (b"the TOP SECRET, report", "TOP SECRET -> TOP SECRET"),
    ],
)
def test_markings_are_found(content: bytes, expected: str) -> None:
    assert expected in found(content)


@pytest.mark.parametrize(
    ("content", "label"),
    [
        (b"SECRET // SI", "SECRET//SI"),  # spaces around '//', as LabelScheme.parse accepts
        (b"TOP SECRET//SI / TK", "TOP SECRET//SI/TK"),
        (b"TOP  SECRET//SI", "TOP SECRET//SI"),  # two spaces must not hide the level
        (b"the TOP\nSECRET plan", "TOP SECRET"),  # wrapped running text
        (b"( TOP SECRET // TK )", "TOP SECRET//TK"),
    ],
)
def test_full_level_names_are_matched_as_loosely_as_parse_reads_them(content: bytes, label: str) -> None:
    assert label in labels(content)
    assert scan(S, content, L("CUI//SI/TK/HCS/G"))  # never released below the true level


@pytest.mark.parametrize(
    "content",
    [
        b"the secret sauce",
        b"Secretary of Energy",
        b"Top Secret is a film",
        b"SECRETARY",
        b"TOPSECRET",
        b"SECRETS\n",
        b"S\n",  # an alias alone on a line is too common a word to be a marking
        b"TS\n",
        b"x = S // 2",  # floor division, not a marking
        b"n = (TS // 4)",
        b"ITS//SI",
        b"(SS)",
        b"UNCLASSIFIED\n(U) nothing here\nU//SI",  # the lowest level is never a finding
        b"",
    ],
)
def test_innocuous_text_is_not_a_marking(content: bytes) -> None:
    assert found(content) == set()
    assert scan(S, content, S.bottom) == []


def test_bytes_that_are_not_utf8_are_still_scanned() -> None:
    assert "SECRET//SI" in labels(b"\xff\xfe\x00garbage SECRET//SI \x80\x81")


def test_findings_are_highest_first_and_deduplicated() -> None:
    scanner = MarkingScanner(S)
    scanner.feed(b"(S) one\n(S) two\nSECRET//TK\nTS//SI\n(CUI)")
    findings = scanner.findings()
    assert [f.text for f in findings] == ["TS//SI", "(S)", "SECRET//TK", "(CUI)"]
    assert findings[0] == Finding("TS//SI", L("TOP SECRET//SI"))


# -- target dominance --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "target", "refused"),
    [
        (b"SECRET\n", "SECRET", False),
        (b"SECRET\n", "TOP SECRET", False),
        (b"SECRET\n", "CUI", True),
        (b"(S) and (CUI)", "CUI", True),
        (b"(CUI)", "CUI", False),
        (b"SECRET//SI", "SECRET//SI", False),
        (b"SECRET//SI/TK", "SECRET//SI", True),  # compartment above the target
        (b"SECRET//SI/TK", "TOP SECRET//SI", True),
        (b"SECRET//SI/TK", "TOP SECRET//SI/TK", False),
        (b"(TS//SI)", "SECRET//SI", True),
        (b"TOP SECRET", "SECRET//SI/TK/HCS/G", True),
        (b"nothing to see", "UNCLASSIFIED", False),
    ],
)
def test_target_must_dominate_every_finding(content: bytes, target: str, refused: bool) -> None:
    assert bool(scan(S, content, L(target))) is refused


@pytest.mark.parametrize(
    "content", [b"SECRET//NOFORN", b"TOP SECRET//SI-G/TK", b"(TS//SI-G)", b"S//SI/ZZ", b"CUI//SP-PRVCY"]
)
def test_unknown_compartment_is_above_any_target(content: bytes) -> None:
    """Unknown compartments (including sub-compartments like SI-G) are kept, not dropped."""
    assert scan(S, content, S.top)
    for target in ("TOP SECRET//SI/TK", "SECRET//SI"):
        assert scan(S, content, L(target))


def test_unknown_compartment_keeps_the_level_and_the_known_compartments() -> None:
    scanner = MarkingScanner(S)
    scanner.feed(b"body SECRET//SI/NOFORN body")
    by_text = {f.text: f.label for f in scanner.findings()}
    assert by_text["SECRET//SI/NOFORN"] == Label(2, "SECRET", frozenset({"SI", "NOFORN"}))


def test_dissemination_controls_after_a_second_double_slash_are_not_compartments() -> None:
    assert labels(b"TOP SECRET//SI//REL TO USA") == {"TOP SECRET", "TOP SECRET//SI", "SECRET//SI"}


def test_custom_scheme_with_hyphenated_compartment() -> None:
    scheme = LabelScheme.build(
        ["PUBLIC", "INTERNAL", "RESTRICTED"], ["HR", "FIN-EU"], aliases={"R": "RESTRICTED"}
    )
    assert labels(b"R//HR/FIN-EU", scheme) == {"RESTRICTED//FIN-EU/HR"}
    assert scan(scheme, b"INTERNAL//FIN-EU", scheme.parse("RESTRICTED//HR"))
    assert not scan(scheme, b"INTERNAL//FIN-EU", scheme.parse("INTERNAL//FIN-EU"))
    assert found(b"PUBLIC\n(PUBLIC)", scheme) == set()


# -- streaming ---------------------------------------------------------------------------
def chunked(content: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted(cuts)
    return [content[i:j] for i, j in zip([0, *cuts], [*cuts, len(content)], strict=True)]


MARKINGS = [
    (b"TOP SECRET//SI/TK", "TOP SECRET//SI/TK"),
    (b"(TS//HCS)", "TOP SECRET//HCS"),
    (b"(S)", "SECRET"),
    (b"\nSECRET\n", "SECRET"),
    (b" TOP SECRET ", "TOP SECRET"),
    (b"SECRET // SI / G", "SECRET//G/SI"),
    (b"S//SI-G", "SECRET//SI-G"),
]
filler = st.text(alphabet="abcdefghij klmnopqrstuvwxyz.,\n", max_size=700).map(str.encode)


@given(filler, st.sampled_from(MARKINGS), filler, st.data())
def test_a_marking_split_across_chunks_is_still_found(
    before: bytes, marking: tuple[bytes, str], after: bytes, data: st.DataObject
) -> None:
    text, label = marking
    content = before + b" " + text + b" " + after
    cuts = data.draw(st.lists(st.integers(0, len(content)), max_size=4), label="cuts")
    assert label in labels(chunked(content, cuts))


PIECES = [
    b"TOP SECRET//SI/TK",
    b"SECRET//SI",
    b"/TK",
    b"(TS//HCS)",
    b"(S)",
    b"SECRET",
    b"TOP",
    b"TS",
    b"XS//SI",
    b"ABCSECRET",
    b"ABCTOP SECRET",
    b"SECRETARY",
    b"CUI//SP-PRVCY",
    b"word",
    b" ",
    b"\n",
    b"//",
]
documents = st.lists(st.sampled_from(PIECES), max_size=120).map(b"".join)


@given(documents, st.lists(st.integers(0, 2000), max_size=6))
def test_chunking_never_changes_the_findings(content: bytes, cuts: list[int]) -> None:
    cuts = [c for c in cuts if c <= len(content)]
    assert found(chunked(content, cuts)) == found(content)


def test_every_two_chunk_split_of_a_long_document_gives_the_same_findings() -> None:
    """Exhaustive over split points, so the overlap window's start falls on every char,
    including inside ``XS//SI`` and ``ABCSECRET`` (which must not turn into markings)."""
    pad = b"lorem ipsum dolor sit amet " * 8
    content = b"\n".join(
        [pad, b"XS//SI", b"ABCSECRET", pad, b"TOP SECRET//SI/TK", pad, b"(S) end", pad, b"SECRET"]
    )
    whole = found(content)
    assert whole == {
        "TOP SECRET//SI/TK -> TOP SECRET//SI/TK",
        "TOP SECRET -> TOP SECRET",
        "SECRET//SI/TK -> SECRET//SI/TK",
        "(S) -> SECRET",
        "SECRET -> SECRET",
    }
    for cut in range(len(content) + 1):
        assert found([content[:cut], content[cut:]]) == whole, cut


def test_a_level_at_the_end_of_a_chunk_waits_for_what_follows() -> None:
    assert found([b"hi\nSECRET", b" SAUCE\n"]) == set()
    assert found([b"x SECRET//SI", b"/TK y"]) == {"SECRET//SI/TK -> SECRET//SI/TK"}
    assert found([b"x SECRET//SI"]) == {"SECRET//SI -> SECRET//SI"}  # the end of the data ends it


def test_findings_midstream_count_what_has_arrived() -> None:
    scanner = MarkingScanner(S)
    scanner.feed(b"intro\nSECRET")
    assert [f.text for f in scanner.findings()] == ["SECRET"]
    assert scanner.above(L("CUI"))
    scanner.feed(b"ARY of state\n")
    assert scanner.findings() == []


def test_many_small_chunks_of_a_large_artifact() -> None:
    content = b"x" * 100_000 + b"\n(TS//SI) tail\n" + b"y" * 10_000
    chunks = [content[i : i + 7] for i in range(0, len(content), 7)]
    assert found(chunks) == {"(TS//SI) -> TOP SECRET//SI", "TS//SI -> TOP SECRET//SI"}


# -- extra patterns ----------------------------------------------------------------------
def test_extra_patterns_imply_their_marking() -> None:
    extra = (ExtraPattern(r"\bNOFORN\b", "SECRET"), ExtraPattern(r"Project [A-Z]{4}", "TOP SECRET//TK"))
    assert found(b"see NOFORN and Project ABCD.", extra=extra) == {
        "NOFORN -> SECRET",
        "Project ABCD -> TOP SECRET//TK",
    }
    assert scan(S, b"Project WXYZ", L("TOP SECRET"), extra)
    assert not scan(S, b"Project WXYZ", L("TOP SECRET//TK"), extra)
    assert found(b"NOFORNIA", extra=extra) == set()


@pytest.mark.parametrize("content", [b"SECRET//SI", b"SECRET//SI" + b"." * 2000])
def test_extra_pattern_cannot_lower_a_built_in_finding_and_its_higher_label_is_kept(content: bytes) -> None:
    higher = (ExtraPattern(r"SECRET//SI", "TOP SECRET//SI"),)
    assert found(content, extra=higher) == {"SECRET//SI -> SECRET//SI", "SECRET//SI -> TOP SECRET//SI"}
    assert scan(S, content, L("SECRET//SI"), higher)
    lower = (ExtraPattern(r"SECRET//SI", "UNCLASSIFIED"),)
    assert scan(S, content, L("CUI"), lower)


def test_extra_pattern_matching_the_empty_string_is_ignored() -> None:
    assert found(b"abc", extra=(ExtraPattern(r"x*", "SECRET"),)) == set()
    assert found(b"axxb", extra=(ExtraPattern(r"x*", "SECRET"),)) == {"xx -> SECRET"}


@pytest.mark.parametrize("pattern", ["(unclosed", "[a-", "*x", "(?P<n>a)(?P<n>b)"])
def test_bad_extra_regex_is_invalid_input(pattern: str) -> None:
    with pytest.raises(InvalidInput, match="bad guard pattern"):
        MarkingScanner(S, [ExtraPattern(pattern, "SECRET")])


def test_extra_pattern_with_a_bad_marking_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="unknown"):
        MarkingScanner(S, [ExtraPattern("x", "CONFIDENTIAL")])


# -- disguised markings (issue 12) -------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "label"),
    [
        ("secret//si", "SECRET//SI"),
        ("Top Secret//tk", "TOP SECRET//TK"),
        ("ts//si", "TOP SECRET//SI"),
        ("s // tk", "SECRET//TK"),
        ("(secret)", "SECRET"),
        ("(s//si)", "SECRET//SI"),
        ("SECRET/SI", "SECRET//SI"),
        ("secret/si/tk", "SECRET//SI/TK"),
        ("TOP SECRET/NOFORN", "TOP SECRET//NOFORN"),
        ("TS/SI", "TOP SECRET//SI"),
        ("This is classified SECRET.", "SECRET"),
        ("classification level: top secret", "TOP SECRET"),
        ("marked as secret", "SECRET"),
        ("ЅЕСRЕТ//SI", "SECRET//SI"),  # Cyrillic look-alikes
        ("ΤΟΡ SECRET//SI", "TOP SECRET//SI"),  # Greek look-alikes
        ("SE\u200bCR\u200dET//\u2060SI", "SECRET//SI"),  # zero-width characters
        ("SECRET\u00a0//\u202fSI", "SECRET//SI"),  # no-break spaces
        ("ＳＥＣＲＥＴ／／ＳＩ", "SECRET//SI"),  # full-width forms
        ("S\u0308ECRET//SI", "SECRET//SI"),  # a combining mark
        ("S\x00E\x00C\x00R\x00E\x00T\x00/\x00/\x00S\x00I\x00", "SECRET//SI"),  # UTF-16 read as bytes
        ("TOPSECRET//SI", "SECRET//SI"),
    ],
)
def test_disguised_markings_are_found(content: str, label: str) -> None:
    assert label in labels(content.encode())
    assert scan(S, content.encode(), L("CUI"))


@pytest.mark.parametrize(
    "content",
    [
        b"x = s//2; y = ts // n",  # floor division in lower case
        b"(S/MIME) mail; the file(s); S/N 1234",
        b"the secret/public key pair; Secret/Private",
        b"the mail was classified as spam",
        b"UNCLASSIFIED//FOUO and unclassified secret recipes",
        b"declassified SECRETS",
    ],
)
def test_disguise_rules_leave_ordinary_text_alone(content: bytes) -> None:
    assert scan(S, content, S.bottom) == []


@given(st.sampled_from(["SECRET//SI", "TOP SECRET//TK", "(S//SI)", "TS//SI", "SECRET/SI"]), st.data())
def test_any_case_and_invisible_characters_never_hide_a_marking(marking: str, data: st.DataObject) -> None:
    text = "".join(
        data.draw(st.sampled_from([c.lower(), c.upper()]))
        + data.draw(st.sampled_from(["", "", "\u200b", "\u00ad", "\ufeff"]))
        for c in marking
    )
    assert scan(S, f"see {text} annex".encode(), L("CUI")), text
