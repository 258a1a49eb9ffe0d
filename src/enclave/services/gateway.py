"""The model gateway's use cases: who may call which endpoint, and the record of every call.

Per call (the API adapter streams the bytes; everything deciding lives here):

* :func:`authorize` finds the endpoint by name in the caller's agency and asks the policy
  gate (``INVOKE``: the session reads the endpoint's label, and the endpoint's region is
  accredited for the session label); it checks the agency's daily token budget and its
  request/token rates. A refusal is audited and changes nothing else.
* :func:`screen` runs the guardrails on the prompt: a classification marking above the
  endpoint's label refuses the call (audited); personal data is masked where the endpoint's
  settings say so.
* :meth:`Gateway.call` builds the call's record — tokens, latency, modelled energy, SHA-256
  digests of the prompt and the answer (their full text only where the endpoint's settings
  ask for it) — and :class:`CallLog` commits it, with the agency's usage, before the answer
  is released. The answer is labelled lub(session, endpoint).
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from enclave.audit.events import AuditEvent, Outcome
from enclave.audit.log import DirectWriter, Entry
from enclave.errors import InvalidInput, NotFound, RateLimited
from enclave.gateway import guardrails
from enclave.gateway.limits import RateLimiter
from enclave.labels import Label
from enclave.policy import Action, Resource, decide, refusal
from enclave.services import endpoints
from enclave.services.auth import authenticate
from enclave.services.context import Context
from enclave.services.unit import Actor, entry_for, unit
from enclave.store.models import Agency, Endpoint, GatewayUsage

log = logging.getLogger("enclave.gateway")

ENDPOINT_CACHE_S = 1.0  # how stale an endpoint row may be (a delete also drops it at once)
TOKEN_CACHE_S = 1.0  # how long a checked token is trusted without asking the store again


# The call log's usage statements (DirectTx placeholders)
_ADD_USAGE = (
    "UPDATE gateway_usage SET requests = requests + ?, prompt_tokens = prompt_tokens + ?,"
    " completion_tokens = completion_tokens + ?, energy_j = energy_j + ?"
    " WHERE agency_id = ? AND day = ? AND label = ?"
)
_NEW_USAGE = (
    "INSERT INTO gateway_usage (requests, prompt_tokens, completion_tokens, energy_j, agency_id, day, label)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class Target:
    endpoint_id: str
    name: str
    label: Label  # the endpoint's
    response_label: Label  # lub(session, endpoint)
    resource: Resource
    region: str
    runtime: str
    pii: str
    log_content: bool
    busy_w_per_cpu: float  # modelled power of one busy replica CPU, PUE included
    cpus: int
    rpm: int | None
    tpm: int | None
    budget: int | None


@dataclass
class _Cached:
    at: float
    endpoints: list[Endpoint]  # every live endpoint of the agency with the name, at any label
    agency: Agency
    # Allowed decisions on this very endpoint row, by the id of the (cached) Actor they were
    # made for: the decision and the Target are pure functions of the two.
    targets: dict[int, tuple[Actor, Target]] = field(default_factory=dict)


@dataclass
class Call:
    """One call's audit entry and meter readings."""

    agency_id: int
    day: str
    label: str  # the session's marking: usage is metered per label
    entry: Entry
    prompt_tokens: int
    completion_tokens: int
    energy_j: float
    done: Callable[[BaseException | None], None] = lambda _err: None


