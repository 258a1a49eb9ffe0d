"""The cross-domain guard's content scan ("dirty word" search for classification markings).

Pure: bytes in, findings out. A :class:`MarkingScanner` is fed the content in chunks (so an
artifact of any size streams through it) and reports every marking it recognised together
with the label that marking implies. The guard refuses a release when any finding is not
dominated by the target label.

Patterns recognised for every level above the lowest, by full name and alias:
``SECRET//SI``-style banner markings, ``(S)`` / ``(TS//SI)`` portion markings, a level
alone on a banner line, and multi-word level names anywhere (``TOP SECRET``). Matching is
case-sensitive, as markings are written in capitals; deployments add their own patterns.
Full level names are matched as loosely as :meth:`LabelScheme.parse` reads them (any run of
white space between words, spaces around ``//`` and ``/``); short aliases only in their
tight form, so that code such as ``S // 2`` is not taken for a marking.

The scan errs towards refusing: a compartment the scheme does not know (``SI-G``,
``NOFORN``) is kept in the finding's label, so no label of the scheme dominates it. Where
the chunks fall does not change the findings for markings shorter than the overlap window
(512 chars): the window keeps one extra char of context for look-behinds and ``^``, and a
match that ends near the end of the data so far waits for the data that follows it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from enclave.errors import InvalidInput
from enclave.labels import Label, LabelScheme

_OVERLAP_CHARS = 512  # a marking split across two chunks is still seen
_SETTLE_CHARS = 256  # a match ending this close to the end of the data so far waits for more
_COMPARTMENT = r"[A-Z0-9][A-Z0-9-]*"


def _compartments(space: str) -> str:
    """One or more compartments separated by '/', with ``space`` allowed around each '/'."""
    return rf"{_COMPARTMENT}(?:{space}/{space}{_COMPARTMENT})*"


def _words(name: str) -> str:
    """A level name as a pattern, any run of white space between its words."""
    return r"\s+".join(re.escape(word) for word in name.split())


@dataclass(frozen=True)
class Finding:
    text: str  # the matched marking, as written
    label: Label  # the label it implies


@dataclass(frozen=True)
class ExtraPattern:
    pattern: str  # regular expression
    marking: str  # the label a match implies, e.g. "SECRET"


class MarkingScanner:
    """Streams content and collects classification markings."""

    def __init__(self, scheme: LabelScheme, extra: Iterable[ExtraPattern] = ()) -> None:
        self._scheme = scheme
        self._patterns: list[tuple[re.Pattern[str], Label | None]] = []
        loose, tight = _compartments(r"[ \t]*"), _compartments("")
        for rank, name in enumerate(scheme.levels):
            if rank == 0:
                continue
            full = _words(name)
            # Level plus compartments: banner form and portion form; compartments parsed later.
            self._add(rf"(?<![A-Z]){full}[ \t]*//[ \t]*{loose}")
            self._add(rf"\([ \t]*{full}(?:[ \t]*//[ \t]*{loose})?[ \t]*\)")
            aliases = sorted((a for a, target in scheme.aliases if target == name), key=len, reverse=True)
            if aliases:
                alt = "|".join(re.escape(a) for a in aliases)
                self._add(rf"(?<![A-Z])(?:{alt})//{tight}")
                self._add(rf"\((?:{alt})(?://{tight})?\)")
            self._add(rf"(?m)^[ \t]*{full}[ \t]*\r?$")
            if len(name.split()) > 1:
                self._add(rf"(?<![A-Z]){full}(?![A-Z])")
        for item in extra:
            try:
                compiled = re.compile(item.pattern)
            except re.error as exc:
                raise InvalidInput(f"bad guard pattern {item.pattern!r}: {exc}") from exc
            self._patterns.append((compiled, scheme.parse(item.marking)))
        self._tail = ""
        self._context = 0  # leading chars of the tail kept only as context (look-behind, '^')
        self._findings: dict[tuple[str, Label], Finding] = {}

    def _add(self, pattern: str) -> None:
        self._patterns.append((re.compile(pattern), None))

    def fresh(self) -> MarkingScanner:
        """A scanner with the same patterns and nothing seen yet (build once, scan often)."""
        clone = copy.copy(self)
        clone._tail, clone._context, clone._findings = "", 0, {}
        return clone

    def feed(self, chunk: bytes) -> None:
        text = self._tail + chunk.decode("latin-1")
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
        for _start, _end, finding in self._matches(self._tail, self._context):
            found.setdefault((finding.text, finding.label), finding)
        return sorted(found.values(), key=lambda f: (-f.label.rank, f.text, f.label.marking))

    def above(self, target: Label) -> list[Finding]:
        """Findings whose label the target does not dominate: the reasons to refuse."""
        return [f for f in self.findings() if not target.dominates(f.label)]

    def _matches(self, text: str, start: int) -> Iterator[tuple[int, int, Finding]]:
        """Every match in ``text`` from ``start`` (earlier chars are context for look-behind and
        '^'). Findings are keyed by text *and* label: an extra pattern may give a text that a
        built-in pattern also matches a higher label, and the higher one must not be lost."""
        for pattern, implied in self._patterns:
            for match in pattern.finditer(text, start):
                found = match.group(0).strip()
                if found:  # an extra pattern may match the empty string
                    yield match.start(), match.end(), Finding(found, implied or self._label_of(found))

    def _label_of(self, marking: str) -> Label:
        body = marking.strip()
        if body.startswith("(") and body.endswith(")"):
            body = body[1:-1]
        level, _, comps = body.partition("//")
        base = self._scheme.level(level)
        # Unknown compartments are kept: the label then lies outside the scheme, so no target
        # dominates it and the content can never be released on the strength of this scan.
        return Label(base.rank, base.level, frozenset(c.strip() for c in comps.split("/") if c.strip()))


def scan(
    scheme: LabelScheme, content: bytes, target: Label, extra: Iterable[ExtraPattern] = ()
) -> list[Finding]:
    """One-shot helper: the findings in ``content`` above ``target``."""
    scanner = MarkingScanner(scheme, extra)
    scanner.feed(content)
    return scanner.above(target)
