"""Training jobs: a job kind on top of the scheduler that turns datasets into a model.

A training job runs a user script (an artifact) with its input datasets staged read-only
into the job's work folder, hyperparameters in ``ENCLAVE_HPARAMS``, an output folder that
becomes a registered model when the job succeeds, a checkpoint folder kept across requeues
(so a preempted job resumes), and a metrics file streamed to ``enclave train metrics``.
The model's label is the lub of the job and everything it read (:mod:`services.models`).

The script's contract (environment of the job):
``ENCLAVE_DATA_DIR`` (one file per dataset, named by the dataset), ``ENCLAVE_DATASETS``
(JSON {name: path}), ``ENCLAVE_BASE_MODELS`` (JSON {id: folder}), ``ENCLAVE_OUTPUT_DIR``,
``ENCLAVE_CHECKPOINT_DIR``, ``ENCLAVE_METRICS_FILE`` (JSON lines with an integer "step"),
``ENCLAVE_HPARAMS`` (JSON object), ``ENCLAVE_CPUS``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from enclave import archive
from enclave.audit.events import AuditEvent
from enclave.errors import InvalidInput
from enclave.executors import outputs
from enclave.executors.base import Mount
from enclave.policy import Resource
from enclave.scheduler.model import QOS
from enclave.services import artifacts, joblist, jobs, models, workspace
from enclave.services.context import Context
from enclave.services.joblist import JobFilter
from enclave.services.jobs import JobSpec, JobState, visible_job
from enclave.services.listing import Window
from enclave.services.unit import Actor, entry_for, unit
from enclave.store.models import Artifact, Job, Model, Training

TRAINABLE = ("sklearn", "pytorch", "sentence-embeddings")
MAX_HPARAMS_BYTES = 64 * 1024
MAX_METRIC_POINTS = 10_000
MAX_METRICS_BYTES = 16 << 20  # what is read of a job's metrics file
MAX_MODEL_BYTES = 4 << 30  # the per-job output cap of a training job's model folder
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class TrainingSpec:
    name: str
    script: str  # artifact id of the training script
    model_name: str
    runtime: str
    datasets: list[str] = field(default_factory=list)
    base_models: list[str] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    walltime_s: int = 3600
    nodes: int = 1
    cpus_per_node: int = 1
    memory_mb: int = 2048
    gpus_per_node: int = 0
    region: str | None = None
    qos: QOS = QOS.NORMAL
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Launch:
    """What a job kind changes in a job's start: the real command and extra environment."""

    command: list[str]
    env: dict[str, str]
    mounts: tuple[Mount, ...] = ()  # what of its work folder the confined job sees


def submit(ctx: Context, actor: Actor, spec: TrainingSpec) -> dict[str, Any]:
    if spec.runtime not in TRAINABLE:
        raise InvalidInput(f"runtime must be one of {', '.join(TRAINABLE)}")
    if len(json.dumps(spec.hyperparameters)) > MAX_HPARAMS_BYTES:
        raise InvalidInput(f"hyperparameters must fit in {MAX_HPARAMS_BYTES} bytes of JSON")
    with unit(ctx) as u:
        script, _res = artifacts.load(u, actor, spec.script)
        lineage = models.Lineage(datasets=list(spec.datasets), base_models=list(spec.base_models))
        models.input_labels(u, actor, lineage)  # every input read through the gate
        job = jobs.add(
            u,
            actor,
            [
                JobSpec(
                    name=spec.name,
                    command=["python", _safe(script.name), *spec.args],
                    walltime_s=spec.walltime_s,
                    nodes=spec.nodes,
                    cpus_per_node=spec.cpus_per_node,
                    memory_mb=spec.memory_mb,
                    gpus_per_node=spec.gpus_per_node,
                    region=spec.region,
                    qos=spec.qos,
                    idempotency_key=spec.idempotency_key,
                    kind="train",
                )
            ],
        )[0]
        if u.session.get(Training, job["id"]) is None:  # not an idempotent repeat
            u.session.add(
                Training(
                    job_id=job["id"],
                    script_artifact_id=script.id,
                    dataset_ids=list(spec.datasets),
                    base_model_ids=list(spec.base_models),
                    hyperparameters=dict(spec.hyperparameters),
                    model_name=models._check(spec.model_name, spec.runtime),
                    runtime=spec.runtime,
                    metrics=[],
                    created_at=ctx.now(),
                )
            )
            u.record(
                entry_for(
                    actor,
                    AuditEvent.TRAINING_SUBMITTED,
                    Resource(kind="job", label=ctx.scheme.parse(job["label"]), agency=actor.subject.agency),
                    job["id"],
                    details={"script": script.id, "datasets": spec.datasets, "model_name": spec.model_name},
                )
            )
        u.session.flush()
        result = _view(job, u.session.get_one(Training, job["id"]))
    ctx.notify_jobs()
    return result


