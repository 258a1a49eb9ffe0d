"""Security labels: hierarchical levels plus compartments, as in ``TOP SECRET//SI/TK``.

Pure: no I/O, no clock. A :class:`LabelScheme` knows which levels (in order) and which
compartments exist; it parses markings into :class:`Label` values and formats them back.
Labels form a lattice under *dominance*: ``a`` dominates ``b`` when ``a``'s level is at
least ``b``'s and ``a`` holds every compartment of ``b``. Unknown levels or compartments
are errors, never silently dropped — dropping a compartment would lower a label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from enclave.errors import InvalidInput

DEFAULT_LEVELS: tuple[str, ...] = ("UNCLASSIFIED", "CUI", "SECRET", "TOP SECRET")
DEFAULT_COMPARTMENTS: tuple[str, ...] = ("SI", "TK", "HCS", "G")
DEFAULT_ALIASES: dict[str, str] = {"U": "UNCLASSIFIED", "S": "SECRET", "TS": "TOP SECRET"}

_COMPARTMENT_RE = re.compile(r"^[A-Z][A-Z0-9-]{0,15}$")
MAX_MARKING_CHARS = 256


@dataclass(frozen=True, order=False)
class Label:
    """A level (its rank in the scheme and its name) and a set of compartments."""

    rank: int
    level: str
    compartments: frozenset[str] = field(default_factory=frozenset)

    def dominates(self, other: Label) -> bool:
        return self.rank >= other.rank and self.compartments >= other.compartments

    @property
    def marking(self) -> str:
        if not self.compartments:
            return self.level
        return f"{self.level}//{'/'.join(sorted(self.compartments))}"

    def __str__(self) -> str:
        return self.marking


@dataclass(frozen=True)
class LabelScheme:
    """The ordered levels and the known compartments of one deployment."""

    levels: tuple[str, ...] = DEFAULT_LEVELS
    compartments: frozenset[str] = frozenset(DEFAULT_COMPARTMENTS)
    aliases: tuple[tuple[str, str], ...] = tuple(DEFAULT_ALIASES.items())

    def __post_init__(self) -> None:
        if not self.levels:
            raise InvalidInput("a label scheme needs at least one level")
        if len(set(self.levels)) != len(self.levels):
            raise InvalidInput("label scheme levels must be distinct")
        for name in self.levels:
            if not name or name != _normalize(name) or "/" in name:
                raise InvalidInput(f"level name {name!r} must be non-empty upper case without '/'")
        for comp in self.compartments:
            if not _COMPARTMENT_RE.match(comp):
                raise InvalidInput(f"compartment name {comp!r} must be 1-16 upper-case letters/digits")
        seen: set[str] = set()
        for alias, target in self.aliases:
            # An alias that is not in canonical form could never match, one that repeats is
            # ambiguous and one that is also a level name would be shadowed: all three are
            # configuration mistakes that would otherwise be ignored without a word.
            if not alias or alias != _normalize(alias) or "/" in alias:
                raise InvalidInput(f"alias {alias!r} must be non-empty upper case without '/'")
            if alias in self.levels:
                raise InvalidInput(f"alias {alias!r} is already a level name")
            if alias in seen:
                raise InvalidInput(f"alias {alias!r} is defined twice")
            seen.add(alias)
            if target not in self.levels:
                raise InvalidInput(f"alias {alias!r} names unknown level {target!r}")

    @classmethod
    def build(
        cls,
        levels: Sequence[str] = DEFAULT_LEVELS,
        compartments: Iterable[str] = DEFAULT_COMPARTMENTS,
        aliases: dict[str, str] | None = None,
    ) -> LabelScheme:
        """A scheme from loosely written names (any case, extra spaces).

        With ``aliases`` left out, the default aliases (``U``, ``S``, ``TS``) are kept for the
        levels the scheme has and no other. Aliases given explicitly must all name a level
        of the scheme: an alias for a missing level is an error, never silently dropped.
        """
        levels_n = tuple(_normalize(level) for level in levels)
        if aliases is None:
            kept = tuple((a, t) for a, t in DEFAULT_ALIASES.items() if t in levels_n and a not in levels_n)
        else:
            kept = tuple((_normalize(a), _normalize(t)) for a, t in aliases.items())
        return cls(levels_n, frozenset(_normalize(c) for c in compartments), kept)

    # -- construction ------------------------------------------------------------------
    def level(self, name: str, compartments: Iterable[str] = ()) -> Label:
        canonical = self._level_name(_normalize(name))
        comps = frozenset(_normalize(c) for c in compartments)
        unknown = sorted(comps - self.compartments)
        if unknown:
            raise InvalidInput(f"unknown compartment(s) {', '.join(unknown)}")
        return Label(self.levels.index(canonical), canonical, comps)

    def parse(self, marking: str) -> Label:
        """Parse ``LEVEL`` or ``LEVEL//COMP/COMP``; raises InvalidInput on anything else."""
        if not isinstance(marking, str) or not marking.strip():
            raise InvalidInput("a label marking must be a non-empty string")
        if len(marking) > MAX_MARKING_CHARS:
            raise InvalidInput("label marking is too long")
        parts = _normalize(marking).split("//")
        if len(parts) > 2:
            raise InvalidInput(f"label {marking!r} has more than one '//' section")
        comps: list[str] = []
        if len(parts) == 2:
            comps = [c.strip() for c in parts[1].split("/")]
            if any(not c for c in comps):
                raise InvalidInput(f"label {marking!r} has an empty compartment")
        return self.level(parts[0].strip(), comps)

    @property
    def bottom(self) -> Label:
        return Label(0, self.levels[0], frozenset())

    @property
    def top(self) -> Label:
        return Label(len(self.levels) - 1, self.levels[-1], self.compartments)

    # -- lattice -----------------------------------------------------------------------
    def lub(self, *labels: Label) -> Label:
        """Least upper bound: highest level, union of compartments (bottom if empty)."""
        if not labels:
            return self.bottom
        rank = max(lbl.rank for lbl in labels)
        return Label(rank, self.levels[rank], frozenset().union(*(lbl.compartments for lbl in labels)))

    def glb(self, *labels: Label) -> Label:
        """Greatest lower bound: lowest level, intersection of compartments (top if empty)."""
        if not labels:
            return self.top
        rank = min(lbl.rank for lbl in labels)
        comps = frozenset.intersection(*(lbl.compartments for lbl in labels))
        return Label(rank, self.levels[rank], comps)

    def _level_name(self, name: str) -> str:
        if name in self.levels:
            return name
        for alias, target in self.aliases:
            if alias == name:
                return target
        raise InvalidInput(f"unknown classification level {name!r} (known: {', '.join(self.levels)})")


def _normalize(text: str) -> str:
    return " ".join(text.upper().split())


DEFAULT_SCHEME = LabelScheme.build()