class CallLog:
    """Group commit for gateway calls: every call's audit record and usage, committed before
    its answer is released, many calls to one transaction.

    One thread takes whatever calls have queued up while the previous commit ran and
    commits them together (one transaction), so under load the cost of a commit is shared by
    many calls and a lone call waits for no batch to fill. The signed checkpoint of the new
    head follows, at most every CHECKPOINT_EVERY_S: writing one (a signature and an atomic
    file replace, ≈ 0.2-0.3 ms) per lone call was a third of the gateway's CPU per call. The
    records themselves are committed, chained and signed before any answer goes; until the
    next checkpoint only the removal of the newest ones would go unnoticed.
    """

    MAX_BATCH = 512
    CHECKPOINT_EVERY_S = 0.05

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._writer = DirectWriter(ctx.engine)  # the log thread's own connection
        self._queue: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self._unsigned: tuple[int, str] | None = None  # a committed head not checkpointed yet
        self._signed_at = -math.inf  # monotonic time of the last checkpoint
        self._thread = threading.Thread(target=self._run, name="enclave-gateway-log", daemon=True)
        self._thread.start()

    def submit(self, call: Call) -> None:
        self._queue.put(call)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._checkpoint()
            self._writer.close()

    def _serve(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=self._checkpoint_due_in())
            except queue.Empty:  # quiet since the last commit: its checkpoint is due
                self._checkpoint()
                continue
            if first is None:
                break
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            error: BaseException | None = None
            try:
                self._unsigned = self._commit(batch)
            except Exception as exc:  # every waiting call learns of it; the loop goes on
                log.exception("could not record %d gateway calls", len(batch))
                error = exc
            for call in batch:
                call.done(error)  # committed (or failed): the answers may go
            if self._checkpoint_due_in() == 0.0:
                self._checkpoint()

    def _checkpoint_due_in(self) -> float | None:
        """Seconds until the pending checkpoint is due (None: nothing pending)."""
        if self._unsigned is None:
            return None
        return max(0.0, self._signed_at + self.CHECKPOINT_EVERY_S - time.monotonic())

    def _checkpoint(self) -> None:
        """The signed checkpoint of the newest committed head (it guards against truncation)."""
        head, self._unsigned = self._unsigned, None
        if head is None:
            return
        self._signed_at = time.monotonic()
        try:
            self.ctx.audit.checkpoint(head[0], head[1], self.ctx.now())
        except Exception:
            log.exception("could not write the audit checkpoint")

    def _commit(self, batch: list[Call]) -> tuple[int, str]:
        """One transaction on the log thread's own connection: the audit records (one head
        lock, one multi-row insert) and the usage sums. Returns the new chain head."""
        usage: dict[tuple[int, str, str], list[float]] = {}
        for call in batch:
            sums = usage.setdefault((call.agency_id, call.day, call.label), [0, 0, 0, 0.0])
            sums[0] += 1
            sums[1] += call.prompt_tokens
            sums[2] += call.completion_tokens
            sums[3] += call.energy_j
        ctx = self.ctx
        with self._writer.transaction() as tx:
            # The head first: its lock serialises writers (PostgreSQL) before the usage rows.
            head = ctx.audit.append_many(tx, [call.entry for call in batch], ctx.now)
            for (agency_id, day, label), (requests, prompt, completion, energy) in usage.items():
                row = (int(requests), int(prompt), int(completion), energy, agency_id, day, label)
                if tx.execute(_ADD_USAGE, row) == 0:
                    tx.execute(_NEW_USAGE, row)
        return head


