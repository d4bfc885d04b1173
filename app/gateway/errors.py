"""Errors of the /v1 API, in the OpenAI error format (`{"error": {"message", "type", "param", "code"}}`)."""

from __future__ import annotations

from typing import Any

import msgspec


class GatewayError(Exception):
    """An error the client of /v1 sees, with the status and the OpenAI `type`/`code` SDKs map to exceptions."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_type: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        recorded: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.headers = headers or {}
        # What the usage log keeps of a refusal beyond its message: `reason` (its `code` if not given) and,
        # for a limit, the `scope` that refused.
        self.recorded = {"reason": code or error_type, **(recorded or {})}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}

    def anthropic_body(self) -> dict[str, Any]:
        """The same error in the Anthropic format, for /v1/messages."""
        kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
        }
        return {"type": "error", "error": {"type": kinds.get(self.status_code, "api_error"), "message": self.message}}

    def encoded(self) -> bytes:
        return msgspec.json.encode(self.body())


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, error_type="invalid_request_error", param=param, code=code)


def invalid_api_key(message: str = "Incorrect API key provided.", *, reason: str | None = None) -> GatewayError:
    recorded = {"reason": reason} if reason else None
    return GatewayError(401, message, error_type="invalid_request_error", code="invalid_api_key", recorded=recorded)


def permission_denied(message: str, *, code: str) -> GatewayError:
    return GatewayError(403, message, error_type="permission_error", code=code)


def shown(value: str, limit: int = 100) -> str:
    """A client's value as an error message quotes it: cut, so that a megabyte of it is not sent back."""
    return value if len(value) <= limit else f"{value[:limit]}… ({len(value)} characters)"


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model '{shown(model)}' does not exist or no channel of your organization serves it.",
        error_type="invalid_request_error",
        param="model",
        code="model_not_found",
    )


def rate_limited(
    message: str, *, code: str, retry_after: int | None = None, recorded: dict[str, str] | None = None
) -> GatewayError:
    headers = {"Retry-After": str(max(retry_after, 1))} if retry_after is not None else None
    return GatewayError(429, message, error_type="rate_limit_error", code=code, headers=headers, recorded=recorded)


def quota_exhausted(message: str, *, recorded: dict[str, str] | None = None) -> GatewayError:
    return GatewayError(429, message, error_type="insufficient_quota", code="insufficient_quota", recorded=recorded)


def under_maintenance(message: str, retry_after: int) -> GatewayError:
    """Maintenance mode with the gateway refusing: a 503 (Anthropic's `api_error`) with `Retry-After`."""
    return GatewayError(
        503,
        message,
        error_type="service_unavailable",
        code="maintenance",
        headers={"Retry-After": str(retry_after)},
    )


def upstream_failed(status_code: int, message: str) -> GatewayError:
    return GatewayError(status_code, message, error_type="upstream_error", code="upstream_error")
