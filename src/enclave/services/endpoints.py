"""Model endpoints: a registered model deployed as replicas behind the gateway.

An endpoint lives at the label of the session that deployed it (which dominates its model's
label) in a region accredited for that label. Each replica is a job of kind ``replica``,
placed by the scheduler like any job (power cap, accreditation, capacity) and run by the
region's executor as ``python -m enclave.serving.replica``. The :class:`Supervisor` keeps
the wanted number of replicas running: it health-checks them, publishes the healthy ones to
the gateway's router, replaces replicas that end (a killed replica is restarted), and
scales between ``min_replicas`` and ``max_replicas`` on the calls in flight.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

import enclave
from enclave import archive
from enclave.audit.events import AuditEvent
from enclave.errors import Conflict, InvalidInput, NotFound
from enclave.executors import confine, outputs
from enclave.executors.base import Mount
from enclave.gateway.upstream import socket_address
from enclave.policy import Action, Resource, Subject, decide, may_place
from enclave.services import jobs, listing, models, workspace
from enclave.services.auth import subject_for
from enclave.services.context import Context
from enclave.services.jobs import TERMINAL, JobSpec, JobState
from enclave.services.listing import Window
from enclave.services.readable import Source
from enclave.services.regions import executor_for
from enclave.services.training import Launch
from enclave.services.unit import Actor, Unit, entry_for, unit
from enclave.store.models import Agency, Artifact, Endpoint, Job, Model, User

log = logging.getLogger("enclave.endpoints")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_REPLICAS = 16
REPLICA_WALLTIME_S = jobs.MAX_WALLTIME_S  # a replica that reaches it is replaced
DEFAULT_MEMORY_MB = 3072  # address space for torch / sentence-transformers (ulimit -v)
PII_MODES = ("off", "mask")
SCALE_UP_IN_FLIGHT = 4.0  # calls in flight per ready replica that ask for one more
TICK_S = 0.5
HEALTH_TIMEOUT_S = 1.0
# A replica that ends before it ever served is a failed start. Replacements wait longer after
# each one in a row (1 s, 2 s, 4 s ... 60 s); after MAX_FAILED_STARTS in a row the endpoint
# fails with the last one's exit, until its owner scales it again.
MAX_FAILED_STARTS = 5
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 60.0
STDERR_TAIL_BYTES = 2000
# What a replica's stderr says when it ran out of its address space (ulimit -v = memory_mb).
OUT_OF_MEMORY = (
    "MemoryError",
    "Cannot allocate memory",
    "std::bad_alloc",
    "out of memory",
    "failed to map segment",
)


@dataclass(frozen=True)
class DeploySpec:
    model: str
    name: str
    region: str | None = None
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    cpus_per_replica: int = 1
    memory_mb: int = DEFAULT_MEMORY_MB
    pii: str = "off"  # "mask": emails, phone numbers and SSNs masked in prompts and answers
    log_content: bool = False  # audit full prompts and answers, not only their hashes


def resource_of(ctx: Context, ep: Endpoint, agency: str) -> Resource:
    label = ctx.scheme.parse(ep.label)
    return Resource(
        kind="endpoint",
        label=label,
        agency=agency,
        accreditation=ctx.scheme.parse(ctx.fleet.region(ep.region).accreditation),
    )


def named(session: Session, agency_id: int, name: str, rank: int) -> list[Endpoint]:
    """The live endpoints of an agency with this name at a level up to ``rank`` (names are
    unique per agency and label, so there may be one per label)."""
    return list(
        session.execute(
            select(Endpoint).where(
                Endpoint.agency_id == agency_id,
                Endpoint.name == name,
                Endpoint.deleted_at.is_(None),
                Endpoint.label_rank <= rank,
            )
        ).scalars()
    )


def pick(ctx: Context, subject: Subject, candidates: list[Endpoint]) -> Endpoint | None:
    """The endpoint a name means to this session, among those it may read: the one at the
    session label, else the most classified (then newest) readable one. Endpoints the
    session may not read are never candidates, so a name taken only at a label the session
    may not read answers exactly as a name nobody took — same words, same work, no audit."""
    readable = [
        ep for ep in candidates if decide(subject, Action.READ, resource_of(ctx, ep, subject.agency)).allowed
    ]
    for ep in readable:
        if ep.label == subject.session.marking:
            return ep
    return max(readable, key=lambda ep: (ep.label_rank, ep.created_at, ep.id), default=None)


def load(u: Unit, actor: Actor, name: str, action: Action = Action.READ) -> tuple[Endpoint, Resource]:
    """An endpoint of the actor's agency by name (see :func:`pick`), through the gate."""
    ep = pick(u.ctx, actor.subject, named(u.session, actor.agency_id, name, actor.subject.session.rank))
    if ep is None:
        raise NotFound(f"endpoint {name} not found")
    res = resource_of(u.ctx, ep, actor.subject.agency)
    u.require(actor, action, res, name)
    return ep, res


