"""The cross-domain guard's content scan ("dirty word" search for classification markings).

Pure: text in, findings out. A :class:`MarkingScanner` is fed text (or bytes, read as UTF-8
with any byte that is not UTF-8 read as Windows-1252) in chunks, so content of any size
streams through it; it reports every marking it recognised with the label that marking
implies. The guard refuses a release when any finding is not dominated by the target label.
What the scanner is fed is first put in :mod:`enclave.text_normalise`'s normal form
(compatibility forms folded, invisible characters removed, every space a space, Cyrillic and
Greek look-alikes as Latin), so ``ЅЕСRЕТ\\u200b//\\u00a0SI`` is ``SECRET// SI``.
:mod:`enclave.guard_content` decides what bytes *are* (encodings, archives, documents, base64)
and feeds this scanner the text inside them.

Forms recognised for every level above the lowest (``F`` a full level name, ``A`` an alias):

=============================  ===========================  ==================================
form                           example                      case
=============================  ===========================  ==================================
banner, ``//`` compartments    ``SECRET//SI``, ``F // X``    any case; any compartment
``/``-separated compartments   ``SECRET/SI``, ``secret/tk``  any case with the scheme's own
                                                            compartments; capitals with any
portion                        ``(S)``, ``(TS//SI)``,        full names any case; aliases in
                               ``(secret//si)``             capitals, or with known compartments
alias banner                   ``TS//SI``, ``s//si``         capitals with any compartment; any
                                                            case with the scheme's compartments
a level alone on a line        ``SECRET``                   capitals
a multi-word level anywhere    ``TOP SECRET``               capitals
inline, after a cue word       ``classified SECRET.``,      any case (cue: classified,
                               ``classification: secret``   classification, marked, marking)
=============================  ===========================  ==================================

Capitals stay significant only where they are the whole signal, so ordinary prose ("the
secret sauce", "Top Secret is a film") and code (``x = S // 2``, ``n = (TS // 4)``,
``(S/MIME)``) are not markings; a lower-case alias counts only with a compartment the scheme
knows (``s//si`` is a marking, ``s//n`` floor division). Full level names are matched as
loosely as :meth:`LabelScheme.parse` reads them (any run of white space between words, spaces
around ``//`` and ``/``).

The scan errs towards refusing: a compartment the scheme does not know (``SI-G``,
``NOFORN``) is kept in the finding's label, so no label of the scheme dominates it. Where
the chunks fall does not change the findings for markings shorter than the overlap window
(512 chars): the window keeps one extra char of context for look-behinds and ``^``, and a
match that ends near the end of the data so far waits for the data that follows it.
"""

from __future__ import annotations

import codecs
import copy
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from enclave.errors import InvalidInput
from enclave.labels import Label, LabelScheme
from enclave.text_normalise import normalise

_OVERLAP_CHARS = 512  # a marking split across two chunks is still seen
_SETTLE_CHARS = 256  # a match ending this close to the end of the data so far waits for more
_COMPARTMENT = r"[A-Z0-9][A-Z0-9-]*"
_END = r"(?![A-Za-z0-9-])"  # a compartment ends here
_CUES = r"classified|classification|marked|marking"
_CUE_FILLERS = r"as|at|is|of|the|level|marking"


def _compartments(space: str) -> str:
    """One or more compartments separated by '/', with ``space`` allowed around each '/'."""
    return rf"{_COMPARTMENT}(?:{space}/{space}{_COMPARTMENT})*"


def _words(name: str) -> str:
    """A level name as a pattern, any run of white space between its words."""
    return r"\s+".join(re.escape(word) for word in name.split())


def _alternation(names: Iterable[str]) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


# Bytes that are not UTF-8 are read as Windows-1252 (what such text most often is); the five
# bytes that code page leaves undefined stay the C1 controls of Latin-1.
_UNDEFINED_1252 = {0x81, 0x8D, 0x8F, 0x90, 0x9D}
ESCAPED_BYTES: dict[int, str] = {
    0xDC00 + b: (chr(b) if b in _UNDEFINED_1252 else bytes([b]).decode("cp1252")) for b in range(0x80, 0x100)
}


