"""Guardrails around a model call: classification markings and personal data.

Pure: text in, findings or masked text out. Markings use the cross-domain guard's scanner
(one compiled scanner per label scheme), which reads text in the guard's normal form
(:mod:`enclave.text_normalise`: zero-width characters, look-alike letters, odd spaces and
case do not hide a marking). PII is matched by conservative patterns for e-mail addresses,
North American phone numbers and US social security numbers.

What is screened is every string of a call, not only the message texts: :func:`strings`
walks a JSON body (keys too), so ``tools``, ``tool_calls``, function arguments and an error
body are read like the prompt. A streamed answer is screened across its chunks by
:class:`StreamScreen`: text is held back until enough follows it that no marking can still
be forming across the cut.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from enclave.guard_scan import ExtraPattern, Finding, MarkingScanner
from enclave.labels import Label, LabelScheme
from enclave.text_normalise import removable

PII_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("EMAIL", re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}(?![\w-])")),
    ("SSN", re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)")),
    (
        "PHONE",
        re.compile(r"(?<![\w+])(?:\+?1[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]\d{4}(?!\d)"),
    ),
)
PII_MAX_CHARS = 254  # no address or number the patterns match is longer (RFC 5321's address limit)


def mask_pii(text: str) -> tuple[str, int]:
    """``text`` with personal data replaced by ``[EMAIL]``, ``[SSN]``, ``[PHONE]``; and how many."""
    total = 0
    for tag, pattern in PII_PATTERNS:
        text, n = pattern.subn(f"[{tag}]", text)
        total += n
    return text, total


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included, depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def mask_strings(value: Any) -> Any:
    """A JSON value with personal data masked in every string value."""
    if isinstance(value, str):
        return mask_pii(value)[0]
    if isinstance(value, dict):
        return {key: mask_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_strings(item) for item in value]
    return value


@lru_cache(maxsize=8)
def _scanner_parts(scheme: LabelScheme, extra: tuple[ExtraPattern, ...]) -> MarkingScanner:
    return MarkingScanner(scheme, extra)


def scanner(scheme: LabelScheme, extra: tuple[ExtraPattern, ...] = ()) -> MarkingScanner:
    """A fresh scanner (the compiled patterns are shared)."""
    return _scanner_parts(scheme, extra).fresh()


def markings_above(
    scheme: LabelScheme, texts: Iterable[str], ceiling: Label, extra: tuple[ExtraPattern, ...] = ()
) -> list[Finding]:
    """Markings in ``texts`` that ``ceiling`` does not dominate (the reasons to refuse)."""
    found = scanner(scheme, extra)
    # Each text ends with a newline; all in one feed (the scanner finds the same in any
    # chunking, and each feed is a pass of every pattern).
    texts = list(texts)
    if texts:
        found.feed_text("\n".join(texts) + "\n")
    return found.above(ceiling)


class StreamScreen:
    """Screens a streamed answer across its chunks, one channel at a time (a choice's text,
    one tool call's name or arguments ...).

    :meth:`push` takes a channel's next piece and returns the part of the channel's text that
    may go now: everything but the last ``hold`` visible characters (characters that vanish in
    the normal form, such as zero-width spaces, do not count, so padding a marking with them
    does not get its start out early). ``hold`` is at least the longest marking of the scheme
    and the longest personal datum masked, so a marking or an address that is still arriving
    is never cut in two: what goes out has been scanned with at least ``hold`` characters of
    what follows it. :meth:`end` releases the rest once the channel has ended. ``found`` is
    set (and nothing more is released) as soon as a marking above the ceiling is seen in
    any channel.
    """

    def __init__(self, marks: MarkingScanner, ceiling: Label, *, mask: bool, hold: int | None = None) -> None:
        self._template = marks
        self._ceiling = ceiling
        self._mask = mask
        self.hold = hold if hold is not None else max(2 * marks.longest_marking, PII_MAX_CHARS if mask else 0)
        self._channels: dict[tuple[Any, ...], _Channel] = {}
        self.found: list[Finding] = []

    def push(self, channel: tuple[Any, ...], piece: str) -> str:
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channels[channel] = _Channel(self._template.fresh())
        ch.pending += piece
        ch.scanner.feed_text(piece)
        if self._check(ch):
            return ""
        return self._release(ch, _cut(ch.pending, self.hold))

    def end(self, channel: tuple[Any, ...]) -> str:
        """The rest of a channel that has ended (its text is complete: nothing is held)."""
        ch = self._channels.get(channel)
        if ch is None or self._check(ch):
            return ""
        return self._release(ch, len(ch.pending))

    def open_channels(self) -> list[tuple[Any, ...]]:
        return [key for key, ch in self._channels.items() if ch.pending]

    def _check(self, ch: _Channel) -> bool:
        if not self.found:
            self.found = ch.scanner.above(self._ceiling)
        return bool(self.found)

    def _release(self, ch: _Channel, cut: int) -> str:
        if self._mask and cut < len(ch.pending):
            # Never cut through personal data: move the cut to the start of a match across it.
            for _tag, pattern in PII_PATTERNS:
                for match in pattern.finditer(ch.pending):
                    if match.start() < cut < match.end():
                        cut = match.start()
        out, ch.pending = ch.pending[:cut], ch.pending[cut:]
        return mask_pii(out)[0] if self._mask else out


class _Channel:
    def __init__(self, scanner: MarkingScanner) -> None:
        self.scanner = scanner
        self.pending = ""  # scanned, not released yet


def _cut(text: str, hold: int) -> int:
    """Where to cut ``text`` so that at least ``hold`` visible chars stay behind."""
    visible = 0
    for i in range(len(text) - 1, -1, -1):
        if not removable(text[i]):
            visible += 1
            if visible >= hold:
                return i
    return 0
