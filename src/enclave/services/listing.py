"""One page of a listing, with the total and a cursor (issue 13): a labelled one (artifacts,
datasets, models, transfers, endpoints) newest first (:func:`page`), or one of rows that carry
no label (agencies, projects, users, clearance requests, worker credentials) in its own order
(:func:`page_unlabelled`).

Rows are read through :mod:`enclave.services.readable`: only those at labels the session may
read (its agency's, or shared with it), one index range of ``(label, created_at, id)`` per
label. So the page, the total, the cursor and the time they take never depend on a row the
session cannot read.

A page is asked for by ``offset`` or by ``cursor``: the id of the last row of the previous
page (``next_cursor``), which keeps its place while rows are added. A cursor is an id the
session may read, never a number that would count rows it may not; any other cursor is
refused with the same words, whether it is missing, above the session or not an id.

Rows without a label are read through the same :class:`Source`: whose rows the caller may see
is the source's ``scope``, a clause of the query (for administration, the agency it
administers: :func:`enclave.policy.administered_agency`), never a filter after reading.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import literal, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from enclave.errors import InvalidInput
from enclave.policy import Action, Resource, decide
from enclave.services import readable
from enclave.services.readable import Source
from enclave.services.unit import Actor, Unit

MAX_LIMIT = 10_000
MAX_OFFSET = 10_000_000
MAX_CURSOR_CHARS = 64
CURSOR_REFUSED = "cursor is not one this listing gave: start again without it"
T = TypeVar("T")


@dataclass(frozen=True)
class Window:
    """Which page: at most ``limit`` rows, after ``offset`` rows or after the row ``cursor``."""

    limit: int = 1000
    offset: int = 0
    cursor: str | None = None

    def check(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise InvalidInput(f"offset must be between 0 and {MAX_OFFSET}")


@dataclass(frozen=True)
class Page:
    """The ids of one page, in order; the total the listing matches; whether more follow."""

    ids: list[str]
    total: int
    more: bool

    def answer(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """``{"items", "count", "total", "next_cursor"}`` (null on the last page)."""
        return {
            "items": items,
            "count": len(items),
            "total": self.total,
            "next_cursor": self.ids[-1] if self.more and self.ids else None,
        }

    def ordered(self, rows: Sequence[T], id_of: Callable[[T], str]) -> list[T]:
        """``rows`` (loaded by id, in any order) in the page's order."""
        by_id = {id_of(r): r for r in rows}
        return [by_id[i] for i in self.ids if i in by_id]


def markings(u: Unit, actor: Actor, kind: str, sources: Sequence[Source]) -> list[str]:
    """The labels the session may read ``kind`` objects of its agency at (checked by the gate)."""
    s = actor.subject

    def allowed(marking: str) -> bool:
        res = Resource(kind=kind, label=u.ctx.scheme.parse(marking), agency=s.agency)
        return decide(s, Action.READ, res).allowed

    return readable.readable_markings(u.session, u.ctx.scheme, s.session, sources, allowed)


def page(
    u: Unit,
    actor: Actor,
    kind: str,
    keys: Sequence[InstrumentedAttribute[Any]],
    sources: Sequence[Source],
    window: Window,
) -> Page:
    """One page of the rows of ``sources`` (objects of ``kind``) at the labels the session may
    read, newest first by ``keys`` (the last of them the row's id, which a cursor names)."""
    window.check()
    return _window(u, keys, sources, markings(u, actor, kind, sources), window, newest_first=True)


def page_unlabelled(
    u: Unit,
    keys: Sequence[InstrumentedAttribute[Any]],
    sources: Sequence[Source],
    window: Window,
    *,
    newest_first: bool = False,
) -> Page:
    """One page of rows that carry no label (sources with ``label`` None), ordered by ``keys``
    (ascending unless ``newest_first``; the last of them an id, which a cursor names). Which
    rows the caller may see is each source's scope, in the query, so the page, the total and
    a cursor never count, nor find, another row."""
    window.check()
    return _window(u, keys, sources, [None], window, newest_first=newest_first)


def _window(
    u: Unit,
    keys: Sequence[InstrumentedAttribute[Any]],
    sources: Sequence[Source],
    at_markings: Sequence[str | None],
    window: Window,
    *,
    newest_first: bool,
) -> Page:
    total = readable.count_rows(u.session, sources, at_markings)
    if window.cursor is not None:
        at = None
        if len(window.cursor) <= MAX_CURSOR_CHARS:
            at = readable.key_of(u.session, keys, sources, at_markings, keys[-1] == window.cursor)
        if at is None:
            raise InvalidInput(CURSOR_REFUSED)
        here, there = tuple_(*keys), tuple_(*(literal(v, k.type) for k, v in zip(keys, at, strict=True)))
        sources = [src.narrowed(here < there if newest_first else here > there) for src in sources]
    rows = readable.page_keys(
        u.session, keys, sources, at_markings, window.offset, window.limit + 1, newest_first=newest_first
    )
    ids = [str(row[-1]) for row in rows]
    return Page(ids[: window.limit], total, len(ids) > window.limit)