def _bounds(replicas: int, low: int | None, high: int | None) -> tuple[int, int, int]:
    low = replicas if low is None else low
    high = max(replicas, low) if high is None else high
    if not 0 <= low <= high <= MAX_REPLICAS or high < 1:
        raise InvalidInput(f"replicas must satisfy 0 <= min <= max <= {MAX_REPLICAS}, max >= 1")
    return low, high, min(max(replicas, low), high)


def _pick_region(ctx: Context, spec: DeploySpec, label: Any) -> str:
    """The asked region, else the least classified region accredited for the label."""
    accredited = [
        r
        for r in ctx.fleet.regions
        if may_place(label, ctx.scheme.parse(r.accreditation))
        and any(p.cpus >= spec.cpus_per_replica and p.memory_mb >= spec.memory_mb for p in r.pools)
    ]
    if spec.region not in (None, "auto"):
        region = ctx.fleet.region(spec.region)  # InvalidInput when unknown
        if region not in accredited:
            raise InvalidInput(f"region {region.name} is not accredited for {label} or cannot hold a replica")
        return region.name
    if not accredited:
        raise InvalidInput(f"no region is accredited for {label} with room for a replica")
    return min(accredited, key=lambda r: ctx.scheme.parse(r.accreditation).rank).name


def deploy(ctx: Context, actor: Actor, spec: DeploySpec) -> dict[str, Any]:
    if not NAME.match(spec.name):
        raise InvalidInput(
            "endpoint name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if spec.pii not in PII_MODES:
        raise InvalidInput(f"pii must be one of {', '.join(PII_MODES)}")
    if not 1 <= spec.cpus_per_replica <= 256 or not 256 <= spec.memory_mb <= 1 << 22:
        raise InvalidInput("cpus_per_replica must be 1-256 and memory_mb 256-4194304")
    low, high, want = _bounds(spec.replicas, spec.min_replicas, spec.max_replicas)
    label = actor.subject.session
    with unit(ctx) as u:
        model, _ = models.load(u, actor, spec.model)
        res = Resource(kind="endpoint", label=label, agency=actor.subject.agency)
        u.require(actor, Action.CREATE, res)
        region = _pick_region(ctx, spec, label)
        models.check_region(ctx, model, region)  # a model made of pickles: only where they are allowed
        # Names are unique per agency *and label*: a name taken at a label the session may not
        # read must not answer 409 here (that would tell it the name exists up there).
        taken = u.session.execute(
            select(Endpoint.id).where(
                Endpoint.agency_id == actor.agency_id,
                Endpoint.label == label.marking,
                Endpoint.name == spec.name,
            )
        ).first()
        if taken is not None:
            raise Conflict(f"endpoint name {spec.name} is not available at {label.marking} in this agency")
        now = ctx.now()
        ep = Endpoint(
            id=str(uuid.uuid4()),
            name=spec.name,
            label=label.marking,
            label_rank=label.rank,
            agency_id=actor.agency_id,
            owner_id=actor.user_id,
            model_id=model.id,
            runtime=model.runtime,
            region=region,
            min_replicas=low,
            max_replicas=high,
            replicas=want,
            cpus_per_replica=spec.cpus_per_replica,
            memory_mb=spec.memory_mb,
            state="deploying",
            reason="starting replicas",
            settings={"pii": spec.pii, "log_content": spec.log_content},
            restarts=0,
            created_at=now,
            updated_at=now,
        )
        u.session.add(ep)
        u.record(
            entry_for(
                actor,
                AuditEvent.ENDPOINT_DEPLOYED,
                resource_of(ctx, ep, actor.subject.agency),
                ep.id,
                details={"name": ep.name, "model": model.id, "region": region, "replicas": want},
            )
        )
        out = view(ctx, ep, actor.subject.agency, [])
    ctx.endpoints_changed.set()
    return out


def view(ctx: Context, ep: Endpoint, agency: str, replicas: list[Job]) -> dict[str, Any]:
    return {
        "id": ep.id,
        "name": ep.name,
        "label": ep.label,
        "agency": agency,
        "model": ep.model_id,
        "runtime": ep.runtime,
        "region": ep.region,
        "state": ep.state,
        "reason": ep.reason,
        "replicas": {
            "desired": ep.replicas,
            "min": ep.min_replicas,
            "max": ep.max_replicas,
            "ready": ctx.router.ready(ep.id),
            "in_flight": ctx.router.in_flight(ep.id),
            "jobs": [{"id": j.id, "state": j.state, "reason": j.reason} for j in replicas],
        },
        "restarts": ep.restarts,
        "settings": ep.settings,
        "created_at": ep.created_at.isoformat(),
        "updated_at": ep.updated_at.isoformat(),
    }


def _replica_jobs(u: Unit, endpoint_ids: list[str], live_only: bool = True) -> dict[str, list[Job]]:
    out: dict[str, list[Job]] = {e: [] for e in endpoint_ids}
    if not endpoint_ids:
        return out
    query = select(Job).where(Job.kind == "replica", Job.parent_id.in_(endpoint_ids))
    if live_only:
        query = query.where(Job.state.notin_([str(s) for s in TERMINAL]))
    for job in u.session.execute(query.order_by(Job.seq)).scalars():
        out[job.parent_id or ""].append(job)
    return out


def show(ctx: Context, actor: Actor, name: str) -> dict[str, Any]:
    """One endpoint, with how its last replica that ended unasked ended (exit, the tail of its
    stderr): why an endpoint that keeps restarting does."""
    with unit(ctx) as u:
        ep, res = load(u, actor, name)
        out = view(ctx, ep, res.agency or "", _replica_jobs(u, [ep.id])[ep.id])
        last = _last_unasked_end(u.session, ep.id)
    out["last_exit"] = None if last is None else _exit_view(ctx, last, ep)
    return out


def _last_unasked_end(session: Session, endpoint_id: str) -> Job | None:
    return session.execute(
        select(Job)
        .where(
            Job.kind == "replica",
            Job.parent_id == endpoint_id,
            Job.state.in_([str(s) for s in TERMINAL]),
            Job.cancel_requested.is_(False),
        )
        .order_by(Job.seq.desc())
        .limit(1)
    ).scalar_one_or_none()


def _exit_view(ctx: Context, job: Job, ep: Endpoint) -> dict[str, Any]:
    tail = _stderr_tail(ctx, job)
    return {
        "job": job.id,
        "state": job.state,
        "exit_code": job.exit_code,
        "reason": job.reason,
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
        "summary": _exit_summary(job, tail, ep.memory_mb),
        "stderr_tail": tail,
    }


def _exit_summary(job: Job, stderr_tail: str, memory_mb: int) -> str:
    """One line: how the replica ended, and what to do where Enclave can tell."""
    code = job.exit_code
    if code is not None and code > 128:
        how = f"killed by signal {code - 128}"
    elif code is not None:
        how = f"exited with code {code}"
    else:
        how = job.reason or job.state
    if any(marker in stderr_tail for marker in OUT_OF_MEMORY):
        how += f"; it ran out of its memory limit ({memory_mb} MB): deploy it with a larger --memory-mb"
    lines = [line for line in stderr_tail.splitlines() if line.strip()]
    return f"{how}: {lines[-1][:300]}" if lines and "memory limit" not in how else how


def _stderr_tail(ctx: Context, job: Job) -> str:
    """The end of a replica's stderr: its kept log once it has ended, else its sandbox's file."""
    art_id = (job.log_artifacts or {}).get("stderr")
    data = b""
    if art_id:
        with ctx.read_sessions() as session:
            art = session.get(Artifact, art_id)
            if art is not None:
                data = b"".join(ctx.blobs.read(art.label, art.blob_key))
    elif job.handle and job.region:
        path = executor_for(ctx, ctx.fleet.region(job.region)).log_paths(job.handle).get("stderr")
        data = (outputs.read_small(path, STDERR_TAIL_BYTES * 64) or b"") if path else b""
    return data[-STDERR_TAIL_BYTES:].decode("utf-8", "replace")


def list_visible(ctx: Context, actor: Actor) -> list[dict[str, Any]]:
    """The newest endpoints the session may read (see :func:`page`)."""
    return list(page(ctx, actor)["items"])


def page(ctx: Context, actor: Actor, window: Window = Window()) -> dict[str, Any]:
    """One page of the agency's endpoints the session may read, newest first, read only at the
    labels it dominates (:mod:`enclave.services.listing`)."""
    sources = [
        Source(Endpoint.label, [Endpoint.agency_id == actor.agency_id], [Endpoint.deleted_at.is_(None)])
    ]
    with unit(ctx) as u:
        found = listing.page(u, actor, "endpoint", [Endpoint.created_at, Endpoint.id], sources, window)
        rows = u.session.execute(select(Endpoint).where(Endpoint.id.in_(found.ids))).scalars().all()
        reps = _replica_jobs(u, found.ids)
        items = [
            view(ctx, ep, actor.subject.agency, reps[ep.id]) for ep in found.ordered(rows, lambda ep: ep.id)
        ]
    return found.answer(items)


def scale(
    ctx: Context, actor: Actor, name: str, replicas: int | None, low: int | None, high: int | None
) -> dict[str, Any]:
    with unit(ctx) as u:
        ep, res = load(u, actor, name, Action.WRITE)
        low2, high2, want = _bounds(
            ep.replicas if replicas is None else replicas,
            ep.min_replicas if low is None else low,
            ep.max_replicas if high is None else high,
        )
        ep.min_replicas, ep.max_replicas, ep.replicas = low2, high2, want
        ep.updated_at = ctx.now()
        if ep.state == "failed":  # its owner tries again: the supervisor starts it afresh
            ep.state, ep.reason = "deploying", "starting replicas"
        u.record(
            entry_for(
                actor,
                AuditEvent.ENDPOINT_SCALED,
                res,
                ep.id,
                details={"replicas": want, "min": low2, "max": high2, "by": "user"},
            )
        )
        out = view(ctx, ep, res.agency or "", _replica_jobs(u, [ep.id])[ep.id])
    ctx.endpoints_changed.set()
    return out


def delete(ctx: Context, actor: Actor, name: str) -> None:
    """Retire an endpoint: it leaves the gateway at once; the supervisor stops its replicas."""
    with unit(ctx) as u:
        ep, res = load(u, actor, name, Action.DELETE)
        ep.deleted_at = ctx.now()
        ep.state = "deleted"
        u.record(entry_for(actor, AuditEvent.ENDPOINT_DELETED, res, ep.id, details={"name": ep.name}))
    ctx.router.update(ep.id, [])
    ctx.endpoints_changed.set()


# -- the replica job kind ----------------------------------------------------------------------
def prepare(ctx: Context, job: Job) -> Launch:
    """Stage the model read-only into the replica's work folder; the replica writes its port
    there once it serves."""
    with unit(ctx) as u:
        ep = u.session.get_one(Endpoint, job.parent_id)
        model = u.session.get_one(Model, ep.model_id)
        art = u.session.get(Artifact, model.artifact_id) if model.artifact_id else None
    folder = workspace.make(ctx, job)
    sock = folder / "sock"
    workspace.clear(sock)  # the replica's socket and ready file; fresh for every attempt
    mounts: list[Mount] = [Mount(sock, writable=True)]
    if model.builtin:
        model_dir = models.builtin_path(model.builtin)  # inside the Python installation
    else:
        if art is None or art.deleted_at is not None or model.deleted_at is not None:
            raise InvalidInput(f"model {model.id} was deleted")
        model_dir = folder / "model"
        workspace.clear(model_dir)
        archive.unpack(ctx.blobs.read(art.label, art.blob_key), model_dir)
        mounts.append(Mount(model_dir))
    command = [
        sys.executable,
        "-m",
        "enclave.serving.replica",
        "--runtime",
        model.runtime,
        "--model-dir",
        str(model_dir),
        "--port-file",
        str(sock / "ready"),
        "--socket",
        str(sock / "replica.sock"),
        "--name",
        ep.name,
    ]
    models.check_region(ctx, model, ep.region)  # the fleet file may have changed since deploy
    if models.allows_pickles(ctx, ep.region):
        command.append("--allow-pickle")
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        # The replica speaks this control plane's protocol: the very package it runs from
        # (shown read-only in the sandbox by enclave.executors.confine.python_paths).
        "PYTHONPATH": str(Path(enclave.__file__).resolve().parent.parent),
    }
    return Launch(command, env, tuple(mounts))


