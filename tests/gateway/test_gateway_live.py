"""The gateway end to end: a real `enclave up`, real replica processes placed by the scheduler,
and the official ``openai`` client. One server and its endpoints are shared by the module
(starting replicas takes seconds); each test leaves the endpoints as it found them."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression
from sqlalchemy import create_engine, select

from enclave.archive import pack
from enclave.services.gateway import ENDPOINT_CACHE_S
from enclave.store.models import AuditRecord
from tests.conftest import Server, free_port

FLEET = (Path(__file__).parents[2] / "src/enclave/fleets/local.toml").read_text()
FEATURES = ["bytes", "packets"]
IDLE_S = 3.0  # the server's endpoint_idle_s: a quiet endpoint shrinks after this


@dataclass
class Deployment:
    server: Server
    tokens: dict[str, str]  # who@label -> token
    clients: list[httpx.Client | openai.OpenAI] = field(default_factory=list)

    def http(self, who: str) -> httpx.Client:
        c = httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {self.tokens[who]}"}, timeout=60
        )
        self.clients.append(c)
        return c

    def openai(self, who: str) -> openai.OpenAI:
        c = openai.OpenAI(base_url=f"{self.server.url}/v1", api_key=self.tokens[who], max_retries=0)
        self.clients.append(c)
        return c

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def audit(self, event: str) -> list[dict]:
        engine = create_engine(f"sqlite:///{self.server.home / 'enclave.db'}")
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(AuditRecord.object_id, AuditRecord.details, AuditRecord.outcome)
                    .where(AuditRecord.event == event)
                    .order_by(AuditRecord.seq)
                ).all()
        finally:
            engine.dispose()
        return [{"object": r[0], "outcome": r[2], **json.loads(r[1])} for r in rows]


def _ok(r: httpx.Response, status: int = 200) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    return r.json()


def _classifier_archive(tmp: Path) -> bytes:
    """A real (tiny) intrusion-style classifier: many bytes and packets mean an attack."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, size=(400, 2))
    y = np.where(x.sum(axis=1) > 100, "attack", "normal")
    model = LogisticRegression().fit(x, y)
    folder = tmp / "clf"
    folder.mkdir()
    skops.io.dump(model, folder / "model.skops")
    (folder / "model.json").write_text(
        json.dumps(
            {
                "format": "enclave-model/1",
                "runtime": "sklearn",
                "task": "classification",
                "features": FEATURES,
                "classes": [str(c) for c in model.classes_],
            }
        )
    )
    buf = io.BytesIO()
    pack(folder, buf)
    return buf.getvalue()


