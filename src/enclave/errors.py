"""One exception tree for the whole control plane.

    EnclaveError
    ├── InvalidInput        the request is malformed or names something impossible (400/422)
    ├── NotAuthenticated    no valid token or credentials (401)
    ├── NotFound            absent *or invisible* to the session (404) — never reveals which
    ├── Forbidden           visible to the session but the action is not allowed (403)
    ├── Conflict            the action clashes with the object's current state (409)
    ├── TooLarge            a body or upload exceeds its size limit (413)
    ├── RateLimited         too many attempts; carries retry_after_s (429)
    └── Unavailable         a dependency is down (503)

Domain code raises these; the API maps them to RFC 9457 problem+json in one place and the
CLI prints their message as one line.
"""

from __future__ import annotations


class EnclaveError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(EnclaveError):
    status = 422
    title = "Invalid input"


class NotAuthenticated(EnclaveError):
    status = 401
    title = "Not authenticated"


class NotFound(EnclaveError):
    status = 404
    title = "Not found"


class Forbidden(EnclaveError):
    status = 403
    title = "Forbidden"


class Conflict(EnclaveError):
    status = 409
    title = "Conflict"


class TooLarge(EnclaveError):
    status = 413
    title = "Too large"


class RateLimited(EnclaveError):
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Unavailable(EnclaveError):
    status = 503
    title = "Unavailable"
