"""The /v1 API as a bare ASGI app in front of Litestar: the gateway's hot path pays for no framework layer.

A py-spy profile of the gateway under load put ~18% of the worker's time in Litestar between the
outermost middleware and the handler (routing, guards, parameter extraction, response objects). The
gateway uses none of it: it authenticates its own keys, parses its own bodies and writes its own errors,
in the OpenAI or the Anthropic shape. Every other path, including an unknown one under /v1, goes on to
Litestar.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, HTTPScope, Message, Receive, Scope, Send

from app.gateway import errors
from app.gateway.catalog import TokenInfo
from app.gateway.errors import GatewayError
from app.gateway.messages_api import to_openai_request
from app.gateway.proxy import Answer, Dialect, Gateway, StreamAnswer, key_from_headers
from app.observability.logging import get_logger

_JSON = [(b"content-type", b"application/json")]
_EVENT_STREAM = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
logger = get_logger("lyss.gateway")


class _Request(msgspec.Struct):
    """What a gateway call reads from the ASGI scope: the headers it needs, its origin and id."""

    authorization: str | None = None
    api_key: str | None = None
    content_type: bytes = b""
    content_length: int | None = None
    client_ip: str | None = None
    request_id: str | None = None


def _read_scope(scope: Scope) -> _Request:
    request = _Request()
    for name, value in scope["headers"]:
        if name == b"authorization":
            request.authorization = value.decode("latin-1")
        elif name == b"x-api-key":
            request.api_key = value.decode("latin-1")
        elif name == b"content-type":
            request.content_type = value.split(b";", 1)[0].strip().lower()
        elif name == b"content-length" and value.isdigit():
            request.content_length = int(value)
    state = scope.get("state") or {}
    request.client_ip, request.request_id = state.get("client_ip"), state.get("request_id")
    return request


class GatewayApi:
    """`POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models` and `POST /v1/messages`."""

    def __init__(self, gateway: Gateway, max_body_bytes: int) -> None:
        self.gateway = gateway
        self.max_body_bytes = max_body_bytes
        self.routes: dict[str, tuple[str, Dialect, Callable[[TokenInfo, _Request, Receive], Awaitable[Any]]]] = {
            "/v1/chat/completions": ("POST", "openai", self._chat_completions),
            "/v1/embeddings": ("POST", "openai", self._embeddings),
            "/v1/models": ("GET", "openai", self._models),
            "/v1/messages": ("POST", "anthropic", self._messages),
        }

    def serves(self, scope: Scope) -> bool:
        return scope["type"] == ScopeType.HTTP and scope["path"].rstrip("/") in self.routes

    async def __call__(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        path = scope["path"].rstrip("/")
        method, dialect, handler = self.routes[path]
        scope["path_template"] = path  # the request histogram's route label
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            if scope["method"] != method:
                raise GatewayError(
                    405, f"Use {method} for {path}.", error_type="invalid_request_error", headers={"Allow": method}
                )
            request = _read_scope(scope)
            if method == "POST" and request.content_type != b"application/json":
                raise errors.invalid_request("Send the body as JSON with 'Content-Type: application/json'.")
            key = key_from_headers(request.authorization, request.api_key)
            token = await self.gateway.authenticate(key, request.client_ip)
            answer = await handler(token, request, receive)
            if isinstance(answer, StreamAnswer):
                await _send_stream(answer, send_tracked, receive)
            else:
                try:
                    await _send_json(200, answer.body, answer.headers, send_tracked)
                finally:
                    if answer.settle is not None:
                        await _settle_after_answer(answer.settle, path)
        except Exception as error:
            if started:
                # The answer is on its way: nothing else can be said on this connection.
                logger.warning("gateway response interrupted", path=path, error=f"{type(error).__name__}: {error}")
                return
            failure = _as_gateway_error(error, path)
            body = msgspec.json.encode(failure.anthropic_body()) if dialect == "anthropic" else failure.encoded()
            await _send_json(failure.status_code, body, failure.headers, send)

    async def _body(self, request: _Request, receive: Receive) -> tuple[dict[str, Any], int]:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise errors.invalid_request("The client went away before sending the whole body.")
            chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise errors.invalid_request("We could not parse the JSON body of your request.") from None
        if not isinstance(body, dict):
            raise errors.invalid_request("The JSON body must be an object.")
        return body, size

    async def _chat_completions(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer | StreamAnswer:
        body, size = await self._body(request, receive)
        return await self.gateway.chat(
            token, body, raw_size=size, dialect="openai", request_id=request.request_id, defer_settlement=True
        )

    async def _embeddings(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer:
        body, size = await self._body(request, receive)
        return await self.gateway.embeddings(
            token, body, raw_size=size, request_id=request.request_id, defer_settlement=True
        )

    async def _models(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer:
        return Answer(body=msgspec.json.encode(await self.gateway.models(token)), headers={})

    async def _messages(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer | StreamAnswer:
        body, size = await self._body(request, receive)
        if not isinstance(body.get("max_tokens"), int):
            raise errors.invalid_request("max_tokens: Field required", param="max_tokens")
        return await self.gateway.chat(
            token,
            to_openai_request(body),
            raw_size=size,
            dialect="anthropic",
            request_id=request.request_id,
            defer_settlement=True,
        )


def route_gateway(gateway_api: GatewayApi, handle_gateway: ASGIApp, everything_else: ASGIApp) -> ASGIApp:
    """Gateway paths to `handle_gateway` (the gateway API, possibly traced), the rest to `everything_else`."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if gateway_api.serves(scope):
            await handle_gateway(scope, receive, send)
        else:
            await everything_else(scope, receive, send)

    return dispatch


async def _settle_after_answer(settle: Callable[[], Awaitable[int]], path: str) -> None:
    """Settle once the answer is sent: the client does not wait for the second Redis round trip. Shielded,
    so a client gone mid-send is billed all the same; a failure here can no longer reach the client."""
    with anyio.CancelScope(shield=True):
        try:
            await settle()
        except Exception as error:
            # The reservation stays taken (the safe side); the call has no usage record.
            logger.error("settlement failed after the answer was sent", path=path, exc_info=error)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"The request body is larger than this server accepts ({limit} bytes).",
        error_type="invalid_request_error",
        code="request_too_large",
    )


def _as_gateway_error(error: Exception, path: str) -> GatewayError:
    if isinstance(error, GatewayError):
        return error
    logger.error("unhandled exception", path=path, exc_info=error)
    return GatewayError(
        500, "Internal error; quote the x-request-id header when reporting it.", error_type="server_error"
    )


def _encoded_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


async def _send_json(status: int, body: bytes, headers: dict[str, str], send: Send) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [*_JSON, (b"content-length", str(len(body)).encode()), *_encoded_headers(headers)],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_stream(answer: StreamAnswer, send: Send, receive: Receive) -> None:
    """Relay the events; a client that hangs up cancels the relay, whose `finally` bills what was delivered."""
    chunks: AsyncIterator[bytes] = answer.chunks
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 200,
        "headers": [*_EVENT_STREAM, *_encoded_headers(answer.headers)],
    }
    await send(start)
    async with anyio.create_task_group() as group:

        async def cancel_on_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(cancel_on_disconnect)
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            with anyio.CancelScope(shield=True):
                close = getattr(chunks, "aclose", None)
                if close is not None:
                    await close()
            group.cancel_scope.cancel()