class TextDecoder:
    """Bytes to text, incrementally: UTF-8, and any byte that is not as Windows-1252."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")

    def decode(self, data: bytes, final: bool = False) -> str:
        text = self._decoder.decode(data, final)
        return text.translate(ESCAPED_BYTES) if not text.isascii() else text

    def pending(self) -> str:
        """The bytes held back for a character not complete yet, as if the data ended here."""
        held = self._decoder.getstate()[0]
        return held.decode("utf-8", "surrogateescape").translate(ESCAPED_BYTES) if held else ""


@dataclass(frozen=True)
class Finding:
    text: str  # the matched marking, as written (normalised)
    label: Label  # the label it implies


@dataclass(frozen=True)
class ExtraPattern:
    pattern: str  # regular expression
    marking: str  # the label a match implies, e.g. "SECRET"


class MarkingScanner:
    """Streams content and collects classification markings."""

    def __init__(self, scheme: LabelScheme, extra: Iterable[ExtraPattern] = ()) -> None:
        self._scheme = scheme
        # (pattern, the label a match implies or None to read it from the match, a word any
        # match contains in lower case or None): a pattern whose word is absent is not run.
        self._patterns: list[tuple[re.Pattern[str], Label | None, str | None]] = []
        for rank, name in enumerate(scheme.levels):
            if rank > 0:
                self._add_level(name)
        for item in extra:
            try:
                compiled = re.compile(item.pattern)
            except re.error as exc:
                raise InvalidInput(f"bad guard pattern {item.pattern!r}: {exc}") from exc
            self._patterns.append((compiled, scheme.parse(item.marking), None))
        self._level_re = re.compile(
            rf"\s*({'|'.join(_words(n) for n in sorted(self._names(), key=len, reverse=True))})",
            re.IGNORECASE,
        )
        self.longest_marking = max(
            len(Label(0, n, scheme.compartments).marking) for n in (*scheme.levels, *self._names())
        )
        self._tail = ""
        self._context = 0  # leading chars of the tail kept only as context (look-behind, '^')
        self._findings: dict[tuple[str, Label], Finding] = {}
        self._decoder = TextDecoder()

    def _names(self) -> list[str]:
        return [*self._scheme.levels, *(alias for alias, _target in self._scheme.aliases)]

    def _add_level(self, name: str) -> None:
        scheme = self._scheme
        full, word = _words(name), name.split()[0].lower()
        loose, tight = _compartments(r"[ \t]*"), _compartments("")
        known = rf"(?:{_alternation(scheme.compartments)}){_END}" if scheme.compartments else r"(?!)"
        known_loose, known_tight = rf"{known}(?:[ \t]*/[ \t]*{known})*", rf"{known}(?:/{known})*"
        # Full level names: banner and portion forms in any case, compartments parsed later.
        # The banner needs no word boundary before it ("TOPSECRET//SI", "xSECRET//SI").
        self._add(rf"{full}[ \t]*//[ \t]*{loose}", re.IGNORECASE, word)
        self._add(rf"\([ \t]*{full}(?:[ \t]*//?[ \t]*{loose})?[ \t]*\)", re.IGNORECASE, word)
        # '/'-separated: the scheme's compartments in any case, any compartment in capitals.
        self._add(rf"(?<![A-Z]){full}[ \t]*/(?!/)[ \t]*{known_loose}", re.IGNORECASE, word)
        self._add(
            rf"(?<![A-Za-z]){full}[ \t]*/(?!/)[ \t]*[A-Z][A-Z0-9-]*(?:[ \t]*/[ \t]*[A-Z][A-Z0-9-]*)*{_END}",
            0,
            word,
        )
        # Inline, after a cue word ("classified SECRET.", "classification level: secret").
        self._add(
            rf"(?<![A-Z])(?:{_CUES})(?:[ \t]+(?:{_CUE_FILLERS}))*[ \t]*[:=-]?[ \t]*(?P<m>{full})(?![A-Z])",
            re.IGNORECASE,
            word,
        )
        aliases = [a for a, target in scheme.aliases if target == name]
        if aliases:
            alt = _alternation(aliases)
            # Short aliases only in their tight form in capitals (S//X), so that S // 2 is not
            # a marking; in any case, or spaced, only with compartments the scheme knows.
            self._add(rf"(?<![A-Z])(?:{alt})//{tight}")
            self._add(rf"(?<![A-Z])(?:{alt})/(?!/){known_tight}")
            self._add(rf"(?<![A-Za-z0-9_])(?:{alt})[ \t]*//[ \t]*{known_loose}", re.IGNORECASE)
            self._add(rf"\((?:{alt})(?://{tight}|/{known_tight})?\)")
            self._add(rf"\([ \t]*(?:{alt})[ \t]*//?[ \t]*{known_loose}[ \t]*\)", re.IGNORECASE)
        # Bare level names: capitals are the signal.
        self._add(rf"(?m)^[ \t]*{full}[ \t]*\r?$", 0, word)
        if len(name.split()) > 1:
            self._add(rf"(?<![A-Z]){full}(?![A-Z])", 0, word)

    def _add(self, pattern: str, flags: int = 0, word: str | None = None) -> None:
        self._patterns.append((re.compile(pattern, flags), None, word))

    def fresh(self) -> MarkingScanner:
        """A scanner with the same patterns and nothing seen yet (build once, scan often)."""
        clone = copy.copy(self)
        clone._tail, clone._context, clone._findings = "", 0, {}
        clone._decoder = TextDecoder()
        return clone

    def feed(self, chunk: bytes) -> None:
        """Bytes, read as UTF-8 (a character cut between two chunks is joined up), any byte
        that is not UTF-8 as Windows-1252."""
        self.feed_text(self._decoder.decode(chunk))

    def feed_text(self, chunk: str) -> None:
        self.feed_normalised(normalise(chunk))

    def feed_normalised(self, chunk: str) -> None:
        """Text already in :func:`~enclave.text_normalise.normalise`'s form."""
        text = self._tail + chunk
        for start, end, finding in self._matches(text, self._context):
            # A match close to the end of what has arrived may still change with the text that
            # follows ("SECRET//SI/" then "TK"; a level that turns out not to end its line). If
            # it lies wholly in the tail kept below, the next feed or findings() takes it then.
            if end > len(text) - _SETTLE_CHARS and start >= len(text) - _OVERLAP_CHARS:
                continue
            self._findings.setdefault((finding.text, finding.label), finding)
        keep = _OVERLAP_CHARS + 1  # plus one char of context
        if len(text) > keep:
            self._tail, self._context = text[-keep:], 1
        else:
            self._tail = text

    def findings(self) -> list[Finding]:
        """Every marking seen so far, highest label first, as if the content ended here."""
        found = dict(self._findings)
        tail = self._tail + normalise(self._decoder.pending())
        for _start, _end, finding in self._matches(tail, self._context):
            found.setdefault((finding.text, finding.label), finding)
        return sorted(found.values(), key=lambda f: (-f.label.rank, f.text, f.label.marking))

    def above(self, target: Label) -> list[Finding]:
        """Findings whose label the target does not dominate: the reasons to refuse."""
        return [f for f in self.findings() if not target.dominates(f.label)]

    def _matches(self, text: str, start: int) -> Iterator[tuple[int, int, Finding]]:
        """Every match in ``text`` from ``start`` (earlier chars are context for look-behind and
        '^'). Findings are keyed by text *and* label: an extra pattern may give a text that a
        built-in pattern also matches a higher label, and the higher one must not be lost."""
        lower = text.lower()
        for pattern, implied, word in self._patterns:
            if word is not None and word not in lower:
                continue
            for match in pattern.finditer(text, start):
                named = match.groupdict().get("m")
                found = (named if named is not None else match.group(0)).strip()
                if found:  # an extra pattern may match the empty string
                    yield match.start(), match.end(), Finding(found, implied or self._label_of(found))

    def _label_of(self, marking: str) -> Label:
        """The label a built-in pattern's match implies: its level, then its compartments
        (after ``//`` or ``/``), in capitals."""
        body = marking.strip()
        if body.startswith("(") and body.endswith(")"):
            body = body[1:-1]
        head = self._level_re.match(body)
        if head is None:  # cannot happen for a built-in pattern's match; refuse rather than pass
            return Label(len(self._scheme.levels), body.upper(), frozenset({body.upper()}))
        base = self._scheme.level(head.group(1))
        rest = body[head.end() :].strip()
        comps = rest[2:] if rest.startswith("//") else rest[1:] if rest.startswith("/") else ""
        # Unknown compartments are kept: the label then lies outside the scheme, so no target
        # dominates it and the content can never be released on the strength of this scan.
        return Label(
            base.rank, base.level, frozenset(c.strip().upper() for c in comps.split("/") if c.strip())
        )


def scan(
    scheme: LabelScheme, content: bytes, target: Label, extra: Iterable[ExtraPattern] = ()
) -> list[Finding]:
    """One-shot helper: the findings in ``content`` above ``target``."""
    scanner = MarkingScanner(scheme, extra)
    scanner.feed(content)
    return scanner.above(target)
