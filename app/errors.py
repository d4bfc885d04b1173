"""Errors a caller can act on. Services raise them; the edge turns each into its status and a JSON message."""

from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct):
    """What every error answer carries (declared in the OpenAPI schema; the edge writes it)."""

    status_code: int
    detail: str
    request_id: str | None


class ServiceError(Exception):
    """Base: `detail` is shown to the caller as is, so it says what to do and reveals nothing internal.

    `field` names the request field the refusal is about, where there is one: a portal form shows the message
    next to that field (the whole-form message otherwise).
    """

    status_code = 400

    def __init__(self, detail: str, *, field: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.headers = headers or {}


class InvalidRequest(ServiceError):
    status_code = 400


class Unauthenticated(ServiceError):
    status_code = 401


class NotAllowed(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class RateLimited(ServiceError):
    status_code = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(retry_after, 1))})
        self.retry_after = retry_after


class ServiceUnavailable(ServiceError):
    """A dependency (object storage, say) refused or could not be reached; trying later may work."""

    status_code = 503
