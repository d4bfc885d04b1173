"""Request context: request id (from `X-Request-ID` or generated, echoed back), client address, access log."""

from __future__ import annotations

import re
import time
import uuid
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

import msgspec
import structlog
from litestar import Request
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.logging import get_logger
from app.observability.metrics import HTTP_DURATION

REQUEST_ID_HEADER = b"x-request-id"
# Ids from clients end up in logs and headers: accept only short, plain tokens.
_ACCEPTABLE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")

access_log = get_logger("lyss.access")


class ClientContext(msgspec.Struct, frozen=True):
    """Where a request came from, for rate limits and the audit trail."""

    # The client's address as the server saw it; not always an IP (a unix socket, a test transport).
    address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @property
    def ip_address(self) -> str | None:
        """The address if it is an IP, for INET columns."""
        return self.address if self.address and _is_address(self.address) else None


def client_context(request: Request[Any, Any, State]) -> ClientContext:
    state = request.scope.get("state", {})
    return ClientContext(
        address=state.get("client_ip"),
        user_agent=request.headers.get("user-agent"),
        request_id=state.get("request_id"),
    )


class RequestContextMiddleware:
    """Outermost ASGI layer, so that 404s and errors raised before routing are logged and tagged too.

    The client address is the peer's, unless the peer is a trusted proxy: then it is the nearest
    address in `X-Forwarded-For` that is not a trusted proxy itself.
    """

    def __init__(self, app: ASGIApp, trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        client_ip = self._client_ip(scope)
        path = scope["path"]  # the router replaces it with the path under the mount for a mounted app
        scope.setdefault("state", {}).update(request_id=request_id, client_ip=client_ip)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id, client_ip=client_ip)
        status_code = 500
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            elapsed = time.perf_counter() - started
            # The route's template (/api/jobs/{job_id:uuid}), never the raw path: one series per route.
            route = scope.get("path_template") or "unmatched"
            HTTP_DURATION.labels(scope["method"], route, str(status_code)).observe(elapsed)
            access_log.info(
                "request",
                method=scope["method"],
                path=path,
                status=status_code,
                duration_ms=round(elapsed * 1000, 2),
            )

    def _trusted(self, address: str) -> bool:
        if not self.trusted_proxies:
            return False
        try:
            parsed = ip_address(address)
        except ValueError:
            return False
        return any(parsed in network for network in self.trusted_proxies)

    def _client_ip(self, scope: Scope) -> str | None:
        client = scope.get("client")
        peer = client[0] if client else None
        if peer is None or not self._trusted(peer):
            return peer
        forwarded = [
            hop.strip()
            for name, value in scope["headers"]
            if name == b"x-forwarded-for"
            for hop in value.decode("latin-1").split(",")
        ]
        for hop in reversed(forwarded):
            if not self._trusted(hop):
                return hop if _is_address(hop) else peer
        return peer


def _is_address(value: str) -> bool:
    try:
        ip_address(value)
    except ValueError:
        return False
    return True


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and _ACCEPTABLE_REQUEST_ID.match(value):
            return value.decode()
    return uuid.uuid4().hex
