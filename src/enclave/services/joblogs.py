"""Reading a job's output through the policy gate: from the sandbox while it runs, from its
encrypted log artifact once it has ended."""

from __future__ import annotations

from enclave.audit.events import AuditEvent
from enclave.executors.registry import make_executor
from enclave.services.context import Context
from enclave.services.jobs import resource_of, visible_job
from enclave.services.unit import Actor, entry_for, unit
from enclave.store.models import Agency, Artifact

MAX_CHUNK_BYTES = 1 << 20


def read(ctx: Context, actor: Actor, job_id: str, stream: str, offset: int = 0) -> tuple[str, int]:
    with unit(ctx) as u:
        job = visible_job(u, actor, job_id)
        agency = u.session.get_one(Agency, job.agency_id).name
        u.record(
            entry_for(
                actor,
                AuditEvent.JOB_LOGS_READ,
                resource_of(ctx, job, agency),
                job_id,
                details={"stream": stream},
            )
        )
        art_id = (job.log_artifacts or {}).get(stream)
        art = u.session.get(Artifact, art_id) if art_id else None
        handle, region = job.handle, job.region
    if art is not None:
        data = b"".join(ctx.blobs.read(art.label, art.blob_key))[offset : offset + MAX_CHUNK_BYTES]
    elif handle and region:
        executor = make_executor(
            ctx.fleet.region(region), ctx.settings.home / "sandboxes", ctx.sessions, ctx.now
        )
        path = executor.log_paths(handle)[stream]
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read(MAX_CHUNK_BYTES)
        except FileNotFoundError:
            data = b""
    else:
        data = b""
    return data.decode("utf-8", errors="replace"), offset + len(data)
