"""Per-job work folders for services that give a job inputs and take outputs from it.

``<home>/work/<label digest>/<job id>/`` (0700), grouped by label like the executor's
sandboxes, so folders of different labels are never shared. Unlike the sandbox, the work
folder outlives one attempt: a requeued training job finds its checkpoints there. It is
removed when the job's service has taken what it needs from it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from enclave.services.context import Context
from enclave.services.jobs import label_key
from enclave.store.models import Job


def path(ctx: Context, job: Job) -> Path:
    return ctx.settings.home / "work" / label_key(job.label) / job.id


def make(ctx: Context, job: Job) -> Path:
    folder = path(ctx, job)
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def remove(ctx: Context, job: Job) -> None:
    _rmtree(path(ctx, job))


def clear(folder: Path) -> None:
    """Make ``folder`` an empty 0700 directory."""
    _rmtree(folder)
    folder.mkdir(mode=0o700)


def _rmtree(folder: Path) -> None:
    if not folder.exists():
        return
    for sub in [folder, *folder.rglob("*")]:  # staged inputs are read-only: make them removable
        if sub.is_dir() and not sub.is_symlink():
            sub.chmod(0o700)
    shutil.rmtree(folder, ignore_errors=True)
