"""Guardrails around a model call: classification markings and personal data.

Pure: text in, findings or masked text out. Markings use the cross-domain guard's scanner
(one compiled scanner per label scheme); PII is matched by conservative patterns for
e-mail addresses, North American phone numbers and US social security numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from enclave.guard_scan import ExtraPattern, Finding, MarkingScanner
from enclave.labels import Label, LabelScheme

PII_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("EMAIL", re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}(?![\w-])")),
    ("SSN", re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)")),
    (
        "PHONE",
        re.compile(r"(?<![\w+])(?:\+?1[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]\d{4}(?!\d)"),
    ),
)


def mask_pii(text: str) -> tuple[str, int]:
    """``text`` with personal data replaced by ``[EMAIL]``, ``[SSN]``, ``[PHONE]``; and how many."""
    total = 0
    for tag, pattern in PII_PATTERNS:
        text, n = pattern.subn(f"[{tag}]", text)
        total += n
    return text, total


@lru_cache(maxsize=8)
def _scanner_parts(scheme: LabelScheme, extra: tuple[ExtraPattern, ...]) -> MarkingScanner:
    return MarkingScanner(scheme, extra)


def markings_above(
    scheme: LabelScheme, texts: Iterable[str], ceiling: Label, extra: tuple[ExtraPattern, ...] = ()
) -> list[Finding]:
    """Markings in ``texts`` that ``ceiling`` does not dominate (the reasons to refuse)."""
    scanner = _scanner_parts(scheme, extra).fresh()
    # Each text ends with a newline; all in one feed (the scanner finds the same in any
    # chunking, and each feed is a pass of every pattern).
    texts = list(texts)
    if texts:
        scanner.feed(("\n".join(texts) + "\n").encode("utf-8", errors="replace"))
    return scanner.above(ceiling)
