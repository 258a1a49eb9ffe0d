"""Reading a job's output through the policy gate: from the sandbox while it runs, from its
encrypted log artifact once it has ended."""

from __future__ import annotations

from sqlalchemy.orm import Session

from enclave.audit.events import AuditEvent
from enclave.services.context import Context
from enclave.services.jobs import resource_of, visible_job
from enclave.services.regions import executor_for
from enclave.services.unit import Actor, entry_for, unit
from enclave.store.models import Agency, Artifact, Job

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
        art = _kept(u.session, job, stream)
        handle, region = job.handle, job.region
    data: bytes | None = None
    if art is None and handle and region:
        executor = executor_for(ctx, ctx.fleet.region(region))
        try:
            with executor.log_paths(handle)[stream].open("rb") as fh:
                fh.seek(offset)
                data = fh.read(MAX_CHUNK_BYTES)
        except FileNotFoundError:
            # The job ended and its output was kept (and the sandbox removed) since we looked.
            with ctx.read_sessions() as session:
                art = _kept(session, session.get_one(Job, job.seq), stream)
    if data is None:
        data = (
            b"".join(ctx.blobs.read(art.label, art.blob_key))[offset : offset + MAX_CHUNK_BYTES]
            if art
            else b""
        )
    return data.decode("utf-8", errors="replace"), offset + len(data)


def _kept(session: Session, job: Job, stream: str) -> Artifact | None:
    """The encrypted log artifact kept for a job's stream once the job has ended."""
    art_id = (job.log_artifacts or {}).get(stream)
    return session.get(Artifact, art_id) if art_id else None