class Gateway:
    """One per server process: caches, rate buckets and the call log shared by all calls."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.limiter = RateLimiter()
        self._endpoints: dict[tuple[int, str], _Cached] = {}
        self._used_today: dict[tuple[int, str, str], int] = {}  # (agency, label, day): tokens
        self._actors: dict[str, tuple[float, Actor]] = {}
        self._locks = [threading.Lock() for _ in range(16)]  # cache refreshes, by key
        self.log = CallLog(ctx)

    def close(self) -> None:
        self.log.close()

    # -- who is calling ------------------------------------------------------------------------
    def cached_actor(self, token: str) -> Actor | None:
        """A token seen in the last TOKEN_CACHE_S (a revoked token stops working within it)."""
        hit = self._actors.get(token)
        if hit is not None and time.monotonic() - hit[0] < TOKEN_CACHE_S:
            return hit[1]
        return None

    def authenticate(self, token: str) -> Actor:
        # One store lookup per token at a time: the calls that found the cache stale together
        # (every connection of a busy client, once a second) wait for it instead of repeating it.
        with self._locks[hash(token) % len(self._locks)]:
            hit = self.cached_actor(token)
            if hit is not None:
                return hit
            actor = authenticate(self.ctx, token)
            if len(self._actors) > 10_000:
                self._actors.clear()
            self._actors[token] = (time.monotonic(), actor)
            return actor

    # -- lookup and decision -------------------------------------------------------------------
    def _lookup(self, actor: Actor, name: str) -> _Cached:
        key = (actor.agency_id, name)
        hit = self._endpoints.get(key)
        if hit is not None and time.monotonic() - hit.at < ENDPOINT_CACHE_S:
            return hit
        with self._locks[hash(key) % len(self._locks)]:  # one refresh at a time, as for tokens
            hit = self._endpoints.get(key)
            now = time.monotonic()
            if hit is not None and now - hit.at < ENDPOINT_CACHE_S:
                return hit
            return self._read_endpoint(actor, name, key, now)

    def _read_endpoint(self, actor: Actor, name: str, key: tuple[int, str], now: float) -> _Cached:
        with self.ctx.read_sessions() as session:
            eps = endpoints.named(session, actor.agency_id, name, self.ctx.scheme.top.rank)
            agency = session.get_one(Agency, actor.agency_id)
        hit = self._endpoints[key] = _Cached(now, eps, agency)
        return hit

    def knows(self, actor: Actor, name: object) -> bool:
        """Whether deciding a call to ``name`` needs no store read (cached and fresh)."""
        hit = self._endpoints.get((actor.agency_id, name)) if isinstance(name, str) else None
        return (
            hit is not None
            and time.monotonic() - hit.at < ENDPOINT_CACHE_S
            and (actor.agency_id, actor.subject.session.marking, _today()) in self._used_today
        )

    def forget(self, agency_id: int, name: str) -> None:
        self._endpoints.pop((agency_id, name), None)

    def authorize(self, actor: Actor, name: str) -> Target:
        if not isinstance(name, str) or not name:
            raise InvalidInput("model: name an endpoint (see GET /v1/models)")
        hit = self._lookup(actor, name)
        known = hit.targets.get(id(actor))
        if known is not None and known[0] is actor:
            return known[1]
        # Only endpoints the session may read are candidates (endpoints.pick): a name taken
        # only at a label the session may not read is a plain miss, in words and in time.
        ep = endpoints.pick(self.ctx, actor.subject, hit.endpoints)
        if ep is None:
            raise NotFound(f"model {name} not found")
        res = endpoints.resource_of(self.ctx, ep, actor.subject.agency)
        decision = decide(actor.subject, Action.INVOKE, res)
        if not decision.allowed:
            self._refuse(actor, res, ep.id, decision.rule, decision.reason, visible=decision.visible)
            raise refusal(decision, "model", name)
        label = self.ctx.scheme.parse(ep.label)
        region = self.ctx.fleet.region(ep.region)
        pool = min(region.pools, key=lambda p: p.cpus)
        agency = hit.agency
        target = Target(
            endpoint_id=ep.id,
            name=ep.name,
            label=label,
            response_label=self.ctx.scheme.lub(actor.subject.session, label),
            resource=res,
            region=ep.region,
            runtime=ep.runtime,
            pii=str(ep.settings.get("pii", "off")),
            log_content=bool(ep.settings.get("log_content", False)),
            busy_w_per_cpu=(pool.peak_w - pool.idle_w) / max(1, pool.cpus) * region.pue,
            cpus=ep.cpus_per_replica,
            rpm=agency.gateway_rpm,
            tpm=agency.gateway_tpm,
            budget=agency.gateway_token_budget,
        )
        if len(hit.targets) < 1024:
            hit.targets[id(actor)] = (actor, target)
        return target

    def admit(self, actor: Actor, target: Target) -> None:
        """Budget and rate checks; a refusal is a 429 with the seconds to wait.

        The budget and the rate buckets are the agency's *at the session label*: calls made at
        one label never change what a session at another label is told (429, Retry-After)."""
        label = actor.subject.session.marking
        used = self._usage_today(actor.agency_id, label, _today())
        if target.budget is not None and used >= target.budget:
            wait = _seconds_to_midnight()
            self._refuse(actor, target.resource, target.endpoint_id, "budget", "daily token budget spent")
            raise RateLimited(f"the agency's daily token budget ({target.budget}) is spent", wait)
        wait_s = self.limiter.admit((actor.subject.agency, label), target.rpm, target.tpm, time.monotonic())
        if wait_s:
            self._refuse(actor, target.resource, target.endpoint_id, "rate", "request or token rate exceeded")
            raise RateLimited("the agency's request or token rate is exceeded", int(wait_s))

    def _usage_today(self, agency_id: int, label: str, day: str) -> int:
        key = (agency_id, label, day)
        if key not in self._used_today:
            with self.ctx.read_sessions() as session:
                row = session.get(GatewayUsage, (agency_id, day, label))
                self._used_today[key] = 0 if row is None else row.prompt_tokens + row.completion_tokens
        return self._used_today[key]

    def screen(
        self, actor: Actor, target: Target, texts: list[str], everything: Iterable[str] | None = None
    ) -> list[str]:
        """Refuse markings above the endpoint's label in ``everything`` the call carries (every
        string of its body: tools, tool calls, function arguments ...; ``texts`` if not given);
        mask personal data in ``texts`` if asked."""
        screened = texts if everything is None else everything
        found = guardrails.markings_above(
            self.ctx.scheme, screened, target.label, tuple(self.ctx.guard_patterns)
        )
        if found:
            marks = ", ".join(sorted({f.text for f in found}))
            self._refuse(actor, target.resource, target.endpoint_id, "marking", f"prompt carries {marks}")
            raise InvalidInput(
                f"the prompt carries a classification marking above the endpoint's label: {marks}"
            )
        if target.pii == "mask":
            return [guardrails.mask_pii(t)[0] for t in texts]
        return texts

    def screen_payload(self, target: Target, payload: object) -> list[str]:
        """Markings above the endpoint's label in any string of an answer's JSON (its choices,
        or an error body): the reasons to withhold it."""
        found = guardrails.markings_above(
            self.ctx.scheme, guardrails.strings(payload), target.label, tuple(self.ctx.guard_patterns)
        )
        return sorted({f.text for f in found})

    def stream_screen(self, target: Target) -> guardrails.StreamScreen:
        """The screen of one streamed answer (markings above the endpoint's label; PII masked
        if the endpoint says so)."""
        marks = guardrails.scanner(self.ctx.scheme, tuple(self.ctx.guard_patterns))
        return guardrails.StreamScreen(marks, target.label, mask=target.pii == "mask")

    # -- the record ----------------------------------------------------------------------------
    def call(
        self,
        actor: Actor,
        target: Target,
        *,
        route: str,
        status: int,
        prompt: str,
        answer: str,
        prompt_tokens: int,
        completion_tokens: int,
        latency_s: float,
    ) -> Call:
        """The metering and audit record of one call, to hand to :class:`CallLog`."""
        energy_j = latency_s * target.busy_w_per_cpu * target.cpus
        details: dict[str, Any] = {
            "endpoint": target.name,
            "route": route,
            "status": status,
            "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
            "response_sha256": hashlib.sha256(answer.encode()).hexdigest(),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "latency_ms": round(latency_s * 1000, 3),
            "energy_j": round(energy_j, 6),
            "response_label": target.response_label.marking,
        }
        if target.log_content:
            details["prompt"], details["response"] = prompt, answer
        tokens = prompt_tokens + completion_tokens
        label = actor.subject.session.marking
        key = (actor.agency_id, label, _today())
        self._used_today[key] = self._used_today.get(key, 0) + tokens
        self.limiter.charge_tokens((actor.subject.agency, label), target.tpm, tokens, time.monotonic())
        entry = entry_for(
            actor,
            AuditEvent.GATEWAY_CALL,
            replace(target.resource, label=target.response_label),  # at the session label (= lub)
            target.endpoint_id,
            outcome=Outcome.ALLOW if status < 400 else Outcome.DENY,
            details=details,
        )
        return Call(actor.agency_id, key[2], label, entry, prompt_tokens, completion_tokens, energy_j)

    def _refuse(
        self, actor: Actor, res: Resource, endpoint_id: str, rule: str, reason: str, visible: bool = True
    ) -> None:
        """Audit a refusal: committed before the answer when the answer says it (403, 429,
        400), off the request path when it answers like a miss (services.unit says why). The
        record is labelled lub(session, endpoint): it tells of the session's attempt, so an
        auditor below the session label never reads it."""
        if res.label is not None:
            res = replace(res, label=self.ctx.scheme.lub(actor.subject.session, res.label))
        entry = entry_for(
            actor,
            AuditEvent.GATEWAY_REFUSED if rule in ("marking", "rate", "budget") else AuditEvent.ACCESS_DENIED,
            res,
            endpoint_id,
            outcome=Outcome.DENY,
            details={"action": str(Action.INVOKE), "rule": rule, "reason": reason},
        )
        if not visible:
            self.ctx.denials.submit(entry, self.ctx.now())
            return
        with unit(self.ctx) as u:
            u.record(entry)

    # -- listing -------------------------------------------------------------------------------
    def models(self, actor: Actor) -> list[dict[str, Any]]:
        """OpenAI's model list: the endpoints this session may call (at its own label), by name."""
        out = []
        with self.ctx.read_sessions() as session:
            rows = session.execute(
                select(Endpoint).where(
                    Endpoint.agency_id == actor.agency_id,
                    Endpoint.deleted_at.is_(None),
                    Endpoint.label_rank <= actor.subject.session.rank,
                )
            ).scalars()
            for ep in rows:
                res = endpoints.resource_of(self.ctx, ep, actor.subject.agency)
                if decide(actor.subject, Action.INVOKE, res).allowed:
                    out.append(
                        {
                            "id": ep.name,
                            "object": "model",
                            "created": int(ep.created_at.timestamp()),
                            "owned_by": actor.subject.agency,
                            "enclave": {"label": ep.label, "runtime": ep.runtime, "state": ep.state},
                        }
                    )
        return sorted(out, key=lambda m: m["id"])


_day: tuple[float, str] = (0.0, "")  # (the next UTC midnight as a timestamp, today)


def _today() -> str:
    """Today's UTC date, ``YYYY-MM-DD`` (worked out once a day: it is asked several times a call)."""
    global _day
    now = time.time()
    if now >= _day[0]:
        today = datetime.fromtimestamp(now, UTC)
        midnight = (today + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        _day = (midnight.timestamp(), today.strftime("%Y-%m-%d"))
    return _day[1]


def _seconds_to_midnight() -> int:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds()))