def _view(job: dict[str, Any], t: Training) -> dict[str, Any]:
    return {
        **job,
        "training": {
            "script": t.script_artifact_id,
            "datasets": t.dataset_ids,
            "base_models": t.base_model_ids,
            "hyperparameters": t.hyperparameters,
            "model_name": t.model_name,
            "runtime": t.runtime,
            "model_id": t.model_id,
            "outcome": t.outcome,
        },
    }


def show(ctx: Context, actor: Actor, job_id: str) -> dict[str, Any]:
    job = jobs.show(ctx, actor, job_id)
    with unit(ctx) as u:
        t = u.session.get(Training, job_id)
        if t is None:
            raise InvalidInput(f"job {job_id} is not a training job")
        return _view(job, t)


def list_visible(ctx: Context, actor: Actor, limit: int = 1000) -> list[dict[str, Any]]:
    """The newest ``limit`` training jobs the session may read (see :func:`page`)."""
    return list(page(ctx, actor, Window(limit))["items"])


def page(ctx: Context, actor: Actor, window: Window = Window()) -> dict[str, Any]:
    """One page of the training jobs the session may read, newest first: a page of its jobs of
    kind ``train`` (:mod:`.joblist`, read only at the labels it dominates), with what each trains."""
    found = joblist.page(ctx, actor, JobFilter(kind="train"), window.limit, window.offset, window.cursor)
    with unit(ctx) as u:
        ids = [job["id"] for job in found["items"]]
        trainings = {
            t.job_id: t for t in u.session.execute(select(Training).where(Training.job_id.in_(ids))).scalars()
        }
    items = [_view(job, trainings[job["id"]]) for job in found["items"] if job["id"] in trainings]
    return {**found, "items": items, "count": len(items)}


