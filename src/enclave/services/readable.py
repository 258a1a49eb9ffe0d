"""Reading only what a session may read: the labels it dominates, and pages merged per label.

A listing that filters rows *after* reading them (or lets the database walk a table in
``seq`` order, skipping rows at labels above the session) takes longer the more such rows
there are: its time tells the session about objects it may not see (SECURITY.md §3). Instead:

* :func:`dominated_markings` works out, from the session's label alone, every label it
  dominates (each level up to its own, with each subset of its compartments);
* :func:`page_seqs` reads, for each such label, one index range of ``(label, seq)`` (newest or
  oldest first, at most ``offset + count`` rows) and merges them. No row above the session
  is read, so neither the answer nor its time depends on one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, select, union_all
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
    if not markings:
        return []
    order = seq.desc() if newest_first else seq.asc()
    if len(markings) > MAX_LABEL_UNION:
        query = select(seq).where(*clauses, _at(label, markings)).order_by(order)
        return list(db.execute(query.offset(offset).limit(count)).scalars())
    parts = [
        select(seq).where(*clauses, _at(label, [m])).order_by(order).limit(offset + count).subquery()
        for m in markings
    ]
    merged = union_all(*(select(part.c[seq.key]) for part in parts)).subquery()
    column = merged.c[seq.key]
    query = select(column).order_by(column.desc() if newest_first else column.asc())
    return list(db.execute(query.offset(offset).limit(count)).scalars())


def _at(label: InstrumentedAttribute[Any], markings: Sequence[str | None]) -> ColumnElement[bool]:
    named = [m for m in markings if m is not None]
    if len(named) == len(markings):
        return label == named[0] if len(named) == 1 else label.in_(named)
    return label.is_(None) if not named else label.in_(named) | label.is_(None)
