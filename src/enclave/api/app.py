"""The application factory: context, bootstrap, middleware, error mapping, routers."""

from __future__ import annotations

import dataclasses
import gc
import importlib.resources
import inspect
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from enclave import __version__
from enclave.api import problems
from enclave.api.deps import plain_text
from enclave.api.limits import BodyLimit, RequestGuard
from enclave.api.routes import (
    artifacts,
    audit,
    auth,
    datasets,
    endpoints,
    gateway,
    jobs,
    models,
    regions,
    tenancy,
    training,
    transfers,
    workers,
)
from enclave.scheduler.policies import make_policy
from enclave.services.auth import AuthFailureRecorder, note_failed_authentication
from enclave.services.bootstrap import bootstrap
from enclave.services.context import Context, Settings, default_home
from enclave.services.endpoints import Supervisor
from enclave.services.gateway import Gateway
from enclave.services.leadership import Leadership
from enclave.services.runner import JobRunner


class LiveLoops:
    """The live scheduling loop and the endpoint supervisor of this process. Every replica
    routes gateway calls to healthy endpoint replicas; only the leader among the replicas
    sharing the store schedules jobs and manages endpoint replicas."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.runner: JobRunner | None = None
        self.supervisor = Supervisor(ctx, manage=False)
        self.leadership = Leadership(ctx, self._gain, self._loss)

    def start(self) -> None:
        self.supervisor.start()
        self.leadership.start()

    def stop(self) -> None:
        self.leadership.stop()
        self.supervisor.stop()

    def _gain(self) -> None:
        self.runner = JobRunner(self.ctx, make_policy(self.ctx.settings.policy))
        self.runner.start()  # reconciles running jobs from the store first
        self.supervisor.manage = True

    def _loss(self) -> None:
        self.supervisor.manage = False
        if self.runner is not None:
            self.runner.stop()
            self.runner = None


def create_app(
    settings: Settings | None = None,
    ctx: Context | None = None,
    run_jobs: bool = True,
    freeze_heap: bool = False,
    record_failures_each_minute: bool = False,
) -> FastAPI:
    """Build the app. Pass ``ctx`` to share one context (tests); else one is made at start-up.

    ``run_jobs`` starts the live scheduling loop with the server (the embedded default).
    ``freeze_heap`` (the server process's own app, not tests making many): once started,
    everything allocated so far — modules, routes, mappers, the context — is moved out of
    the cyclic garbage collector's sight (``gc.freeze``). A full collection then walks what
    requests made rather than ~165,000 long-lived objects: ~1 ms instead of ~50 ms, paused
    under the GIL in the middle of whichever request or scheduling pass triggered it.
    ``record_failures_each_minute`` (the server process's own app): failed authentications
    are recorded as each minute ends; otherwise (tests, whose audit assertions must not
    depend on when a minute ends) when the app stops.
    """
    settings = settings or (ctx.settings if ctx else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = app.state.ctx is None
        if own:
            app.state.ctx = Context(settings)
        bootstrap(app.state.ctx)
        live = LiveLoops(app.state.ctx) if run_jobs else None
        if live is not None:
            live.start()
        app.state.live = live
        app.state.gateway = Gateway(app.state.ctx)
        recorder = AuthFailureRecorder(app.state.ctx)
        if record_failures_each_minute:
            recorder.start()
        if freeze_heap:
            gc.collect()  # what start-up left as garbage goes now, not frozen for good
            gc.freeze()
        yield
        replicas = getattr(app.state, "replica_client", None)  # made on first gateway call
        if replicas is not None:
            replicas.close()
        app.state.gateway.close()
        recorder.stop()
        if live is not None:
            live.stop()
        if own:
            app.state.ctx.close()

    app = FastAPI(
        title="Enclave",
        version=__version__,
        description="Self-hosted AI + HPC cloud control plane with mandatory access control.",
        lifespan=lifespan,
        dependencies=[Depends(plain_text)],
        docs_url=None,  # served by _docs_pages, from Enclave itself rather than public CDNs
        redoc_url=None,
        **_NO_NATIVE_TELEMETRY,
    )
    app.state.ctx = ctx
    _document(app, gateway.OPENAPI_PATHS)
    _docs_pages(app)
    problems.install(app)
    # The gateway's routes first: matched on every model call, they are the hot path.
    app.include_router(gateway.router, prefix="/v1")
    app.include_router(gateway.metrics_router)
    for module in (
        auth,
        tenancy,
        regions,
        artifacts,
        transfers,
        jobs,
        audit,
        datasets,
        models,
        training,
        endpoints,
        workers,
    ):
        app.include_router(module.router, prefix="/v1")

    @app.get("/healthz", tags=["health"])
    def healthz(request: Request) -> dict[str, Any]:
        """Up, and whether this replica leads (runs the live loop) among those sharing the store."""
        live: LiveLoops | None = getattr(request.app.state, "live", None)
        return {"status": "ok", "version": __version__, "leader": bool(live and live.leadership.leader)}

    app.add_middleware(RequestGuard, on_unauthenticated=_note_unauthenticated)
    app.add_middleware(
        BodyLimit,
        default_bytes=settings.max_json_bytes,
        overrides={
            ("POST", path): settings.max_upload_bytes
            for path in (artifacts.UPLOAD_PATH, "/v1/datasets", models.UPLOAD_PATH)
        },
    )
    return app


def _note_unauthenticated(scope: Any, kind: str) -> None:
    """A 401 was answered (or a login turned away): counted for the per-source, per-minute
    audit record."""
    ctx: Context | None = scope["app"].state.ctx
    if ctx is not None:
        client = scope.get("client")
        note_failed_authentication(ctx, client[0] if client else None, kind)


# FastAPI's native OpenTelemetry (releases that have it) looks the global providers up on every
# request, ~6% of a gateway call's CPU; Enclave's own observability is /metrics and the audit.
_NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def _document(app: FastAPI, paths: dict[str, Any]) -> None:
    """Add the OpenAPI entries of routes that FastAPI does not describe (plain Starlette ones),
    and every operation's problem+json error answers (:func:`problems.document`)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            generate()["paths"].update(paths)
            problems.document(app.openapi_schema)  # type: ignore[arg-type]
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


# The API's documentation pages: Swagger UI at /docs and ReDoc at /redoc, their scripts, styles
# and icon served by Enclave itself from the fastapi-offline package (MIT; it ships the
# swagger-ui-dist and ReDoc bundles), never from a public CDN — a classified site has none —
# and ReDoc without web fonts (the system's are used). GET / leads to the documentation until
# there is a web console.
DOCS_ASSETS_URL = "/docs-assets"
DOCS_ASSETS = importlib.resources.files("fastapi_offline") / "static"


def _docs_pages(app: FastAPI) -> None:
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=str(DOCS_ASSETS)), name="docs-assets")
    title = f"{app.title} API"
    oauth2_redirect = "/docs/oauth2-redirect"
    favicon = f"{DOCS_ASSETS_URL}/favicon.png"

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/docs", status_code=307)

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=str(app.openapi_url),
            title=f"{title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect,
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=favicon,
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=str(app.openapi_url),
            title=f"{title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (used by ``enclave up``): settings from the environment."""
    home = Path(os.environ["ENCLAVE_HOME"]).expanduser() if "ENCLAVE_HOME" in os.environ else default_home()
    settings = Settings(
        home=home,
        db_url=os.environ.get("ENCLAVE_DB_URL") or None,
        fleet=os.environ.get("ENCLAVE_FLEET", "local"),
        policy=os.environ.get("ENCLAVE_POLICY", "priority"),
    )
    audit_options: dict[str, Any] = {
        "audit_key_file": _path_env("ENCLAVE_AUDIT_KEY_FILE"),
        "audit_sink_file": _path_env("ENCLAVE_AUDIT_SINK_FILE"),
        "audit_syslog": os.environ.get("ENCLAVE_AUDIT_SYSLOG") or None,
    }
    settings = dataclasses.replace(settings, **audit_options)
    pending = _float_env("ENCLAVE_MAX_PENDING_JOBS")
    if pending is not None:
        settings = dataclasses.replace(settings, max_pending_jobs=int(pending))
    idle_s = _float_env("ENCLAVE_ENDPOINT_IDLE_S")
    if idle_s is not None:
        settings = dataclasses.replace(settings, endpoint_idle_s=idle_s)
    return create_app(settings, freeze_heap=True, record_failures_each_minute=True)


def _float_env(name: str) -> float | None:
    """A numeric setting from the environment, when it is set."""
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"{name} must be a number, not {value!r}") from None


def _path_env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None
