"""Gateway overhead (issue 5): requests/s and added p50/p99 latency of /v1/chat/completions and
/v1/embeddings through Enclave's gateway versus the same replica called directly, and through
the LiteLLM proxy in front of the same replica, in the same run.

    python benchmarks/bench_gateway.py                         # everything
    python benchmarks/bench_gateway.py --duration 5 --concurrency 16 --skip-litellm

LiteLLM is not an Enclave dependency (and pins its own FastAPI/pydantic/httpx versions), so
install it in a virtual environment of its own and point --litellm-bin at it:

    python -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install 'litellm[proxy]'
    python benchmarks/bench_gateway.py --litellm-bin /tmp/litellm-venv/bin/litellm

Added latency is measured two ways: closed loop at one connection (each call as soon as the
last answered), and open loop at a fixed arrival rate, the same schedule for every target
(``paced``), which keeps the replica's idle time between calls equal behind each target.

The upstreams are deliberately cheap, so that what is measured is the hop, not the model:
* chat/completions: the ``sklearn`` runtime serving a tiny LogisticRegression (two features);
* embeddings: the ``sentence-embeddings`` runtime serving the builtin MiniLM (real compute,
  several ms per call, so the gateway's share of the latency is smaller there).

Both are deployed as Enclave endpoints (one replica each, started by the supervisor), and the
"direct" and "litellm" targets call a twin of each replica: the same program, runtime and model
folder, unconfined, on a loopback TCP port (the endpoint's own replica is confined and listens
only on a Unix socket the gateway reaches, checking its peer's uid, as in production).
The gateway runs with everything on: token authentication, the label/region policy check,
guardrail screening of the prompt, rate/budget admission, and per-call metering and a signed
audit record.

Load: ``wrk`` (Debian package ``wrk``) when it is installed, else an asyncio+httpx client: N
connections for D seconds per target, one target at a time (they would otherwise compete for
the same cores); and a concurrency-1 run per target for the added latency of one call. Each
run is cut into --rounds slices taken in turn across the targets, so that drift in the
replica's own speed over the run weighs on all of them alike. The load
generator runs on the same machine (and cores) as the server and the replica.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    LOOPBACK,
    REPO,
    Server,
    cpu_seconds,
    enclave_up,
    free_port,
    git_state,
    machine,
    median,
    percentile,
    print_table,
)

FEATURES = ["bytes", "packets"]
ROUTES = {
    "chat/completions": {
        "model": "clf",
        "messages": [{"role": "user", "content": json.dumps({"bytes": 95, "packets": 90})}],
    },
    "embeddings": {"model": "emb", "input": "a cat sits on the mat"},
}


@dataclass
class Target:
    name: str  # direct / enclave gateway / litellm
    base: str  # e.g. http://127.0.0.1:1234/v1
    headers: dict[str, str] = field(default_factory=dict)
    pid: int | None = None  # the process whose CPU time is charged to the hop


@dataclass
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    hop_cpu_ms: float | None  # CPU ms per request of the hop's process (None for direct)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# -- the upstream models ---------------------------------------------------------------------
def classifier_archive(tmp: Path) -> bytes:
    """A tiny LogisticRegression (as in tests/gateway/test_gateway_live.py), packed for upload."""
    import io

    import numpy as np
    import skops.io
    from sklearn.linear_model import LogisticRegression

    from enclave.archive import pack

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


def _ok(r: httpx.Response, status: int = 200) -> dict:
    if r.status_code != status:
        raise RuntimeError(f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:500]}")
    return r.json()


def roomy_fleet(tmp: Path) -> str:
    """The local fleet with room for the replicas (each reserves memory)."""
    text = (REPO / "src/enclave/fleets/local.toml").read_text()
    path = tmp / "fleet.toml"
    path.write_text(
        text.replace("memory_mb = 4096", "memory_mb = 16384")
        .replace("cpus = 2", "cpus = 4")
        .replace("power_cap_mw = 0.0002", "power_cap_mw = 0.01")
    )
    return str(path)


def deploy(server: Server, tmp: Path) -> str:
    """Agency, user, CUI token; the two models and one-replica endpoints. Returns the token."""
    with server.client() as admin:
        _ok(admin.post("/v1/agencies", json={"name": "bench"}), 201)
        _ok(
            admin.post(
                "/v1/users",
                json={"name": "bench", "agency": "bench", "clearance": "SECRET", "roles": ["user"]},
            ),
            201,
        )
        token = _ok(admin.post("/v1/tokens", json={"user": "bench", "label": "CUI"}), 201)["token"]
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as api:
        emb = _ok(api.post("/v1/registry/builtin-models", json={"name": "minilm", "builtin": "minilm"}), 201)
        clf = _ok(
            api.post(
                "/v1/registry/models",
                params={"name": "tiny-clf", "runtime": "sklearn"},
                content=classifier_archive(tmp),
            ),
            201,
        )
        _ok(api.post("/v1/endpoints", json={"model": clf["id"], "name": "clf", "memory_mb": 2048}), 201)
        _ok(api.post("/v1/endpoints", json={"model": emb["id"], "name": "emb"}), 201)
        for name in ("clf", "emb"):
            deadline = time.monotonic() + 180
            while True:
                ep = _ok(api.get(f"/v1/endpoints/{name}"))
                if ep["state"] == "ready" and ep["replicas"]["ready"] >= 1:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"endpoint {name} not ready: {ep}")
                time.sleep(0.3)
    return token


def retire(server: Server, token: str) -> None:
    """Delete the endpoints and wait for the supervisor to stop their replicas."""
    with (
        contextlib.suppress(httpx.HTTPError),
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api,
    ):
        for ep in api.get("/v1/endpoints").json().get("items", []):
            api.delete(f"/v1/endpoints/{ep['name']}")
    deadline = time.monotonic() + 60
    while replicas(server.home) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in replicas(server.home):  # whatever did not stop in time
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def replicas(home: Path) -> dict[int, list[str]]:
    """Replica processes (not their sandboxes or shell wrappers) of this server: pid -> argv."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if (
            "enclave.serving.replica" in argv
            and not argv[0].endswith(("sh", "bwrap"))
            and any(a.startswith(str(home)) for a in argv)
        ):
            found[int(proc.name)] = argv
    return found


