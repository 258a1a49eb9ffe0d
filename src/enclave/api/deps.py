"""Request dependencies: the process context and the authenticated actor."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from enclave.errors import InvalidInput, NotAuthenticated
from enclave.services import listing
from enclave.services.auth import authenticate
from enclave.services.context import Context
from enclave.services.unit import Actor


async def get_ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


async def plain_text(request: Request) -> None:
    """Refuse NUL characters in the path and the query string on every route: no name or id
    holds one, and PostgreSQL can neither store nor compare such text (it would be a 500)."""
    if "\x00" in request.scope["path"] or any(
        "\x00" in key or "\x00" in value for key, value in request.query_params.multi_items()
    ):
        raise InvalidInput("NUL characters are not allowed in the path or the query")


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("send 'Authorization: Bearer <token>'")
    return token.strip()


def current_actor(request: Request, ctx: Annotated[Context, Depends(get_ctx)]) -> Actor:
    return authenticate(ctx, bearer(request))


CtxDep = Annotated[Context, Depends(get_ctx)]
ActorDep = Annotated[Actor, Depends(current_actor)]


def page_window(
    limit: Annotated[
        int, Query(ge=1, le=listing.MAX_LIMIT, description="At most this many, in the listing's order")
    ] = 1000,
    offset: Annotated[int, Query(ge=0, le=listing.MAX_OFFSET, description="How many to skip (a page)")] = 0,
    cursor: Annotated[
        str | None,
        Query(
            max_length=listing.MAX_CURSOR_CHARS,
            description="`next_cursor` of the previous page: what follows it",
        ),
    ] = None,
) -> listing.Window:
    """Which page a list route is asked for; its answer is ``{"items", "count", "total",
    "next_cursor"}`` (``total``: all that match, never counting what the session cannot read)."""
    return listing.Window(limit, offset, cursor)


WindowDep = Annotated[listing.Window, Depends(page_window)]
