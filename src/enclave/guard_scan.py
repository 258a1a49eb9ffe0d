"""The cross-domain guard's content scan ("dirty word" search for classification markings).

Pure: bytes in, findings out. A :class:`MarkingScanner` is fed the content in chunks (so an
artifact of any size streams through it) and reports every marking it recognised together
with the label that marking implies. The guard refuses a release when any finding is not
dominated by the target label.

Patterns recognised for every level above the lowest, by full name and alias:
``SECRET//SI``-style banner markings, ``(S)`` / ``(TS//SI)`` portion markings, a level
alone on a banner line, and multi-word level names anywhere (``TOP SECRET``). Matching is
case-sensitive, as markings are written in capitals; deployments add their own patterns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from enclave.errors import InvalidInput
from enclave.labels import Label, LabelScheme

_OVERLAP_CHARS = 512  # a marking split across two chunks is still seen


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
        for rank, name in enumerate(scheme.levels):
            if rank == 0:
                continue
            spellings = [name] + [alias for alias, target in scheme.aliases if target == name]
            alt = "|".join(re.escape(s) for s in sorted(spellings, key=len, reverse=True))
            # Level plus compartments: banner form and portion form; compartments parsed later.
            self._patterns.append((re.compile(rf"(?<![A-Z])(?:{alt})//[A-Z0-9]+(?:/[A-Z0-9]+)*"), None))
            self._patterns.append((re.compile(rf"\((?:{alt})(?://[A-Z0-9]+(?:/[A-Z0-9]+)*)?\)"), None))
            self._patterns.append((re.compile(rf"(?m)^[ \t]*(?:{re.escape(name)})[ \t]*\r?$"), None))
            if " " in name:
                self._patterns.append((re.compile(rf"(?<![A-Z]){re.escape(name)}(?![A-Z])"), None))
        for item in extra:
            try:
                compiled = re.compile(item.pattern)
            except re.error as exc:
                raise InvalidInput(f"bad guard pattern {item.pattern!r}: {exc}") from exc
            self._patterns.append((compiled, scheme.parse(item.marking)))
        self._tail = ""
        self._findings: dict[str, Finding] = {}

    def feed(self, chunk: bytes) -> None:
        text = self._tail + chunk.decode("latin-1")
        for pattern, implied in self._patterns:
            for match in pattern.finditer(text):
                found = match.group(0).strip()
                if found not in self._findings:
                    self._findings[found] = Finding(found, implied or self._label_of(found))
        self._tail = text[-_OVERLAP_CHARS:]

    def findings(self) -> list[Finding]:
        return sorted(self._findings.values(), key=lambda f: (-f.label.rank, f.text))

    def above(self, target: Label) -> list[Finding]:
        """Findings whose label the target does not dominate: the reasons to refuse."""
        return [f for f in self.findings() if not target.dominates(f.label)]

    def _label_of(self, marking: str) -> Label:
        body = marking.strip().strip("()").strip()
        level, _, comps = body.partition("//")
        known = [c for c in comps.split("/") if c] if comps else []
        base = self._scheme.level(level)
        kept = frozenset(c for c in known if c in self._scheme.compartments)
        # An unknown compartment still marks the content as above any target: keep the
        # level and treat the unknown compartment as unreleasable by raising to top.
        if len(kept) != len(known):
            return self._scheme.top
        return Label(base.rank, base.level, kept)


def scan(scheme: LabelScheme, content: bytes, target: Label, extra: Iterable[ExtraPattern] = ()) -> list[Finding]:
    """One-shot helper: the findings in ``content`` above ``target``."""
    scanner = MarkingScanner(scheme, extra)
    scanner.feed(content)
    return scanner.above(target)