def finished(ctx: Context, job: Job) -> None:
    workspace.remove(ctx, job)


# -- the supervisor ----------------------------------------------------------------------------
@dataclass
class _Watch:
    busy_since: float | None = None
    idle_since: float | None = None


class Supervisor:
    """Keeps every endpoint's replicas running, healthy, routed and scaled (one per server)."""

    def __init__(self, ctx: Context, clock: Any = time.monotonic, manage: bool = True) -> None:
        self.ctx = ctx
        # Every control-plane replica health-checks replicas and routes calls to them; only
        # the leader (manage=True) adds, replaces, scales and retires them.
        self.manage = manage
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=HEALTH_TIMEOUT_S, trust_env=False)
        self._watch: dict[str, _Watch] = {}
        self._seen_ended: set[str] = set()
        self._primed: set[str] = set()  # endpoints whose earlier endings were noted, not counted
        self._served: set[str] = set()  # replica jobs seen ready at least once
        self._failed_starts: dict[str, int] = {}  # by endpoint: replicas in a row that never served
        self._retry_at: dict[str, float] = {}  # by endpoint: no replacement before this time

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="enclave-endpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.ctx.endpoints_changed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._http.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the loop must survive a bad tick; the error is logged
                log.exception("endpoint supervisor tick failed")
            if self.ctx.endpoints_changed.wait(TICK_S):
                self.ctx.endpoints_changed.clear()

    def tick(self) -> None:
        with unit(self.ctx) as u:
            eps = list(u.session.execute(select(Endpoint)).scalars())
            live = _replica_jobs(u, [e.id for e in eps])
        for ep in eps:
            if ep.deleted_at is not None:
                self.ctx.router.update(ep.id, [])
                if self.manage:
                    self._retire(live[ep.id])
            else:
                self._keep(ep, live[ep.id])

    def _retire(self, replicas: list[Job]) -> None:
        for job in replicas:
            if not job.cancel_requested:
                self._cancel(job)

    def _keep(self, ep: Endpoint, replicas: list[Job]) -> None:
        ready: list[tuple[str, str]] = []
        busy = 0
        for job in replicas:
            if job.state != JobState.RUNNING or job.cancel_requested:
                continue
            url = self._url(job)
            if url is None:
                continue
            try:
                health = self._health(url)
            except (httpx.HTTPError, ValueError):
                continue
            ready.append((job.id, url))
            busy += int(health.get("in_flight", 0))
        self.ctx.router.update(ep.id, ready)
        self._served.update(job_id for job_id, _ in ready)
        if not self.manage:
            return
        ended = self._ended_since_last(ep)
        if ep.state == "failed":
            return  # until its owner scales it again (or it is deleted)
        failed = self._count_failed_starts(ep, ended)
        if failed >= MAX_FAILED_STARTS:
            self._fail(ep, failed)
            return
        busy = max(busy, self.ctx.router.in_flight(ep.id))
        want = self._autoscale(ep, len(ready), busy)
        active = [j for j in replicas if not j.cancel_requested]
        waiting = self._retry_at.get(ep.id, 0.0) - self.clock()
        if len(active) < want and waiting > 0:
            self._say(ep, "deploying", f"{self._failing(ep, failed)}; next try in {waiting:.0f} s")
            return
        if len(active) < want:
            self._add_replicas(ep, want - len(active), replaced=len(ended))
        elif len(active) > want:
            # Give back replicas that are not serving first, newest first.
            spare = sorted(active, key=lambda j: (j.id in dict(ready), -j.seq))
            for job in spare[: len(active) - want]:
                self._cancel(job)
        state, reason = _state(len(ready), want, replicas)
        if failed and not ready:
            reason = f"{self._failing(ep, failed)}; trying again"
        self._say(ep, state, reason)

    def _say(self, ep: Endpoint, state: str, reason: str | None) -> None:
        if (state, reason) != (ep.state, ep.reason):
            with unit(self.ctx) as u:
                row = u.session.get_one(Endpoint, ep.id)
                if row.deleted_at is None and row.state != "failed":
                    row.state, row.reason, row.updated_at = state, reason, self.ctx.now()

    def _count_failed_starts(self, ep: Endpoint, ended: list[str]) -> int:
        """Replicas in a row that ended before they ever served (one that served resets it);
        each failed start pushes the next replacement further out."""
        if self._failed_starts.get(ep.id, 0) >= MAX_FAILED_STARTS:
            self._failed_starts[ep.id] = 0  # its owner scaled a failed endpoint again: a fresh start
            self._retry_at.pop(ep.id, None)
        for job_id in ended:
            if job_id in self._served:
                self._failed_starts[ep.id] = 0
            else:
                self._failed_starts[ep.id] = self._failed_starts.get(ep.id, 0) + 1
        failed = self._failed_starts.get(ep.id, 0)
        if ended and failed:
            wait = min(BACKOFF_FIRST_S * 2 ** (failed - 1), BACKOFF_MAX_S)
            self._retry_at[ep.id] = self.clock() + wait
        return failed

    def _failing(self, ep: Endpoint, failed: int) -> str:
        with unit(self.ctx) as u:
            last = _last_unasked_end(u.session, ep.id)
        summary = _exit_summary(last, _stderr_tail(self.ctx, last), ep.memory_mb) if last else "no exit known"
        return f"{failed} replica(s) in a row ended before serving; the last {summary}"

    def _fail(self, ep: Endpoint, failed: int) -> None:
        reason = f"{self._failing(ep, failed)}; gave up (scale the endpoint to try again)"
        with unit(self.ctx) as u:
            row = u.session.get_one(Endpoint, ep.id)
            if row.deleted_at is None:
                row.state, row.reason, row.updated_at = "failed", reason[:2000], self.ctx.now()
                u.record(
                    entry_for(
                        None,
                        AuditEvent.ENDPOINT_REPLICA_REPLACED,
                        Resource(kind="endpoint", label=self.ctx.scheme.parse(ep.label)),
                        ep.id,
                        details={"failed_starts": failed, "gave_up": True},
                    )
                )

    def _health(self, url: str) -> Any:
        if not url.startswith("unix:"):
            return self._http.get(f"{url}/health").json()
        with socket_address(Path(url.split(":", 2)[2])) as address:
            # Plain HTTP over a Unix socket: no TLS, so no certificate store to load (which
            # made a transport cost ~20 ms of CPU, for every replica every second).
            transport = httpx.HTTPTransport(uds=address, verify=False)
            with httpx.Client(transport=transport, timeout=HEALTH_TIMEOUT_S, trust_env=False) as client:
                return client.get("http://replica/health").json()

    def _url(self, job: Job) -> str | None:
        """The replica's address once it serves: its socket, answered by its own uid only.
        Where the socket lies is the control plane's choice, never read from the replica."""
        sock = workspace.path(self.ctx, job) / "sock"
        if outputs.read_small(sock / "ready") is None:
            return None
        return f"unix:{confine.job_uid(job.id)}:{sock / 'replica.sock'}"

    def _autoscale(self, ep: Endpoint, ready: int, busy: int) -> int:
        """More replicas while calls queue up on the ready ones; fewer after a quiet spell."""
        watch = self._watch.setdefault(ep.id, _Watch())
        now = self.clock()
        want = ep.replicas
        if ready and busy / ready >= SCALE_UP_IN_FLIGHT and want < ep.max_replicas:
            want += 1
            watch.idle_since = None
        elif busy == 0 and want > ep.min_replicas:
            watch.idle_since = watch.idle_since or now
            if now - watch.idle_since >= self.ctx.settings.endpoint_idle_s:
                want -= 1
                watch.idle_since = None
        else:
            watch.idle_since = None
        if want != ep.replicas:
            with unit(self.ctx) as u:
                row = u.session.get_one(Endpoint, ep.id)
                row.replicas = want
                u.record(
                    entry_for(
                        None,
                        AuditEvent.ENDPOINT_SCALED,
                        Resource(kind="endpoint", label=self.ctx.scheme.parse(ep.label)),
                        ep.id,
                        details={"replicas": want, "by": "autoscaler", "in_flight": busy, "ready": ready},
                    )
                )
            ep.replicas = want
        return want

    def _ended_since_last(self, ep: Endpoint) -> list[str]:
        """Replicas of this endpoint that ended without being asked to (failures, kills)."""
        with unit(self.ctx) as u:
            ended = u.session.execute(
                select(Job.id).where(
                    Job.kind == "replica",
                    Job.parent_id == ep.id,
                    Job.state.in_([str(s) for s in TERMINAL]),
                    Job.cancel_requested.is_(False),
                )
            ).scalars()
            fresh = [j for j in ended if j not in self._seen_ended]
        self._seen_ended.update(fresh)
        if ep.id not in self._primed:  # ended before this supervisor started: not news
            self._primed.add(ep.id)
            return []
        return fresh

    def _add_replicas(self, ep: Endpoint, count: int, replaced: int) -> None:
        """Submit replica jobs on behalf of the endpoint's owner, at the endpoint's label: an
        owner whose clearance no longer covers the label gets no new replicas."""
        with unit(self.ctx) as u:
            owner = u.session.get_one(User, ep.owner_id)
            agency = u.session.get_one(Agency, ep.agency_id)
            label = self.ctx.scheme.parse(ep.label)
            actor = Actor(subject_for(self.ctx, owner, agency, label), owner.id, agency.id)
            decision = decide(
                actor.subject, Action.CREATE, Resource(kind="job", label=label, agency=agency.name)
            )
            if owner.disabled or not decision.allowed:
                row = u.session.get_one(Endpoint, ep.id)
                why = "the owner's account is disabled" if owner.disabled else decision.reason
                row.state, row.reason = "failed", f"no new replicas: {why}"
                return
            spec = JobSpec(
                name=f"{ep.name}-replica",
                command=["replica"],  # replaced at launch by prepare()
                walltime_s=REPLICA_WALLTIME_S,
                cpus_per_node=ep.cpus_per_replica,
                memory_mb=ep.memory_mb,
                region=ep.region,
                kind="replica",
                parent_id=ep.id,
            )
            jobs.add(u, actor, [spec] * count)
            if replaced:
                row = u.session.get_one(Endpoint, ep.id)
                row.restarts += replaced
                u.record(
                    entry_for(
                        None,
                        AuditEvent.ENDPOINT_REPLICA_REPLACED,
                        Resource(kind="endpoint", label=label),
                        ep.id,
                        details={"replaced": replaced},
                    )
                )
        self.ctx.notify_jobs()

    def _cancel(self, job: Job) -> None:
        with unit(self.ctx) as u:
            row = u.session.get_one(Job, job.seq)
            if row.state not in TERMINAL and not row.cancel_requested:
                row.cancel_requested = True
        job.cancel_requested = True
        self.ctx.notify_jobs()


def _state(ready: int, want: int, replicas: list[Job]) -> tuple[str, str | None]:
    if ready and ready >= want:
        return "ready", None
    if ready:
        return "ready", f"{ready} of {want} replicas ready"
    if want == 0:
        return "idle", "scaled to zero"
    waiting = [j.reason for j in replicas if j.state in (JobState.PENDING, JobState.ADMITTED) and j.reason]
    return "deploying", waiting[0] if waiting else "starting replicas"