def _wait_ready(api: httpx.Client, name: str, replicas: int = 1, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        ep = _ok(api.get(f"/v1/endpoints/{name}"))
        if ep["state"] == "ready" and ep["replicas"]["ready"] >= replicas:
            return ep
        assert time.monotonic() < deadline, f"endpoint {name} not ready: {ep}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("gw-home")
    fleet = home.parent / "fleet.toml"
    # The local fleet with room for several replicas per region (replicas reserve 3 GiB each).
    fleet.write_text(
        FLEET.replace("memory_mb = 4096", "memory_mb = 32768")
        .replace("cpus = 2", "cpus = 8")
        .replace("power_cap_mw = 0.0002", "power_cap_mw = 0.01")
    )
    port = free_port()
    server = Server(home, f"http://127.0.0.1:{port}", port, ["--fleet", str(fleet)])
    os.environ["ENCLAVE_ENDPOINT_IDLE_S"] = str(IDLE_S)  # read by the server at start
    try:
        server.start()
    finally:
        del os.environ["ENCLAVE_ENDPOINT_IDLE_S"]
    try:
        admin = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=60
        )
        _ok(admin.post("/v1/agencies", json={"name": "alpha"}), 201)
        _ok(admin.post("/v1/agencies", json={"name": "beta"}), 201)
        for user, agency, clearance in (("alice", "alpha", "SECRET"), ("bea", "beta", "SECRET")):
            body = {"name": user, "agency": agency, "clearance": clearance, "roles": ["user"]}
            _ok(admin.post("/v1/users", json=body), 201)
        tokens = {}
        for who in ("alice@CUI", "alice@SECRET", "bea@CUI"):
            user, label = who.split("@")
            tokens[who] = _ok(admin.post("/v1/tokens", json={"user": user, "label": label}), 201)["token"]
        d = Deployment(server, tokens)
        cui, secret = d.http("alice@CUI"), d.http("alice@SECRET")
        emb_c = _ok(
            cui.post("/v1/registry/builtin-models", json={"name": "minilm", "builtin": "minilm"}), 201
        )
        emb_s = _ok(
            secret.post("/v1/registry/builtin-models", json={"name": "minilm", "builtin": "minilm"}), 201
        )
        clf = _ok(
            cui.post(
                "/v1/registry/models",
                params={"name": "intrusion", "runtime": "sklearn"},
                content=_classifier_archive(home.parent),
            ),
            201,
        )
        _ok(cui.post("/v1/endpoints", json={"model": emb_c["id"], "name": "emb", "replicas": 2}), 201)
        _ok(
            cui.post(
                "/v1/endpoints",
                json={
                    "model": clf["id"],
                    "name": "clf",
                    "pii": "mask",
                    "log_content": True,
                    "memory_mb": 2048,
                },
            ),
            201,
        )
        _ok(secret.post("/v1/endpoints", json={"model": emb_s["id"], "name": "emb-secret"}), 201)
        _wait_ready(cui, "emb", replicas=2)
        _wait_ready(cui, "clf")
        _wait_ready(secret, "emb-secret")
        yield d
        _retire_all(d, ("alice@CUI", "alice@SECRET", "bea@CUI"))
        d.close()
        admin.close()
    finally:
        server.stop()
        for pid in _replica_pids(home):  # whatever a failed test left running
            os.kill(pid, signal.SIGKILL)


def _retire_all(d: Deployment, sessions: tuple[str, ...]) -> None:
    """Delete every endpoint and wait for the supervisor to stop their replicas."""
    for who in sessions:
        api = d.http(who)
        for ep in _ok(api.get("/v1/endpoints"))["items"]:
            assert api.delete(f"/v1/endpoints/{ep['name']}").status_code == 204
    deadline = time.monotonic() + 60
    while _replica_pids(d.server.home) and time.monotonic() < deadline:
        time.sleep(0.2)


