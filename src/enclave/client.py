"""A small typed Python SDK over the HTTP API (httpx). The CLI is built on it.

    from enclave.client import Client
    with Client("http://127.0.0.1:8080", token) as api:
        art = api.put_artifact(Path("report.pdf"))

Errors come back as the same :mod:`enclave.errors` classes the server raised, carrying the
server's problem+json ``detail``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from enclave import errors

DEFAULT_URL = "http://127.0.0.1:8080"
UPLOAD_CHUNK_BYTES = 1 << 20
_BY_STATUS: dict[int, type[errors.EnclaveError]] = {
    400: errors.InvalidInput,
    401: errors.NotAuthenticated,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.TooLarge,
    422: errors.InvalidInput,
    503: errors.Unavailable,
}


class Client:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout_s: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        # Certificates are loaded only for an https:// server: the store costs ~40 ms per CLI
        # call, and a plain-http client (relative paths, no redirects followed) never uses it.
        tls = self.url.lower().startswith("https://")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s, verify=tls)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ----------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise errors.Unavailable(
                f"cannot reach Enclave at {self.url} ({exc.__class__.__name__})"
            ) from exc
        _raise_for_problem(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        return response.json() if response.content else None

    # -- any list route: a page at a time --------------------------------------------------
    def page(
        self, path: str, limit: int = 1000, *, offset: int = 0, cursor: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """One page of a list route (``/v1/artifacts``, ``/v1/jobs`` ...), in its order:
        ``{"items", "count", "total", "next_cursor"}``; pass ``next_cursor`` back as ``cursor``
        for the next page (None on the last). ``params``: the route's filters (None: unset)."""
        query = _present(limit=limit, offset=offset or None, cursor=cursor, **params)
        return dict(self._json("GET", path, params=query))

    def iter_pages(self, path: str, page_size: int = 1000, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a list route, in its order, fetched a page at a time."""
        cursor: str | None = None
        while True:
            page = self.page(path, page_size, cursor=cursor, **params)
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    # -- auth --------------------------------------------------------------------------
    def login(self, user: str, password: str, label: str) -> dict[str, Any]:
        return dict(
            self._json("POST", "/v1/auth/login", json={"user": user, "password": password, "label": label})
        )

    def whoami(self) -> dict[str, Any]:
        return dict(self._json("GET", "/v1/whoami"))

    def mint_token(self, user: str, label: str, ttl_s: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"user": user, "label": label}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        return dict(self._json("POST", "/v1/tokens", json=body))

    def revoke_token(self, token_id: str) -> None:
        self._send("DELETE", f"/v1/tokens/{token_id}")

    # -- tenancy -----------------------------------------------------------------------
    def create_agency(self, name: str, quotas: dict[str, Any] | None = None) -> dict[str, Any]:
        return dict(self._json("POST", "/v1/agencies", json={"name": name, "quotas": quotas or {}}))

    def list_agencies(self) -> list[dict[str, Any]]:
        return list(self.iter_pages("/v1/agencies"))

    def set_quotas(self, agency: str, quotas: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("PUT", f"/v1/agencies/{agency}/quotas", json=quotas))

    def agency_usage(self, agency: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/agencies/{agency}/usage"))

    def create_project(self, agency: str, name: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/agencies/{agency}/projects", json={"name": name}))

    def list_projects(self, agency: str) -> list[dict[str, Any]]:
        return list(self.iter_pages(f"/v1/agencies/{agency}/projects"))

    def create_user(
        self, name: str, agency: str, clearance: str, roles: list[str], password: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "agency": agency, "clearance": clearance, "roles": roles}
        if password is not None:
            body["password"] = password
        return dict(self._json("POST", "/v1/users", json=body))

    def list_users(self) -> list[dict[str, Any]]:
        return list(self.iter_pages("/v1/users"))

    def update_user(self, name: str, **changes: Any) -> dict[str, Any]:
        return dict(self._json("PATCH", f"/v1/users/{name}", json=changes))

    def request_clearance(self, name: str, clearance: str) -> dict[str, Any]:
        """A lowering applies at once; a raise is pending until a second admin approves it."""
        return dict(self._json("POST", f"/v1/users/{name}/clearance", json={"clearance": clearance}))

    def list_clearance_requests(self, state: str | None = None) -> list[dict[str, Any]]:
        return list(self.iter_pages("/v1/clearance-requests", state=state or None))

    def approve_clearance(self, request_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/clearance-requests/{request_id}/approve"))

    def refuse_clearance(self, request_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/clearance-requests/{request_id}/refuse"))

    def set_password(self, name: str, new_password: str, current_password: str | None = None) -> None:
        body = {"new_password": new_password}
        if current_password is not None:
            body["current_password"] = current_password
        self._send("PUT", f"/v1/users/{name}/password", json=body)

    def regions(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/regions")["items"])

    # -- artifacts ---------------------------------------------------------------------
    def put_artifact(
        self,
        path: Path,
        name: str | None = None,
        project: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Stream a file up; the server checks the SHA-256 we computed beforehand."""
        digest = _sha256_file(path)
        params: dict[str, str] = {"name": name or path.name}
        if project:
            params["project"] = project
        with path.open("rb") as fh:
            return dict(
                self._json(
                    "POST",
                    "/v1/artifacts",
                    params=params,
                    content=_chunks(fh, progress),
                    headers={"X-Content-SHA256": digest, "Content-Type": "application/octet-stream"},
                )
            )

    def list_artifacts(self, kind: str | None = None) -> list[dict[str, Any]]:
        params = {"kind": kind} if kind else {}
        return list(self._json("GET", "/v1/artifacts", params=params)["items"])

    def artifact(self, artifact_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/artifacts/{artifact_id}"))

    def download(self, artifact_id: str, out: BinaryIO) -> dict[str, str]:
        """Stream content into ``out``; raises if the bytes do not match the server's checksum."""
        return self._download_checked(f"/v1/artifacts/{artifact_id}/content", out)

    def delete_artifact(self, artifact_id: str) -> None:
        self._send("DELETE", f"/v1/artifacts/{artifact_id}")

    def share_artifact(self, artifact_id: str, agency: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/artifacts/{artifact_id}/shares", json={"agency": agency}))

    # -- transfers ---------------------------------------------------------------------
    def request_transfer(self, artifact_id: str, to: str, why: str) -> dict[str, Any]:
        return dict(
            self._json("POST", "/v1/transfers", json={"artifact_id": artifact_id, "to": to, "why": why})
        )

    def review_transfer(self, transfer_id: str, approve: bool, comment: str | None = None) -> dict[str, Any]:
        verb = "approve" if approve else "refuse"
        body = {"comment": comment} if comment else None
        return dict(self._json("POST", f"/v1/transfers/{transfer_id}/{verb}", json=body))

    def override_transfer(self, transfer_id: str, reason: str) -> dict[str, Any]:
        """Vouch, as a release authority, for content the guard could not read (audited)."""
        return dict(self._json("POST", f"/v1/transfers/{transfer_id}/override", json={"reason": reason}))

    def release_transfer(self, transfer_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/transfers/{transfer_id}/release"))

    def transfer(self, transfer_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/transfers/{transfer_id}"))

    def list_transfers(self, state: str | None = None) -> list[dict[str, Any]]:
        params = {"state": state} if state else {}
        return list(self._json("GET", "/v1/transfers", params=params)["items"])

    # -- jobs ------------------------------------------------------------------------------
    def submit_job(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Submit one job (the JSON of ``POST /v1/jobs``); returns it with its ``id`` and ``state``."""
        return dict(self._json("POST", "/v1/jobs", json=spec))

    def submit_jobs(self, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Submit many jobs in one request and one transaction."""
        return list(self._json("POST", "/v1/jobs/batch", json={"jobs": specs})["jobs"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/jobs/{job_id}"))

    def list_jobs(self, state: str | None = None, limit: int = 1000, **filters: Any) -> list[dict[str, Any]]:
        """One page of jobs, newest first (``filters``: as for :meth:`jobs_page`)."""
        return list(self.jobs_page(state, limit, **filters)["items"])

    def jobs_page(
        self,
        state: str | None = None,
        limit: int = 1000,
        *,
        offset: int = 0,
        cursor: str | None = None,
        name: str | None = None,
        array: str | None = None,
        region: str | None = None,
        label: str | None = None,
        owner: str | None = None,
        since: str | None = None,
        until: str | None = None,
        kind: str | None = None,
    ) -> dict[str, Any]:
        """``{"items", "count", "total", "next_cursor"}``: pass ``next_cursor`` back as
        ``cursor`` for the next page (None on the last); ``since``/``until`` are ISO 8601."""
        params = _present(
            state=state or None,
            limit=limit,
            offset=offset or None,
            cursor=cursor,
            name=name,
            array=array,
            region=region,
            label=label,
            owner=owner,
            since=since,
            until=until,
            kind=kind,
        )
        return dict(self._json("GET", "/v1/jobs", params=params))

    def iter_jobs(
        self, state: str | None = None, page_size: int = 1000, **filters: Any
    ) -> Iterator[dict[str, Any]]:
        """Every job that matches, newest first, fetched a page at a time."""
        return self.iter_pages("/v1/jobs", page_size, state=state or None, **filters)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def job_logs(self, job_id: str, stream: str = "stdout", offset: int = 0) -> tuple[str, int]:
        """Output from byte ``offset``; returns the text and the offset to ask for next."""
        response = self._send("GET", f"/v1/jobs/{job_id}/logs", params={"stream": stream, "offset": offset})
        return response.text, int(response.headers.get("x-next-offset", offset))

    # -- audit -------------------------------------------------------------------------
    def audit_records(
        self,
        after: int = 0,
        limit: int = 100,
        event: str | None = None,
        *,
        before: int | None = None,
        order: str = "asc",
    ) -> list[dict[str, Any]]:
        return list(self.audit_page(after, limit, event, before=before, order=order)["items"])

    def audit_page(
        self,
        after: int = 0,
        limit: int = 100,
        event: str | None = None,
        *,
        before: int | None = None,
        order: str = "asc",
        total: bool = False,
    ) -> dict[str, Any]:
        """``{"items", "count", "total", "next_after", "next_before"}``; ``order="desc"``:
        newest first, the next page with ``before=next_before``."""
        params = _present(
            after=after, limit=limit, event=event or None, before=before, order=order, total=total or None
        )
        return dict(self._json("GET", "/v1/audit", params=params))

    def audit_verify(
        self, pubkey: str | None = None, sink: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Verify the chain; ``pubkey`` pins the key, ``sink`` holds the newest checkpoints
        read from an append-only sink."""
        if pubkey is None and not sink:
            return dict(self._json("GET", "/v1/audit/verify"))
        return dict(self._json("POST", "/v1/audit/verify", json={"pubkey": pubkey, "sink": sink or []}))

    def audit_pubkey(self) -> str:
        return str(self._json("GET", "/v1/audit/pubkey")["public_key"])

    # -- datasets --------------------------------------------------------------------------
    def upload_dataset(
        self,
        path: Path,
        name: str | None = None,
        project: str | None = None,
        description: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Stream a file up as a new dataset version (same name: next version)."""
        params: dict[str, str] = {"name": name or path.name}
        for key, value in (("project", project), ("description", description)):
            if value:
                params[key] = value
        with path.open("rb") as fh:
            return self._upload("/v1/datasets", params, fh, progress)

    def list_datasets(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/datasets")["items"])

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/datasets/{dataset_id}"))

    def download_dataset(self, dataset_id: str, out: BinaryIO) -> dict[str, str]:
        """Stream a dataset's content into ``out``, checked against the server's checksum."""
        return self._download_checked(f"/v1/datasets/{dataset_id}/content", out)

    def delete_dataset(self, dataset_id: str) -> None:
        self._send("DELETE", f"/v1/datasets/{dataset_id}")

    # -- model registry ----------------------------------------------------------------------
    def register_model(
        self,
        source: Path | bytes,
        name: str,
        runtime: str,
        datasets: list[str] | None = None,
        base_models: list[str] | None = None,
        job: str | None = None,
        label: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Register a model: ``source`` is a directory or file (packed as tar.gz here) or the
        bytes of an archive. The server computes the label from the lineage; ``label``, when
        given, is the one you expect (refused if it is not that)."""
        params: dict[str, str] = {"name": name, "runtime": runtime}
        for key, value in (
            ("datasets", ",".join(datasets or [])),
            ("base_models", ",".join(base_models or [])),
            ("job", job),
            ("label", label),
        ):
            if value:
                params[key] = value
        import tempfile  # here, not at the top: every CLI call imports this module

        from enclave import archive

        with tempfile.TemporaryFile() as fh:
            if isinstance(source, bytes):
                fh.write(source)
            else:
                archive.pack(source, fh)
            fh.seek(0)
            return self._upload("/v1/registry/models", params, fh, progress)

    def register_builtin_model(self, name: str, builtin: str = "minilm") -> dict[str, Any]:
        return dict(
            self._json("POST", "/v1/registry/builtin-models", json={"name": name, "builtin": builtin})
        )

    def list_models(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/registry/models")["items"])

    def model(self, model_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/registry/models/{model_id}"))

    def delete_model(self, model_id: str) -> None:
        self._send("DELETE", f"/v1/registry/models/{model_id}")

    # -- training --------------------------------------------------------------------------
    def submit_training(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Submit a training job (the JSON of ``POST /v1/training``; ``script`` is an artifact id)."""
        return dict(self._json("POST", "/v1/training", json=spec))

    def list_training(self, limit: int = 1000) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/training", params={"limit": limit})["items"])

    def training(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/training/{job_id}"))

    def training_metrics(self, job_id: str, since_step: int = -1) -> dict[str, Any]:
        """``{"job", "state", "metrics": [{"step": ..., ...}]}`` with the points after ``since_step``."""
        return dict(self._json("GET", f"/v1/training/{job_id}/metrics", params={"since_step": since_step}))

    # -- endpoints -------------------------------------------------------------------------
    def deploy_endpoint(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Deploy a registered model (the JSON of ``POST /v1/endpoints``)."""
        return dict(self._json("POST", "/v1/endpoints", json=spec))

    def list_endpoints(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/endpoints")["items"])

    def endpoint(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/endpoints/{name}"))

    def scale_endpoint(
        self,
        name: str,
        replicas: int | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
    ) -> dict[str, Any]:
        body = {
            key: value
            for key, value in (
                ("replicas", replicas),
                ("min_replicas", min_replicas),
                ("max_replicas", max_replicas),
            )
            if value is not None
        }
        return dict(self._json("POST", f"/v1/endpoints/{name}/scale", json=body))

    def delete_endpoint(self, name: str) -> None:
        self._send("DELETE", f"/v1/endpoints/{name}")

    # -- gateway (OpenAI-compatible) -------------------------------------------------------------
    def chat(self, endpoint: str, messages: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """One non-streamed chat completion from an endpoint (``kwargs``: OpenAI parameters)."""
        body = {**kwargs, "model": endpoint, "messages": messages, "stream": False}
        return dict(self._json("POST", "/v1/chat/completions", json=body))

    def embeddings(self, endpoint: str, inputs: str | list[str]) -> dict[str, Any]:
        return dict(self._json("POST", "/v1/embeddings", json={"model": endpoint, "input": inputs}))

    # -- shared by the uploads and downloads above -------------------------------------------
    # -- region workers ----------------------------------------------------------------
    def create_worker_credential(self, region: str, worker: str | None = None) -> dict[str, Any]:
        body = {"region": region, **({"worker": worker} if worker else {})}
        return dict(self._json("POST", "/v1/worker-credentials", json=body))

    def list_worker_credentials(self) -> list[dict[str, Any]]:
        return list(self.iter_pages("/v1/worker-credentials"))

    def revoke_worker_credential(self, credential_id: str) -> dict[str, Any]:
        return dict(self._json("DELETE", f"/v1/worker-credentials/{credential_id}"))

    def worker_sync(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        """One round of a region worker (authenticated with the region credential)."""
        return dict(self._json("POST", f"/v1/workers/{region}/sync", json=body))

    def worker_put_log(self, region: str, job_id: str, stream: str, offset: int, data: bytes) -> int:
        """Append a job's output from ``offset``; returns the bytes the server now holds."""
        answer = self._json(
            "PUT",
            f"/v1/workers/{region}/jobs/{job_id}/logs/{stream}",
            params={"offset": offset},
            content=data,
        )
        return int(answer["size"])

    def _upload(
        self,
        path: str,
        params: dict[str, str],
        fh: BinaryIO,
        progress: Callable[[int], None] | None,
    ) -> dict[str, Any]:
        """Stream a seekable file up with the SHA-256 of its content for the server to check."""
        digest = hashlib.sha256()
        while block := fh.read(UPLOAD_CHUNK_BYTES):
            digest.update(block)
        fh.seek(0)
        return dict(
            self._json(
                "POST",
                path,
                params=params,
                content=_chunks(fh, progress),
                headers={"X-Content-SHA256": digest.hexdigest(), "Content-Type": "application/octet-stream"},
            )
        )

    def _download_checked(self, path: str, out: BinaryIO) -> dict[str, str]:
        digest = hashlib.sha256()
        try:
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    _raise_for_problem(response)
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    out.write(chunk)
                expected = response.headers.get("x-content-sha256", "")
                label = response.headers.get("x-enclave-label", "")
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"download failed: {exc.__class__.__name__}") from exc
        if digest.hexdigest() != expected:
            raise errors.EnclaveError("downloaded content does not match its checksum")
        return {"sha256": expected, "label": label}


def _present(**params: Any) -> dict[str, Any]:
    """Query parameters without those left unset."""
    return {k: v for k, v in params.items() if v is not None}


def _raise_for_problem(response: httpx.Response) -> None:
    if not response.is_error:
        return
    detail = response.reason_phrase or f"HTTP {response.status_code}"
    try:
        body = response.json()
        detail = str(body.get("detail") or body.get("title") or detail)
    except ValueError:
        pass
    if response.status_code == 429:
        raise errors.RateLimited(detail, int(response.headers.get("retry-after", "1")))
    raise _BY_STATUS.get(response.status_code, errors.EnclaveError)(detail)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(UPLOAD_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _chunks(fh: BinaryIO, progress: Callable[[int], None] | None) -> Iterator[bytes]:
    while block := fh.read(UPLOAD_CHUNK_BYTES):
        if progress:
            progress(len(block))
        yield block
