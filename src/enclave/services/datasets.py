"""Datasets: versioned, labelled artifacts of kind ``dataset``.

Everything else — streamed, size-limited, checksummed upload; encryption at rest with the
label's key; the policy gate on every read; soft, audited delete — is the artifact's. A new
upload under an existing name becomes its next version; ids name one version.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from enclave.services import artifacts
from enclave.services.context import Context
from enclave.services.listing import Window
from enclave.services.unit import Actor

KIND = "dataset"


async def upload(
    ctx: Context,
    actor: Actor,
    name: str,
    content: AsyncIterator[bytes],
    *,
    expected_sha256: str | None = None,
    project: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    meta = {"description": description[:1000]} if description else {}
    return await artifacts.put(
        ctx,
        actor,
        name,
        content,
        expected_sha256=expected_sha256,
        project=project,
        kind=KIND,
        meta=meta,
        versioned=True,
    )


def list_visible(ctx: Context, actor: Actor, limit: int = 1000) -> list[dict[str, Any]]:
    return artifacts.list_visible(ctx, actor, KIND, limit)


def page(ctx: Context, actor: Actor, window: Window = Window()) -> dict[str, Any]:
    """One page of the dataset versions the session may read, newest first."""
    return artifacts.page(ctx, actor, KIND, window)


def show(ctx: Context, actor: Actor, dataset_id: str) -> dict[str, Any]:
    return artifacts.show(ctx, actor, dataset_id, kind=KIND)


def open_content(ctx: Context, actor: Actor, dataset_id: str) -> tuple[dict[str, Any], Iterator[bytes]]:
    return artifacts.open_content(ctx, actor, dataset_id, kind=KIND)


def delete(ctx: Context, actor: Actor, dataset_id: str) -> None:
    artifacts.delete(ctx, actor, dataset_id, kind=KIND)