@contextlib.contextmanager
def direct_replica(home: Path, name: str, tmp: Path):  # type: ignore[no-untyped-def]
    """(pid, port) of a twin of the endpoint's replica for the "direct" and "litellm" targets.

    The endpoint's own replica is confined: it listens only on a Unix socket that the gateway
    reaches (and checks by its peer's uid), out of reach of a load generator on TCP. The twin
    is the same program with the same runtime and model folder, unconfined, on a TCP port of
    loopback: the replica alone, as a client would see it without the gateway."""
    found = next(((pid, a) for pid, a in replicas(home).items() if a[a.index("--name") + 1] == name), None)
    if found is None:
        raise RuntimeError(f"no replica process found for endpoint {name}")
    pid, argv = found
    # The twin computes with what the replica was given (its CPUs: torch's and BLAS's threads).
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
        if "=" in item and item.startswith(("ENCLAVE_CPUS", "OMP_", "MKL_", "OPENBLAS_"))
    )
    keep = []
    for flag in ("--runtime", "--model-dir", "--name"):
        if flag in argv:
            keep += [flag, argv[argv.index(flag) + 1]]
    if "--allow-pickle" in argv:
        keep.append("--allow-pickle")
    port_file = tmp / f"direct-{name}.port"
    env = {**os.environ, **environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "enclave.serving.replica", *keep, "--port-file", str(port_file)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the direct twin of replica {name} did not start")
            time.sleep(0.1)
        yield proc.pid, int(port_file.read_text().strip())
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)