def test_openai_client_models_embeddings_and_chat(dep: Deployment) -> None:
    client = dep.openai("alice@CUI")
    assert [m.id for m in client.models.list().data] == ["clf", "emb"]
    out = client.embeddings.create(
        model="emb", input=["a cat sits on the mat", "a kitten rests on a rug", "tax law"]
    )
    vectors = np.array([d.embedding for d in out.data])
    assert vectors.shape == (3, 384)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # really the MiniLM model: related sentences are closer
    assert out.usage.prompt_tokens > 0
    answer = client.chat.completions.create(
        model="clf", messages=[{"role": "user", "content": json.dumps({"bytes": 95, "packets": 90})}]
    )
    assert answer.choices[0].message.content.strip() == "attack"
    quiet = client.completions.create(model="clf", prompt="5, 3")
    assert quiet.choices[0].text.strip() == "normal"
    stream = client.chat.completions.create(
        model="clf",
        messages=[{"role": "user", "content": json.dumps({"bytes": 90, "packets": 99})}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "attack"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_openai_client_errors(dep: Deployment) -> None:
    client = dep.openai("alice@CUI")
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-endpoint", input="x")
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        client.chat.completions.create(model="clf", messages=[])
    assert "messages" in str(bad.value)
    with pytest.raises(openai.BadRequestError):  # the replica's own validation, passed through
        client.chat.completions.create(model="clf", messages=[{"role": "user", "content": '{"bytes": 1}'}])
    with (
        openai.OpenAI(base_url=f"{dep.server.url}/v1", api_key="enc_wrong", max_retries=0) as stranger,
        pytest.raises(openai.AuthenticationError),
    ):
        stranger.models.list()


def test_secret_model_is_invisible_and_uncallable_below(dep: Deployment) -> None:
    cui = dep.openai("alice@CUI")
    assert "emb-secret" not in [m.id for m in cui.models.list().data]
    hidden = dep.http("alice@CUI").post("/v1/embeddings", json={"model": "emb-secret", "input": "x"})
    missing = dep.http("alice@CUI").post("/v1/embeddings", json={"model": "emb-nothing", "input": "x"})
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"].replace("emb-secret", "?") == missing.json()["detail"].replace(
        "emb-nothing", "?"
    )
    # Another agency sees nothing of alpha's endpoints, whatever its label.
    assert [m.id for m in dep.openai("bea@CUI").models.list().data] == []
    # At SECRET it serves, and the answer is labelled SECRET.
    r = dep.http("alice@SECRET").post("/v1/embeddings", json={"model": "emb-secret", "input": "x"})
    assert r.status_code == 200 and r.headers["x-enclave-label"] == "SECRET"
    assert r.json()["enclave"]["label"] == "SECRET"


def test_session_above_the_endpoint_is_refused(dep: Deployment) -> None:
    """A SECRET session may read the CUI endpoint, but a call also writes: its SECRET prompt
    must not go to a replica (or upstream) chosen at CUI (write-down through the gateway)."""
    before = len(dep.audit("access.denied"))
    r = dep.http("alice@SECRET").post("/v1/embeddings", json={"model": "emb", "input": "x"})
    assert r.status_code == 403 and "called at its own label" in r.json()["detail"]
    denied = dep.audit("access.denied")[before:]
    assert [d["rule"] for d in denied] == ["call_at_endpoint_label"]
    # Not in the SECRET session's model list either: it lists what the session may call.
    assert "emb" not in [m.id for m in dep.openai("alice@SECRET").models.list().data]


def test_marking_in_prompt_is_refused_and_audited(dep: Deployment) -> None:
    before = len(dep.audit("gateway.refused"))
    calls = len(dep.audit("gateway.call"))
    r = dep.http("alice@CUI").post(
        "/v1/embeddings", json={"model": "emb", "input": ["weather", "SECRET//SI summary of the plan"]}
    )
    assert r.status_code == 422 and "SECRET//SI" in r.json()["detail"]
    assert r.json()["error"]["message"] == r.json()["detail"]
    refused = dep.audit("gateway.refused")[before:]
    assert [e["rule"] for e in refused] == ["marking"]
    assert len(dep.audit("gateway.call")) == calls  # nothing reached a replica


def test_calls_are_metered_and_audited_with_hashes(dep: Deployment) -> None:
    before = len(dep.audit("gateway.call"))
    prompt = json.dumps({"bytes": 1, "packets": 2}) + " mail me at bob@example.com"
    api = dep.http("alice@CUI")
    r = api.post(
        "/v1/chat/completions", json={"model": "clf", "messages": [{"role": "user", "content": prompt}]}
    )
    # The masked prompt still parses for the classifier? No: the e-mail is text after the JSON.
    assert r.status_code == 400
    e1 = api.post("/v1/embeddings", json={"model": "emb", "input": "call 555-123-4567 today"})
    assert e1.status_code == 200
    calls = dep.audit("gateway.call")[before:]
    assert [c["route"] for c in calls] == ["chat/completions", "embeddings"]
    clf_call, emb_call = calls
    # clf masks PII and logs content: the stored prompt is the masked one.
    assert clf_call["prompt"].endswith("mail me at [EMAIL]") and "bob@example.com" not in json.dumps(clf_call)
    # emb logs hashes only.
    assert "prompt" not in emb_call and len(emb_call["prompt_sha256"]) == 64
    assert emb_call["prompt_tokens"] > 0 and emb_call["energy_j"] > 0 and emb_call["response_label"] == "CUI"
    usage = _ok(api.get("/v1/agencies/alpha/usage"))["gateway"]
    assert usage["requests"] >= len(calls) and usage["prompt_tokens"] > 0 and usage["energy_kwh"] > 0
    # /metrics is the operator role's, with series only at labels its session may read.
    assert httpx.get(f"{dep.server.url}/metrics").status_code == 401
    admin = {"Authorization": f"Bearer {dep.server.admin_token}"}
    minted = _ok(
        httpx.post(f"{dep.server.url}/v1/tokens", json={"user": "admin", "label": "CUI"}, headers=admin), 201
    )
    metrics = httpx.get(
        f"{dep.server.url}/metrics", headers={"Authorization": f"Bearer {minted['token']}"}
    ).text
    assert 'enclave_gateway_requests_total{label="CUI",outcome="ok",route="embeddings"}' in metrics
    assert 'label="CUI"' not in httpx.get(f"{dep.server.url}/metrics", headers=admin).text  # at UNCLASSIFIED


def test_rate_limit_and_budget_answer_429(dep: Deployment) -> None:
    admin = httpx.Client(
        base_url=dep.server.url, headers={"Authorization": f"Bearer {dep.server.admin_token}"}
    )
    try:
        _ok(admin.put("/v1/agencies/beta/quotas", json={"gateway_rpm": 2}))
        bea = dep.http("bea@CUI")
        bea_model = _ok(bea.post("/v1/registry/builtin-models", json={"name": "m", "builtin": "minilm"}), 201)
        _ok(bea.post("/v1/endpoints", json={"model": bea_model["id"], "name": "bea-emb"}), 201)
        _wait_ready(bea, "bea-emb")
        statuses = [bea.post("/v1/embeddings", json={"model": "bea-emb", "input": "x"}) for _ in range(3)]
        assert [s.status_code for s in statuses] == [200, 200, 429]
        assert int(statuses[-1].headers["retry-after"]) >= 1
        # A spent daily budget: 429 until midnight UTC, whatever the rate.
        _ok(admin.put("/v1/agencies/beta/quotas", json={"gateway_token_budget": 1}))
        time.sleep(ENDPOINT_CACHE_S + 0.2)  # quotas reach the gateway within its cache time
        over = bea.post("/v1/embeddings", json={"model": "bea-emb", "input": "x"})
        assert over.status_code == 429 and "budget" in over.json()["detail"]
        # Alpha's calls are not affected by beta's limits.
        ok = dep.http("alice@CUI").post("/v1/embeddings", json={"model": "emb", "input": "x"})
        assert ok.status_code == 200
    finally:
        _ok(admin.put("/v1/agencies/beta/quotas", json={}))
        admin.close()


def _replica_pids(home: Path, name: str = ".*") -> list[int]:
    """Replica processes (not their sandbox or shell wrappers) of this server's endpoints."""
    pattern = f"enclave.serving.replica .*--port-file {home}/.*--name {name}$"
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    pids = []
    for pid in map(int, out.split()):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if not argv0.endswith((b"sh", b"bwrap")):
            pids.append(pid)
    return pids


def test_killed_replica_is_replaced_and_no_call_is_lost(dep: Deployment) -> None:
    api = dep.http("alice@CUI")
    restarts = _ok(api.get("/v1/endpoints/emb"))["restarts"]
    pids = _replica_pids(dep.server.home, "emb")
    assert len(pids) == 2, pids
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with dep.http("alice@CUI") as c:
            while not stop.is_set():
                results.append(
                    c.post("/v1/embeddings", json={"model": "emb", "input": "steady load"}).status_code
                )

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    time.sleep(1.0)
    os.kill(pids[0], signal.SIGKILL)
    time.sleep(2.0)
    stop.set()
    for w in workers:
        w.join()
    assert results and set(results) == {200}, {s: results.count(s) for s in set(results)}
    ep = _wait_ready(api, "emb", replicas=2)
    assert ep["restarts"] == restarts + 1
    assert (
        pids[0] not in _replica_pids(dep.server.home, "emb")
        and len(_replica_pids(dep.server.home, "emb")) == 2
    )


def test_autoscaler_adds_a_replica_under_load_and_gives_it_back(dep: Deployment) -> None:
    api = dep.http("alice@CUI")
    model = next(m for m in _ok(api.get("/v1/registry/models"))["items"] if m["builtin"] == "minilm")
    _ok(
        api.post(
            "/v1/endpoints", json={"model": model["id"], "name": "auto", "min_replicas": 1, "max_replicas": 2}
        ),
        201,
    )
    _wait_ready(api, "auto")
    stop = threading.Event()
    long_text = " ".join(["the fleet schedules work under a power cap"] * 40)

    def load() -> None:
        with dep.http("alice@CUI") as c:
            while not stop.is_set():
                assert (
                    c.post("/v1/embeddings", json={"model": "auto", "input": [long_text] * 4}).status_code
                    == 200
                )

    workers = [threading.Thread(target=load) for _ in range(10)]
    for w in workers:
        w.start()
    try:
        grown = _wait_ready(api, "auto", replicas=2, timeout_s=90)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert grown["replicas"]["desired"] == 2
    deadline = time.monotonic() + 60
    while _ok(api.get("/v1/endpoints/auto"))["replicas"]["desired"] != 1:
        assert time.monotonic() < deadline, "the quiet endpoint did not shrink"
        time.sleep(0.5)
    scaled = [e for e in dep.audit("endpoint.scaled") if e.get("by") == "autoscaler"]
    assert [e["replicas"] for e in scaled][-2:] == [2, 1]
    assert api.delete("/v1/endpoints/auto").status_code == 204


# -- the hop's HTTP client, against a scripted replica ----------------------------------------
def _scripted_replica(script: list[bytes | None]) -> tuple[int, Callable[[], Awaitable[Any]]]:
    """Not a fixture: returns (port, serve) for a loopback server that, per accepted connection,
    reads one request head and body per script item and answers it with the bytes (sent in
    two pieces, to cross reads), or closes the connection when the item is None."""
    import asyncio

    port = free_port()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while script:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(h.split(b":")[1] for h in head.split(b"\r\n") if h.startswith(b"content-length"))
            )
            await reader.readexactly(length)
            answer = script.pop(0)
            if answer is None:
                break
            writer.write(answer[: len(answer) // 2])
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(answer[len(answer) // 2 :])
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def serve() -> asyncio.Server:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        await server.start_serving()
        return server

    return port, serve


def test_upstream_client_answers_streams_reuses_and_fails_clearly() -> None:
    import asyncio

    from enclave.gateway.upstream import Client, UpstreamError

    body = b'{"ok": true}'
    whole = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    events = b'data: {"i": 1}\r\n\r\ndata: [DONE]\r\n\r\n'
    chunked = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(events), events)
    )
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10

    async def scenario() -> None:
        # one connection: an answer, a stream, then the replica closes it while it is idle
        port, serve = _scripted_replica([whole, chunked, None, whole, cut])
        server = await serve()
        client = Client()
        url = f"http://127.0.0.1:{port}"
        r = await client.post(url, "/v1/chat/completions", b"{}")
        assert (r.status_code, await r.aread()) == (200, body)
        await r.aclose()
        r = await client.post(url, "/v1/chat/completions", b'{"stream": true}')
        assert [line async for line in r.aiter_lines()] == ['data: {"i": 1}', "", "data: [DONE]", ""]
        await r.aclose()
        # The server closes the pooled connection on the next request ("None"): the request is
        # sent once more on a fresh connection and answered.
        r = await client.post(url, "/v1/embeddings", b"{}")
        assert await r.aread() == body
        await r.aclose()
        # An answer cut short is an error, never a short body.
        r = await client.post(url, "/v1/embeddings", b"{}")
        with pytest.raises(UpstreamError):
            await r.aread()
        await r.aclose()
        with pytest.raises(UpstreamError):  # nobody listening
            await client.post(f"http://127.0.0.1:{free_port()}", "/v1/embeddings", b"{}")
        client.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)  # the aborted transports' close callbacks

    asyncio.run(scenario())
