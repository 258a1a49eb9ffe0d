"""Reading only what a session may read: the labels it dominates, and pages merged per label.

A listing that filters rows *after* reading them (or lets the database walk a table in
``seq`` order, skipping rows at labels above the session) takes longer the more such rows
there are: its time tells the session about objects it may not see (SECURITY.md §3). Instead:

* :func:`dominated_markings` works out, from the session's label alone, every label it
  dominates (each level up to its own, with each subset of its compartments);
* :func:`page_seqs` reads, for each such label, one index range of ``(label, seq)`` (newest or
  oldest first, at most ``offset + count`` rows) and merges them. No row above the session
  is read, so neither the answer nor its time depends on one;
* :func:`page_keys` does the same for any order key (``(created_at, id)``) and for listings
  read from more than one :class:`Source` (an agency's own artifacts and those shared with
  it), with :func:`count_rows` for their total and :func:`key_of` for where a cursor stands;
  a source of rows that carry no label (agencies, users) is read at the one marking None.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Row, Select, func, select, true, union_all
from sqlalchemy.orm import InstrumentedAttribute, Session

from enclave.labels import Label, LabelScheme

MAX_LABEL_SET = 4096  # a session holding 12+ compartments: labels are read from the store
MAX_LABEL_UNION = 128  # labels merged one index range each; more: one IN (SQLite caps UNIONs at 500)


def dominated_markings(scheme: LabelScheme, session: Label) -> list[str] | None:
    """Every marking ``session`` dominates, or None when there are too many to list."""
    comps = sorted(session.compartments)
    if (session.rank + 1) << len(comps) > MAX_LABEL_SET:
        return None
    subsets = [frozenset(c for i, c in enumerate(comps) if bits >> i & 1) for bits in range(1 << len(comps))]
    levels = scheme.levels[: session.rank + 1]
    return [Label(rank, level, subset).marking for rank, level in enumerate(levels) for subset in subsets]


def page_seqs(
    db: Session,
    seq: InstrumentedAttribute[Any],
    label: InstrumentedAttribute[Any],
    clauses: Sequence[ColumnElement[bool]],
    markings: Sequence[str | None],
    offset: int,
    count: int,
    *,
    newest_first: bool = True,
) -> list[int]:
    """The ``seq`` of one page of rows at ``markings`` (None: no label) matching ``clauses``."""
    source = Source(label, clauses)
    return [
        int(row[0])
        for row in page_keys(db, [seq], [source], markings, offset, count, newest_first=newest_first)
    ]


@dataclass(frozen=True)
class Source:
    """Where a listing's rows come from: a table, or a join read through another table's label
    (an artifact shared with the agency, through its share). ``scope`` says whose rows they
    are (an agency's), ``filters`` what the listing asks for; ``label`` is read one index range
    per marking. Rows that carry no label (``label`` None: agencies, users) are read from
    ``joined``, their table, at the one marking None."""

    label: InstrumentedAttribute[Any] | None
    scope: Sequence[ColumnElement[bool]]
    filters: Sequence[ColumnElement[bool]] = ()
    joined: FromClause | None = None

    def __post_init__(self) -> None:
        if self.label is None and self.joined is None:
            raise ValueError("a source of unlabelled rows names the table they are read from")

    def narrowed(self, *clauses: ColumnElement[bool]) -> Source:
        return dataclasses.replace(self, filters=[*self.filters, *clauses])

    def select(self, *columns: Any) -> Select[Any]:
        query = select(*columns)
        return query if self.joined is None else query.select_from(self.joined)


def page_keys(
    db: Session,
    keys: Sequence[InstrumentedAttribute[Any]],
    sources: Sequence[Source],
    markings: Sequence[str | None],
    offset: int,
    count: int,
    *,
    newest_first: bool = True,
) -> list[Row[Any]]:
    """The ``keys`` of one page of rows of ``sources`` at ``markings``, ordered by the keys
    (newest first: descending): one index range of at most ``offset + count`` rows per
    source and marking, merged."""
    if not markings or not sources:
        return []
    order = [k.desc() if newest_first else k.asc() for k in keys]
    per_label = len(markings) <= MAX_LABEL_UNION
    parts = [
        src.select(*keys).where(*src.scope, *src.filters, _at(src.label, group)).order_by(*order)
        for src in sources
        for group in ([[m] for m in markings] if per_label else [markings])
    ]
    if len(parts) == 1:
        return list(db.execute(parts[0].offset(offset).limit(count)).all())
    subqueries = [part.limit(offset + count).subquery() for part in parts]
    merged = union_all(*(select(*(sub.c[k.key] for k in keys)) for sub in subqueries)).subquery()
    columns = [merged.c[k.key] for k in keys]
    query = select(*columns).order_by(*(c.desc() if newest_first else c.asc() for c in columns))
    return list(db.execute(query.offset(offset).limit(count)).all())


def count_rows(db: Session, sources: Sequence[Source], markings: Sequence[str | None]) -> int:
    """How many rows of ``sources`` lie at ``markings`` (read on the same index ranges)."""
    if not markings:
        return 0
    total = 0
    for src in sources:
        query = src.select(func.count()).where(*src.scope, *src.filters, _at(src.label, markings))
        total += int(db.execute(query).scalar_one())
    return total


def key_of(
    db: Session,
    keys: Sequence[InstrumentedAttribute[Any]],
    sources: Sequence[Source],
    markings: Sequence[str | None],
    which: ColumnElement[bool],
) -> tuple[Any, ...] | None:
    """The keys of the row ``which`` names, if it is one of ``sources``' (their scope, not
    their filters) at ``markings``; None otherwise, whether it is missing or above."""
    if not markings:
        return None
    for src in sources:
        row = db.execute(src.select(*keys).where(*src.scope, which, _at(src.label, markings))).first()
        if row is not None:
            return tuple(row)
    return None


def readable_markings(
    db: Session,
    scheme: LabelScheme,
    session: Label,
    sources: Sequence[Source],
    allowed: Callable[[str], bool],
) -> list[str]:
    """Every label the session may read rows of ``sources`` at: worked out from its label, or,
    for a session holding too many compartments to list, the labels the rows have. Each is
    checked by ``allowed`` (the policy gate)."""
    markings = dominated_markings(scheme, session)
    if markings is None:
        found: set[str] = set()
        for src in (src for src in sources if src.label is not None):
            found.update(
                m for m in db.execute(src.select(src.label).distinct().where(*src.scope)).scalars() if m
            )
        markings = sorted(m for m in found if session.dominates(scheme.parse(m)))
    return [m for m in markings if allowed(m)]


def _at(label: InstrumentedAttribute[Any] | None, markings: Sequence[str | None]) -> ColumnElement[bool]:
    if label is None:  # rows without a label: the listing's scope alone says which
        return true()
    named = [m for m in markings if m is not None]
    if len(named) == len(markings):
        return label == named[0] if len(named) == 1 else label.in_(named)
    return label.is_(None) if not named else label.in_(named) | label.is_(None)