def metrics(ctx: Context, actor: Actor, job_id: str, since_step: int = -1) -> dict[str, Any]:
    """The metrics a training job wrote so far (live from its work folder while it runs)."""
    with unit(ctx) as u:
        row = visible_job(u, actor, job_id)
        t = u.session.get(Training, job_id)
        if t is None:
            raise InvalidInput(f"job {job_id} is not a training job")
        points = list(t.metrics) if t.outcome is not None or t.model_id else None
    if points is None:
        points = read_metrics(workspace.path(ctx, row) / "metrics.jsonl")
    return {
        "job": job_id,
        "state": row.state,
        "metrics": [p for p in points if p["step"] > since_step],
    }


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Parse a metrics file leniently: a half-written last line or a stray one is skipped."""
    points: list[dict[str, Any]] = []
    # The job wrote it: read without following links, at most MAX_METRICS_BYTES.
    lines = b"".join(outputs.chunks(path, MAX_METRICS_BYTES)).decode(errors="replace").splitlines()
    for line in lines[-MAX_METRIC_POINTS:]:
        try:
            point = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(point, dict) and isinstance(point.get("step"), int):
            points.append({k: v for k, v in point.items() if k == "step" or isinstance(v, int | float | str)})
    return points


# -- the job kind's hooks, called by the live loop -------------------------------------------
def prepare(ctx: Context, job: Job) -> Launch:
    """Stage the inputs of an attempt; keep checkpoints and metrics of earlier attempts."""
    with unit(ctx) as u:
        t = u.session.get_one(Training, job.id)
        script = u.session.get_one(Artifact, t.script_artifact_id)
        datasets = [u.session.get_one(Artifact, ds) for ds in t.dataset_ids]
        bases = [u.session.get_one(Model, m) for m in t.base_model_ids]
        hparams = dict(t.hyperparameters)
    gone = [a.id for a in (script, *datasets) if a.deleted_at is not None]
    gone += [m.id for m in bases if m.deleted_at is not None]
    if gone:
        raise InvalidInput(f"inputs deleted since submission: {', '.join(gone)}")
    folder = workspace.make(ctx, job)
    for sub in ("data", "script", "models", "output"):  # fresh for every attempt
        workspace.clear(folder / sub)
    data, script_dir, models_dir, output = (folder / s for s in ("data", "script", "models", "output"))
    (folder / "checkpoints").mkdir(mode=0o700, exist_ok=True)
    (folder / "metrics.jsonl").touch(mode=0o600, exist_ok=True)
    staged: dict[str, str] = {}
    for ds in datasets:
        name = _safe(ds.name)
        if name in staged:
            name = f"v{ds.version}-{name}"
        _decrypt(ctx, ds, data / name)
        staged[ds.name if ds.name not in staged else name] = str(data / name)
    script_path = script_dir / _safe(script.name)
    _decrypt(ctx, script, script_path)
    base_dirs: dict[str, str] = {}
    for model in bases:
        target = models_dir / model.id
        if model.builtin:
            base_dirs[model.id] = str(models.builtin_path(model.builtin))
            continue
        art = _artifact(ctx, model.artifact_id)
        archive.unpack(ctx.blobs.read(art.label, art.blob_key), target)
        base_dirs[model.id] = str(target)
    for sub in (data, script_dir, models_dir):
        sub.chmod(0o500)  # read-only inputs
    checkpoints, metrics = folder / "checkpoints", folder / "metrics.jsonl"
    mounts = (
        *(Mount(sub) for sub in (data, script_dir, models_dir)),
        *(Mount(sub, writable=True) for sub in (output, checkpoints, metrics)),
    )
    env = {
        "ENCLAVE_DATA_DIR": str(data),
        "ENCLAVE_DATASETS": json.dumps(staged),
        "ENCLAVE_BASE_MODELS": json.dumps(base_dirs),
        "ENCLAVE_OUTPUT_DIR": str(output),
        "ENCLAVE_CHECKPOINT_DIR": str(folder / "checkpoints"),
        "ENCLAVE_METRICS_FILE": str(folder / "metrics.jsonl"),
        "ENCLAVE_HPARAMS": json.dumps(hparams),
        "PYTHONUNBUFFERED": "1",
    }
    # The control plane's own interpreter: it has the frameworks the runtimes need.
    return Launch([sys.executable, str(script_path), *job.command[2:]], env, mounts)


def _artifact(ctx: Context, artifact_id: str | None) -> Artifact:
    with unit(ctx) as u:
        return u.session.get_one(Artifact, artifact_id)


def _decrypt(ctx: Context, art: Artifact, target: Path) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        for chunk in ctx.blobs.read(art.label, art.blob_key):
            fh.write(chunk)
    target.chmod(0o400)


def _safe(name: str) -> str:
    """A file name that cannot leave its folder."""
    cleaned = _SAFE_NAME.sub("_", Path(name).name).lstrip(".")
    return cleaned[:128] or "file"


def finished(ctx: Context, job: Job) -> None:
    """After a training job's terminal transition: register its model (if it succeeded),
    keep its metrics, then remove its work folder. Safe to call twice (restart recovery)."""
    with unit(ctx) as u:
        t = u.session.get(Training, job.id)
        if t is None or t.model_id is not None or t.outcome is not None:
            return
        lineage = models.Lineage(datasets=t.dataset_ids, base_models=t.base_model_ids, job=job.id)
        model_name, runtime = t.model_name, t.runtime
    folder = workspace.path(ctx, job)
    points = read_metrics(folder / "metrics.jsonl")
    model_id: str | None = None
    if job.state == JobState.COMPLETED:
        # The job wrote its output: copy what is plainly its own (no links, FIFOs or devices;
        # nothing followed out of the folder) into the control plane's hands first.
        packed, kept = folder / "model.tar.gz", folder / "model"
        try:
            outputs.copy_tree(folder / "output", kept, MAX_MODEL_BYTES)
        except InvalidInput as exc:
            model_id, why = None, str(exc)
        else:
            with packed.open("wb") as fh:
                archive.pack(kept, fh)
            model_id, why = models.register_system(
                ctx,
                packed,
                name=model_name,
                runtime=runtime,
                lineage=lineage,
                agency_id=job.agency_id,
                owner_id=job.owner_id,
            )
    else:
        why = f"the job ended {job.state}: no model registered"
    with unit(ctx) as u:
        t = u.session.get_one(Training, job.id)
        t.metrics = points
        t.model_id = model_id
        t.outcome = why or "registered"
        u.record(
            entry_for(
                None,
                AuditEvent.TRAINING_FINISHED,
                Resource(kind="job", label=ctx.scheme.parse(job.label)),
                job.id,
                details={"model": model_id, "outcome": t.outcome},
            )
        )
    workspace.remove(ctx, job)


def recover(ctx: Context) -> None:
    """Finish training jobs that ended while no control plane was there to finish them."""
    with unit(ctx) as u:
        rows = u.session.execute(
            select(Job)
            .join(Training, Training.job_id == Job.id)
            .where(
                Training.model_id.is_(None),
                Training.outcome.is_(None),
                Job.state.in_([str(s) for s in jobs.TERMINAL]),
            )
        ).scalars()
        ended = list(rows)
    for job in ended:
        finished(ctx, job)
