"""One normal form for text that is screened for classification markings.

Pure: a string in, a string out. The guard (:mod:`enclave.guard_scan`) and the gateway's
guardrails read text through :func:`normalise`, so that what a person reads as ``SECRET//SI``
is matched as ``SECRET//SI`` however it was written:

* compatibility forms are folded (Unicode NFKC): full-width ``ＳＥＣＲＥＴ``, ligatures,
  mathematical letters, superscripts;
* combining marks are dropped (``S̈ECRET`` reads as ``SECRET``): the text is decomposed
  (NFKD), its non-spacing marks removed, then composed again;
* invisible characters are removed: format characters (Unicode category Cf: zero-width
  space and joiners, the byte-order mark, soft hyphen, bidirectional controls) and control
  characters other than the white-space ones (so UTF-16 read as single bytes, ``S\\0E\\0...``,
  still reads ``SE...``);
* every kind of space (category Zs: no-break, thin, ideographic ...; and the blank fillers
  that render as spaces) becomes one ASCII space, line and paragraph separators a newline;
* confusables: the Cyrillic and Greek letters drawn like Latin ones (``С``, ``Е``, ``Т``,
  ``Ѕ``, ``Ι`` ...) become those Latin letters.

Case is *kept*: :func:`fold` gives the case-folded form. The scanner compares the structured
forms of a marking (``secret//si``, ``(secret)``, ``classified secret``) without regard to
case, and keeps capitals significant only where they are the whole signal (a level alone on
a line, a level name in running text), so that "Top Secret is a film" is not a marking.

Every character maps to zero or more characters independently of its neighbours, apart
from combining marks (removed, so they cannot join across a cut either): normalising the
pieces of a text and joining them gives the normal form of the whole, which is what lets a
stream be normalised chunk by chunk.
"""

from __future__ import annotations

import sys
import unicodedata
from functools import cache

# Cyrillic and Greek letters that are drawn like Latin ones (upper and lower case).
CONFUSABLES: dict[str, str] = {
    # Cyrillic capitals
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "Х": "X", "У": "Y", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q",
    "Ԝ": "W", "Ү": "Y", "Һ": "H", "Ӏ": "I", "Ԁ": "D", "Ԍ": "G",
    # Cyrillic small letters
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "х": "x", "у": "y", "ѕ": "s",
    "і": "i", "ј": "j", "һ": "h", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ԁ": "d", "ɡ": "g",
    # Greek capitals
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C", "Ϳ": "J",
    # Greek small letters
    "ο": "o", "ι": "i", "κ": "k", "ν": "v", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "ϲ": "c", "ϳ": "j",
}  # fmt: skip

# Characters that render as blank space but are letters or symbols by category.
_BLANKS = "\u115f\u1160\u3164\uffa0\u2800"
# Control characters that are white space and stay.
_KEPT_CONTROLS = "\t\n\r\x0b\x0c"


@cache
def _table() -> dict[int, str | None]:
    """The per-character map (built once, on first use: it walks every code point)."""
    table: dict[int, str | None] = {}
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        category = unicodedata.category(char)
        if category in ("Cf", "Mn") or (category == "Cc" and char not in _KEPT_CONTROLS):
            table[code] = None
        elif category == "Zs" or char in _BLANKS:
            table[code] = " "
        elif category in ("Zl", "Zp"):
            table[code] = "\n"
    for char, latin in CONFUSABLES.items():
        table[ord(char)] = latin
    return table


@cache
def _ascii_table() -> dict[int, None]:
    return {
        c: None for c in range(0x80) if chr(c) not in _KEPT_CONTROLS and unicodedata.category(chr(c)) == "Cc"
    }


def normalise(text: str) -> str:
    """``text`` in the normal form described in the module docstring (case kept)."""
    if text.isascii():  # the common case: only control characters can need removing
        return text.translate(_ascii_table())
    text = unicodedata.normalize("NFKD", text).translate(_table())
    # Composing again, then the map once more: NFKC may produce characters the map changes.
    return unicodedata.normalize("NFKC", text).translate(_table())


def fold(text: str) -> str:
    """The normal form, case-folded (for comparisons that ignore case)."""
    return normalise(text).casefold()


def removable(char: str) -> bool:
    """Whether ``char`` vanishes in the normal form (it does not count as visible text)."""
    return _table().get(ord(char), char) is None