# -- LiteLLM -----------------------------------------------------------------------------------
@contextlib.contextmanager
def litellm_proxy(binary: str, ports: dict[str, int], tmp: Path):  # type: ignore[no-untyped-def]
    cfg = tmp / "litellm.yaml"
    lines = ["model_list:"]
    for name, port in ports.items():
        lines += [
            f"  - model_name: {name}",
            "    litellm_params:",
            f"      model: openai/{name}",
            f"      api_base: http://{LOOPBACK}:{port}/v1",
            "      api_key: x",
        ]
    key = "sk-bench-" + os.urandom(16).hex()  # LiteLLM >= 1.10x refuses to start without one
    lines += ["litellm_settings:", "  drop_params: true", "  telemetry: false"]
    lines += ["general_settings:", f"  master_key: {key}"]
    cfg.write_text("\n".join(lines) + "\n")
    port = free_port()
    log = (tmp / "litellm.log").open("wb")
    env = dict(
        os.environ,
        LITELLM_LOG="ERROR",
        LITELLM_TELEMETRY="False",
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no network fetch at start
        NO_PROXY="*",
        no_proxy="*",
    )
    proc = subprocess.Popen(
        [binary, "--config", str(cfg), "--host", LOOPBACK, "--port", str(port), "--num_workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        url = f"http://{LOOPBACK}:{port}"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"litellm exited: {(tmp / 'litellm.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health/liveliness", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("litellm did not become live within 180 s")
            time.sleep(0.5)
        yield url, proc.pid, key
    finally:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


# -- load --------------------------------------------------------------------------------------
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{auth}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def run_wrk(url: str, headers: dict[str, str], body: dict, conns: int, seconds: float, tmp: Path) -> tuple:
    auth = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script = tmp / "wrk.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(body), auth=auth))
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if not m:
        raise RuntimeError(f"wrk printed no result: {out}")
    n, dur_us, p50_us, p99_us, sock_err, status_err = map(int, m.groups())
    return n, dur_us / 1e6, p50_us / 1000, p99_us / 1000, sock_err + status_err


async def _httpx_load(url: str, headers: dict[str, str], body: dict, conns: int, seconds: float) -> tuple:
    payload = json.dumps(body).encode()
    hdrs = {"content-type": "application/json", **headers}
    lat: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as client:
        t0 = time.perf_counter()
        end = t0 + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                s = time.perf_counter()
                try:
                    r = await client.post(url, content=payload, headers=hdrs)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                lat.append(time.perf_counter() - s)
                errors += not ok

        await asyncio.gather(*(worker() for _ in range(conns)))
        wall = time.perf_counter() - t0
    return len(lat), wall, percentile(lat, 50) * 1000, percentile(lat, 99) * 1000, errors


def measure(target: Target, route: str, conns: int, seconds: float, loadgen: str, tmp: Path) -> Result:
    url = f"{target.base}/{route}"
    body = ROUTES[route]
    # warm up (and check the answer is a 200) before measuring
    with httpx.Client(timeout=60, trust_env=False) as c:
        for _ in range(20):
            r = c.post(url, json=body, headers=target.headers)
            if r.status_code != 200:
                raise RuntimeError(f"{target.name} {route}: {r.status_code} {r.text[:300]}")
    cpu0 = sum(cpu_seconds(target.pid)) if target.pid else 0.0
    if loadgen == "wrk":
        n, wall, p50, p99, errors = run_wrk(url, target.headers, body, conns, seconds, tmp)
    else:
        n, wall, p50, p99, errors = asyncio.run(_httpx_load(url, target.headers, body, conns, seconds))
    cpu = (sum(cpu_seconds(target.pid)) - cpu0) if target.pid else None
    return Result(n, wall, p50, p99, errors, cpu / n * 1000 if cpu is not None and n else None)


def measure_rounds(
    targets: list[Target],
    route: str,
    conns: int,
    seconds: float,
    rounds: int,
    loadgen: str,
    tmp: Path,
    notes: list[str],
) -> dict[str, Result]:
    """Each target for SECONDS in all, in ROUNDS slices taken in turn (the order rotating), so
    that a replica whose speed drifts over the run (the embedding model's does, by a few
    tenths of a millisecond) weighs on every target alike. Per target: the slices' requests
    and seconds added up, their median p50 and median p99."""
    slices: dict[str, list[Result]] = {t.name: [] for t in targets}
    for r in range(rounds):
        for target in targets[r % len(targets) :] + targets[: r % len(targets)]:
            try:
                res = measure(target, route, conns, seconds / rounds, loadgen, tmp)
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                notes.append(f"{target.name} {route} c={conns}: {exc}")
                continue
            slices[target.name].append(res)
            print(
                f"  {route:17} {target.name:16} c={conns:<3} {res.rps:8,.0f} req/s "
                f"p50 {res.p50_ms:7.2f} ms p99 {res.p99_ms:7.2f} ms errors {res.errors}",
                flush=True,
            )
    out = {}
    for name, parts in slices.items():
        if parts:
            cpu = [p.hop_cpu_ms for p in parts]
            out[name] = Result(
                sum(p.requests for p in parts),
                sum(p.seconds for p in parts),
                median([p.p50_ms for p in parts]),
                median([p.p99_ms for p in parts]),
                sum(p.errors for p in parts),
                None
                if None in cpu
                else sum(c * p.requests for c, p in zip(cpu, parts, strict=True))  # type: ignore[operator]
                / max(1, sum(p.requests for p in parts)),
            )
    return out


PACED_RATE = {"chat/completions": 200.0, "embeddings": 40.0}  # calls/s: well below either's capacity


def paced(targets: list[Target], route: str, rate: float, calls: int, rounds: int) -> dict[str, tuple]:
    """Added latency at a fixed arrival rate (open loop, one connection): calls start on a
    fixed schedule, the same for every target, so the replica sits idle between calls for
    the same time behind each (a closed loop at concurrency 1 spaces the replica's calls by
    the hop itself, and a model's own compute is slower after its core sat idle: see
    pause_probe). Per target: (calls, median p50 of the rounds, median p99)."""
    body = json.dumps(ROUTES[route]).encode()
    lat: dict[str, list[list[float]]] = {t.name: [] for t in targets}
    for r in range(rounds):
        for target in targets[r % len(targets) :] + targets[: r % len(targets)]:
            headers = {**target.headers, "content-type": "application/json"}
            with httpx.Client(base_url=target.base, timeout=30, trust_env=False) as client:
                for _ in range(20):  # warm
                    client.post(f"/{route}", content=body, headers=headers).raise_for_status()
                got = []
                start = time.perf_counter()
                for k in range(calls // rounds):
                    wait = start + k / rate - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    t = time.perf_counter()
                    client.post(f"/{route}", content=body, headers=headers).raise_for_status()
                    got.append(time.perf_counter() - t)
            lat[target.name].append(got)
    return {
        name: (
            sum(len(x) for x in parts),
            median([percentile(x, 50) * 1000 for x in parts]),
            median([percentile(x, 99) * 1000 for x in parts]),
        )
        for name, parts in lat.items()
        if parts
    }


def pause_probe(port: int, results: dict[tuple[str, str, str], Result], calls: int = 300) -> str:
    """The embedding replica alone, one call at a time: back to back, and with a pause between
    calls as long as the gateway's added p50. A model's own compute is slower after its core
    sat idle (cold caches), so part of what a hop adds at concurrency 1 is the upstream's."""
    gw, direct = (
        results.get(("embeddings", "enclave gateway", "1")),
        results.get(("embeddings", "direct", "1")),
    )
    pause = max(0.0, gw.p50_ms - direct.p50_ms) / 1000 if gw and direct else 0.002
    body = json.dumps(ROUTES["embeddings"]).encode()
    p50 = {}
    with httpx.Client(base_url=f"http://{LOOPBACK}:{port}", timeout=30, trust_env=False) as client:
        for gap in (0.0, pause, 0.0, pause):  # twice each, alternating
            lat = []
            for _ in range(calls):
                t = time.perf_counter()
                r = client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
                lat.append(time.perf_counter() - t)
                r.raise_for_status()
                if gap:
                    time.sleep(gap)
            p50.setdefault(gap, []).append(percentile(lat, 50) * 1000)
    return (
        f"embedding replica alone (httpx, 1 connection): p50 {median(p50[0.0]):.2f} ms back to back, "
        f"{median(p50[pause]):.2f} ms with a {pause * 1000:.2f} ms pause between calls "
        f"(+{median(p50[pause]) - median(p50[0.0]):.2f} ms of the model's own)"
    )


def profile(
    out: str, pid: int, target: Target, route: str, args: argparse.Namespace, loadgen: str, tmp: Path
) -> None:
    """py-spy the server during an extra gateway run of ROUTE at --concurrency (not in the
    table: sampling slows it).
    OUT ending in .svg: a flame graph; else py-spy's raw (collapsed stacks) format."""
    spy = shutil.which("py-spy") or "/tmp/litellm-venv/bin/py-spy"
    fmt = "flamegraph" if out.endswith(".svg") else "raw"
    secs = max(2, round(args.duration))
    cmd = [
        spy,
        "record",
        "-o",
        out,
        "-f",
        fmt,
        "--pid",
        str(pid),
        "--duration",
        str(secs - 1),
        "--rate",
        str(args.profile_rate),
        "--gil",  # only the thread holding the GIL: where the CPU goes, not where threads wait
    ]
    profiler = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        measure(target, route, args.concurrency, secs, loadgen, tmp)
    finally:
        profiler.wait(timeout=120)


# -- main --------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target, concurrent run")
    parser.add_argument(
        "--latency-duration", type=float, default=5.0, help="seconds per target, concurrency 1"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="connections in the concurrent run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="slices per target, taken in turn (see measure_rounds)"
    )
    parser.add_argument(
        "--paced-calls", type=int, default=600, help="calls per target at a fixed rate (open loop)"
    )
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--litellm-bin", default=shutil.which("litellm") or "/tmp/litellm-venv/bin/litellm")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--routes", default="chat/completions,embeddings")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy the server in an extra gateway run of the first --routes route (.svg: flame graph, else raw)",
    )
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    args = parser.parse_args()
    loadgen = args.loadgen if args.loadgen != "auto" else ("wrk" if shutil.which("wrk") else "httpx")
    routes = [r for r in args.routes.split(",") if r]

    print(f"Machine: {machine()}")
    print(f"Load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"Commit: {git_state()}")
    print(f"Command: python {' '.join(sys.argv)}")
    print(
        f"Load generator: {loadgen}; {args.concurrency} connections x {args.duration:g} s, "
        f"then 1 connection x {args.latency_duration:g} s, per target, one target at a time, "
        f"in {args.rounds} slices per target taken in turn (wrk: whole seconds)",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="enclave-bench-gw-"))
    results: dict[tuple[str, str, str], Result] = {}
    paced_results: dict[str, dict[str, tuple]] = {}
    notes: list[str] = []
    token = ""
    try:
        with enclave_up(fleet=roomy_fleet(tmp)) as server:
            try:
                t0 = time.monotonic()
                token = deploy(server, tmp)
                print(f"Endpoints ready in {time.monotonic() - t0:.1f} s", flush=True)
                ports = {}
                twins = contextlib.ExitStack()
                for name in ("clf", "emb"):
                    pid, port = twins.enter_context(direct_replica(server.home, name, tmp))
                    ports[name] = port
                    print(f"  replica {name}: direct twin pid {pid}, port {port}", flush=True)
                targets = {
                    "chat/completions": [Target("direct", f"http://{LOOPBACK}:{ports['clf']}/v1")],
                    "embeddings": [Target("direct", f"http://{LOOPBACK}:{ports['emb']}/v1")],
                }
                for route in targets:
                    targets[route].append(
                        Target(
                            "enclave gateway",
                            f"{server.url}/v1",
                            {"Authorization": f"Bearer {token}"},
                            server.proc.pid,
                        )
                    )
                with twins, contextlib.ExitStack() as stack:
                    if not args.skip_litellm:
                        if not Path(args.litellm_bin).exists():
                            notes.append(f"LiteLLM skipped: {args.litellm_bin} not found")
                        else:
                            try:
                                url, lpid, key = stack.enter_context(
                                    litellm_proxy(args.litellm_bin, ports, tmp)
                                )
                                auth = {"Authorization": f"Bearer {key}"}
                                for route in targets:
                                    targets[route].append(Target("litellm", f"{url}/v1", auth, lpid))
                            except RuntimeError as exc:
                                notes.append(f"LiteLLM could not start: {exc}")
                    for route in routes:
                        for conns, secs in ((1, args.latency_duration), (args.concurrency, args.duration)):
                            for name, res in measure_rounds(
                                targets[route], route, conns, secs, args.rounds, loadgen, tmp, notes
                            ).items():
                                results[(route, name, str(conns))] = res
                    for route in routes:
                        paced_results[route] = paced(
                            targets[route], route, PACED_RATE[route], args.paced_calls, args.rounds
                        )
                    if "embeddings" in routes:
                        notes.append(pause_probe(ports["emb"], results))
                    if args.profile:
                        profile(
                            args.profile,
                            server.proc.pid,
                            targets[routes[0]][1],
                            routes[0],
                            args,
                            loadgen,
                            tmp,
                        )
                        notes.append(
                            f"py-spy profile of the gateway (extra, unrecorded {routes[0]} run): {args.profile}"
                        )
            finally:
                if token:
                    retire(server, token)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for route in routes:
        for conns in ("1", str(args.concurrency)):
            base = results.get((route, "direct", conns))
            for name in ("direct", "enclave gateway", "litellm"):
                r = results.get((route, name, conns))
                if r is None:
                    continue
                added = (
                    f"{r.p50_ms - base.p50_ms:+.2f} / {r.p99_ms - base.p99_ms:+.2f}"
                    if base is not None and name != "direct"
                    else "-"
                )
                rows.append(
                    [
                        route,
                        name,
                        conns,
                        f"{r.rps:,.0f}",
                        f"{r.p50_ms:.2f}",
                        f"{r.p99_ms:.2f}",
                        added,
                        f"{r.hop_cpu_ms:.2f}" if r.hop_cpu_ms is not None else "-",
                        r.errors,
                    ]
                )
    print_table(
        "Gateway overhead (same replica behind each target)",
        [
            "route",
            "target",
            "conns",
            "req/s",
            "p50 ms",
            "p99 ms",
            "added p50 / p99 ms",
            "hop CPU ms/req",
            "errors",
        ],
        rows,
    )
    rows = []
    for route, by_target in paced_results.items():
        base = by_target.get("direct")
        for name, (n, p50, p99) in by_target.items():
            added = f"{p50 - base[1]:+.2f} / {p99 - base[2]:+.2f}" if base and name != "direct" else "-"
            rows.append([route, name, f"{PACED_RATE[route]:g}", n, f"{p50:.2f}", f"{p99:.2f}", added])
    if rows:
        print_table(
            "Added latency at a fixed arrival rate (open loop, 1 connection, same schedule per target)",
            ["route", "target", "calls/s", "calls", "p50 ms", "p99 ms", "added p50 / p99 ms"],
            rows,
        )
    for note in notes:
        print(f"Note: {note}")
    print(f"Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
