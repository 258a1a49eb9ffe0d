"""What every `list` command shares: `--limit`, `--page`, `--cursor` and `--all`, and the
footer under a table ("showing 1-100 of 2010, newest first; next: --page 2", or "by name"
where the list is in that order); and :func:`list_command`, the whole `list` command of a
group whose list route has at most one filter."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from enclave.cli import output as out
from enclave.cli.common import JsonOpt, OutputOpt, WideOpt, client, console, emit
from enclave.errors import InvalidInput

if TYPE_CHECKING:
    from enclave.client import Client

LimitOpt = typer.Option(100, "--limit", min=1, max=10_000, help="How many a page")
PageOpt = typer.Option(None, "--page", min=1, help="Which page (1: the first)")
CursorOpt = typer.Option(None, "--cursor", help="Start after this one (the 'next' a page printed)")
AllOpt = typer.Option(False, "--all", help="Every page, not just one")


class Paging:
    """Which page a `list` command asks for (from its options); ``order``: the list's, as the
    footer says it."""

    def __init__(
        self, limit: int, page: int | None, cursor: str | None, every: bool, order: str = "newest first"
    ) -> None:
        if page is not None and (cursor is not None or every):
            raise InvalidInput("--page cannot be combined with --cursor or --all")
        self.limit, self.page, self.cursor, self.every, self.order = limit, page, cursor, every, order
        self.offset = (page - 1) * limit if page else 0

    def fetch(self, api: Client, path: str, **params: Any) -> dict[str, Any]:
        """The page asked for of the list route ``path`` (``params``: its filters), or every
        page (``--all``): ``{"items", "total", "next_cursor"}``."""
        if self.every:
            items = list(api.iter_pages(path, self.limit, **params))
            return {"items": items, "total": len(items), "next_cursor": None}
        return api.page(path, self.limit, offset=self.offset, cursor=self.cursor, **params)

    def footer(self, result: dict[str, Any]) -> None:
        """Where the page stands in the whole, and how to ask for the next."""
        count, total, next_cursor = len(result["items"]), result["total"], result["next_cursor"]
        next_page = (self.page or 1) + 1 if self.cursor is None else None
        if count:
            where = (
                f"{self.offset + 1}-{self.offset + count} of {total}" if next_page else f"{count} of {total}"
            )
        else:
            where = f"none of {total}"
        more = ""
        if next_cursor:
            more = f"; next: --page {next_page}" if next_page else f"; next: --cursor {next_cursor}"
        console.print(f"showing {where}, {self.order}{more}", style="dim", highlight=False)

    def emit(
        self,
        result: dict[str, Any],
        columns: list[str],
        title: str,
        output: str | None,
        as_json: bool = False,
        *,
        wide: bool = False,
        rows: list[dict[str, Any]] | None = None,
    ) -> None:
        """The page as `-o`/`--json` ask (``rows``: the items flattened for a table), with the
        footer under a table only (machine formats stay just the items)."""
        fmt = out.check_format(output, as_json)
        items = result["items"]
        emit(
            items if rows is None else rows,
            columns,
            title,
            fmt,
            wide=wide,
            raw=None if rows is None else items,
        )
        if fmt in ("table", "wide"):
            self.footer(result)


def list_command(
    app: typer.Typer,
    path: str,
    columns: list[str],
    title: str,
    doc: str,
    *,
    flat: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    where: tuple[str, Any] | None = None,
    order: str = "newest first",
    command: str = "list",
    within: tuple[str, Any] | None = None,
) -> None:
    """Add ``app``'s `list` command (or ``command``): a page of the list route ``path``
    (``flat``: an item as a table row; ``order``: the route's), with the paging options and,
    with ``where`` (the route's filter, the option that sets it), that filter; with
    ``within`` (a name in ``path``, the argument that gives it), that argument."""

    def show(as_json: bool, output: str | None, wide: bool, pages: Paging, of: str, **params: Any) -> None:
        with client() as api:
            result = pages.fetch(api, path.format(**{within[0]: of}) if within else path, **params)
        rows = None if flat is None else [flat(item) for item in result["items"]]
        pages.emit(result, columns, title, output, as_json, wide=wide, rows=rows)

    name, option = where or ("", typer.Option(None))
    argument = within[1] if within else typer.Argument("")

    def list_(
        as_json: bool = JsonOpt,
        output: str | None = OutputOpt,
        wide: bool = WideOpt,
        limit: int = LimitOpt,
        page: int | None = PageOpt,
        cursor: str | None = CursorOpt,
        all_: bool = AllOpt,
        only: str | None = option,
        of: str = argument,
    ) -> None:
        params = {name: only or None} if name else {}
        show(as_json, output, wide, Paging(limit, page, cursor, all_, order), of, **params)

    unused = {"only"} if not name else set()  # no filter: no option for one; no argument likewise
    unused |= {"of"} if not within else set()
    if unused:
        signature = inspect.signature(list_)
        kept = [p for p in signature.parameters.values() if p.name not in unused]
        list_.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
    list_.__doc__ = doc
    app.command(command)(list_)
