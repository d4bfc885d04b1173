"""The /v1 API: a bare ASGI app mounted on Litestar at /v1, so that the gateway's hot path pays for routing only.

A py-spy profile of the gateway under load put ~18% of the worker's time in Litestar between the
outermost middleware and the handler (parameter extraction, guards, request and response objects). The
gateway uses none of it: it authenticates its own keys, parses its own bodies and writes its own errors,
in the OpenAI or the Anthropic shape. Mounted (`gateway_mount`), it gets every path under /v1, an unknown
one included, straight from Litestar's router.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import anyio
import msgspec
from litestar.enums import ScopeType
from litestar.exceptions import NotFoundException
from litestar.handlers import ASGIRouteHandler, asgi
from litestar.types import HTTPResponseStartEvent, HTTPScope, Message, Receive, Scope, Send

from app.edge import JsonTooDeep, decode_json, json_problem
from app.gateway import errors, stored_responses
from app.gateway.caches import TokenInfo
from app.gateway.dialects.anthropic import count_tokens_request, messages_request, to_openai_request
from app.gateway.dialects.responses import (
    ResponsesTurn,
    conversation_items,
    images,
    parse_items,
    responses_request,
    to_chat_request,
)
from app.gateway.dialects.transcription import read_upload
from app.gateway.engine import Answer, Dialect, Gateway, NativeRequest, StreamAnswer, key_from_headers
from app.gateway.errors import GatewayError
from app.gateway.response_cache import Observer, ResponseCache
from app.knowledge import completions as knowledge_completions
from app.observability.errors import RETRY_AFTER, UNAVAILABLE_DETAIL, unavailable_cause
from app.observability.logging import get_logger
from app.observability.maintenance import MaintenanceSwitch

_JSON = [(b"content-type", b"application/json")]
_EVENT_STREAM = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
MOUNT_PATH = "/v1"
MODELS_PREFIX = "/v1/models/"
RESPONSES_PREFIX = "/v1/responses/"
INPUT_ITEMS_SUFFIX = "/input_items"
logger = get_logger("lyss.gateway")


class _Request(msgspec.Struct):
    """What a gateway call reads from the ASGI scope: the headers it needs, its origin and id."""

    path: str = ""
    method: str = ""
    query: bytes = b""
    authorization: str | None = None
    api_key: str | None = None
    content_type: bytes = b""
    # With its parameters: a multipart body's boundary.
    content_type_header: bytes = b""
    content_length: int | None = None
    client_ip: str | None = None
    request_id: str | None = None
    cache_control: str | None = None


Handler = Callable[[TokenInfo, _Request, Receive], Awaitable[Any]]


def _read_scope(scope: Scope) -> _Request:
    request = _Request()
    for name, value in scope["headers"]:
        if name == b"authorization":
            request.authorization = value.decode("latin-1")
        elif name == b"x-api-key":
            request.api_key = value.decode("latin-1")
        elif name == b"content-type":
            request.content_type = value.split(b";", 1)[0].strip().lower()
            request.content_type_header = value
        elif name == b"content-length" and value.isdigit():
            request.content_length = int(value)
        elif name == b"cache-control":
            request.cache_control = value.decode("latin-1")
    request.query = scope.get("query_string", b"")
    state = scope.get("state") or {}
    request.client_ip, request.request_id = state.get("client_ip"), state.get("request_id")
    return request


class GatewayApi:
    """Every path under /v1: `POST /v1/chat/completions`, `POST /v1/embeddings`, `POST /v1/rerank`,
    `POST /v1/images/generations`, `POST /v1/moderations`, `POST /v1/audio/speech`, `POST /v1/audio/transcriptions`,
    `GET /v1/models`, `GET /v1/models/{model}`, `POST /v1/messages`, `POST /v1/messages/count_tokens`,
    `POST /v1/responses`, and the stored responses' `GET`/`DELETE /v1/responses/{response_id}` and
    `GET /v1/responses/{response_id}/input_items`; any other is a 404 in the OpenAI error format (in Anthropic's
    under /v1/messages)."""

    def __init__(self, gateway: Gateway, max_body_bytes: int, maintenance: MaintenanceSwitch) -> None:
        self.gateway = gateway
        self.maintenance = maintenance
        self.max_body_bytes = max_body_bytes
        self.response_cache = ResponseCache(gateway)
        self.routes: dict[str, tuple[str, Dialect, Handler]] = {
            "/v1/chat/completions": ("POST", "openai", self._chat_completions),
            "/v1/embeddings": ("POST", "openai", self._embeddings),
            "/v1/rerank": ("POST", "openai", self._rerank),
            "/v1/images/generations": ("POST", "openai", self._images),
            "/v1/moderations": ("POST", "openai", self._moderations),
            "/v1/audio/speech": ("POST", "openai", self._speech),
            "/v1/audio/transcriptions": ("POST", "openai", self._transcriptions),
            "/v1/models": ("GET", "openai", self._models),
            "/v1/messages": ("POST", "anthropic", self._messages),
            "/v1/messages/count_tokens": ("POST", "anthropic", self._count_tokens),
            "/v1/responses": ("POST", "responses", self._responses),
        }

    def _route(self, path: str) -> tuple[str, str, Dialect, Handler | None]:
        """(route template, method, dialect, handler) of a path under /v1; no handler for an unknown path."""
        if path in self.routes:
            return (path, *self.routes[path])
        if path.startswith(MODELS_PREFIX) and len(path) > len(MODELS_PREFIX):
            return (f"{MODELS_PREFIX}{{model}}", "GET", "openai", self._model)
        if path.startswith(RESPONSES_PREFIX):
            rest = path[len(RESPONSES_PREFIX) :]
            listed = rest.removesuffix(INPUT_ITEMS_SUFFIX)
            if listed != rest and listed and "/" not in listed:
                return (f"{RESPONSES_PREFIX}{{response_id}}{INPUT_ITEMS_SUFFIX}", "GET", "openai", self._input_items)
            if rest and "/" not in rest:
                return (f"{RESPONSES_PREFIX}{{response_id}}", "GET, DELETE", "openai", self._stored_response)
        return ("unmatched", "", "anthropic" if path.startswith("/v1/messages/") else "openai", None)

    async def __call__(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        # Litestar's router hands a mounted app the path under the mount, with a trailing slash.
        path = (MOUNT_PATH + scope["path"]).rstrip("/")
        template, method, dialect, handler = self._route(path)
        scope["path_template"] = template  # the request histogram's route label
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            if handler is None:
                raise GatewayError(
                    404,
                    f"Unknown path: {scope['method']} {errors.shown(path)}.",
                    error_type="invalid_request_error",
                    code="unknown_url",
                )
            if scope["method"] not in method.split(", "):
                raise GatewayError(
                    405, f"Use {method} for {path}.", error_type="invalid_request_error", headers={"Allow": method}
                )
            # A clock read while the switch's copy is fresh (the usual case): nothing the hot path notices.
            if (maintenance := await self.maintenance.current()) is not None and maintenance.gateway == "refuse":
                raise errors.under_maintenance(maintenance.message, maintenance.retry_after)
            request = _read_scope(scope)
            request.path, request.method = path, scope["method"]
            if method == "POST" and request.content_type != b"application/json" and template not in _MULTIPART:
                raise errors.invalid_request("Send the body as JSON with 'Content-Type: application/json'.")
            key = key_from_headers(request.authorization, request.api_key)
            token = await self.gateway.authenticate(
                key, request.client_ip, endpoint=_ENDPOINTS.get(template, ""), request_id=request.request_id
            )
            answer = await handler(token, request, receive)
            if isinstance(answer, StreamAnswer):
                await _send_stream(answer, send_tracked, receive)
            else:
                try:
                    await _send_json(200, answer.body, answer.headers, send_tracked, answer.content_type)
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
            # granian sends the body, then an empty last message: a round trip through its threads that a
            # body of the announced length need not wait for.
            if not message.get("more_body", False) or size == request.content_length:
                break
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            body = decode_json(raw)
        except JsonTooDeep as too_deep:
            raise errors.invalid_request(too_deep.problem.described()) from None
        except msgspec.DecodeError:
            raise errors.invalid_request("We could not parse the JSON body of your request.") from None
        if not isinstance(body, dict):
            raise errors.invalid_request("The JSON body must be an object.")
        if (problem := json_problem(raw, body)) is not None:
            raise errors.invalid_request(problem.described(), param=problem.path or None)
        return body, size

    async def _chat_completions(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer | StreamAnswer:
        body, size = await self._body(request, receive)
        if knowledge_completions.FIELD in body:
            return await self._chat_with_knowledge(token, request, body, size)
        return await self._openai_chat(token, request, body, size)

    async def _openai_chat(
        self, token: TokenInfo, request: _Request, body: dict[str, Any], raw_size: int
    ) -> Answer | StreamAnswer:
        """An OpenAI chat body, through the response cache (the body as sent on is its key) to the gateway."""

        def upstream(observer: Observer | None) -> Awaitable[Answer | StreamAnswer]:
            return self.gateway.chat(
                token,
                body,
                raw_size=raw_size,
                dialect="openai",
                request_id=request.request_id,
                defer_settlement=True,
                observer=observer,
            )

        return await self.response_cache.serve(
            token,
            body,
            endpoint="chat",
            cache_control_header=request.cache_control,
            request_id=request.request_id,
            upstream=upstream,
        )

    async def _chat_with_knowledge(
        self, token: TokenInfo, request: _Request, body: dict[str, Any], size: int
    ) -> Answer | StreamAnswer:
        """A chat completion with the Lyss `knowledge` field: its sources injected, its answer with their citations.

        The response cache sees the request as sent on, its sources injected: the same question with the same
        retrieved passages is a hit, and a base changed since (other passages) a miss. The citations are added
        after it, from this call's search: the cached answer is the provider's, theirs are this request's."""
        injected = await knowledge_completions.inject(self.gateway, self.gateway.session_maker, token, body)
        # The sources are prompt too: the worst case reserved covers them as it covers the body.
        answer = await self._openai_chat(token, request, injected.body, size + injected.added_bytes)
        answer.headers = {**answer.headers, knowledge_completions.CITATIONS_HEADER: str(len(injected.citations))}
        if isinstance(answer, StreamAnswer):
            answer.chunks = knowledge_completions.cited_stream(answer.chunks, injected.citations)
        else:
            answer.body = knowledge_completions.cited(answer.body, injected.citations)
        return answer

    async def _embeddings(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer:
        body, size = await self._body(request, receive)
        return await self.gateway.embeddings(
            token, body, raw_size=size, request_id=request.request_id, defer_settlement=True
        )

    async def _rerank(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer:
        body, size = await self._body(request, receive)
        return await self.gateway.rerank(
            token, body, raw_size=size, request_id=request.request_id, defer_settlement=True
        )

    async def _images(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer:
        body, _ = await self._body(request, receive)
        return await self.gateway.images(token, body, request_id=request.request_id, defer_settlement=True)

    async def _moderations(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer:
        body, _ = await self._body(request, receive)
        return await self.gateway.moderations(token, body, request_id=request.request_id, defer_settlement=True)

    async def _speech(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer:
        body, _ = await self._body(request, receive)
        return await self.gateway.speech(token, body, request_id=request.request_id, defer_settlement=True)

    async def _transcriptions(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        upload = await read_upload(
            receive, request.content_type_header, self.max_body_bytes, _too_large(self.max_body_bytes)
        )
        return await self.gateway.transcriptions(token, upload, request_id=request.request_id, defer_settlement=True)

    async def _models(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer:
        return Answer(body=msgspec.json.encode(await self.gateway.models(token)), headers={})

    async def _model(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer:
        model = await self.gateway.model(token, request.path[len(MODELS_PREFIX) :])
        return Answer(body=msgspec.json.encode(model), headers={})

    async def _stored_response(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer:
        response_id = request.path[len(RESPONSES_PREFIX) :]
        session_maker = self.gateway.session_maker
        if request.method == "DELETE":
            answer = await stored_responses.delete(session_maker, token, response_id)
        else:
            if _query(request).get("stream", "false").lower() not in ("false", "0"):
                raise errors.invalid_request("A stored response cannot be streamed again.", param="stream")
            answer = await stored_responses.get(session_maker, token, response_id)
        return Answer(body=msgspec.json.encode(answer), headers={})

    async def _input_items(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer:
        response_id = request.path[len(RESPONSES_PREFIX) : -len(INPUT_ITEMS_SUFFIX)]
        query = _query(request)
        limit = query.get("limit", str(stored_responses.LIST_LIMIT_DEFAULT))
        if not (limit.isascii() and limit.isdigit()) or len(limit) > 3:
            raise errors.invalid_request(
                f"`limit` must be a whole number from 1 to {stored_responses.LIST_LIMIT_MAX}.", param="limit"
            )
        page = await stored_responses.input_items(
            self.gateway.session_maker,
            token,
            response_id,
            limit=int(limit),
            order=query.get("order", "desc"),
            after=query.get("after"),
            before=query.get("before"),
        )
        return Answer(body=msgspec.json.encode(page), headers={})

    async def _messages(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer | StreamAnswer:
        body, size = await self._body(request, receive)
        messages = messages_request(body)

        def upstream(observer: Observer | None) -> Awaitable[Answer | StreamAnswer]:
            return self.gateway.chat(
                token,
                to_openai_request(messages),
                raw_size=size,
                dialect="anthropic",
                request_id=request.request_id,
                defer_settlement=True,
                native=NativeRequest(api_format="anthropic", body=body, media=messages.media),
                observer=observer,
            )

        return await self.response_cache.serve(
            token,
            body,
            endpoint="messages",
            cache_control_header=request.cache_control,
            request_id=request.request_id,
            upstream=upstream,
        )

    async def _responses(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer | StreamAnswer:
        body, size = await self._body(request, receive)
        parsed, items = responses_request(body)
        previous = parsed.previous_response_id
        earlier: list[dict[str, Any]] = []
        if previous is not None:
            history = await stored_responses.history(self.gateway.session_maker, token, previous)
            earlier = conversation_items(history)
        prior = parse_items(earlier, param="previous_response_id")
        turn = ResponsesTurn(parsed, items)
        native = body
        if earlier:
            this_turn = (
                [{"role": "user", "content": body["input"]}] if isinstance(body["input"], str) else body["input"]
            )
            native = {name: value for name, value in body.items() if name != "previous_response_id"}
            native["input"] = [*earlier, *this_turn]

        def upstream(observer: Observer | None) -> Awaitable[Answer | StreamAnswer]:
            return self.gateway.chat(
                token,
                to_chat_request(parsed, items, prior),
                # The earlier turns are prompt too: the worst case reserved covers them as it covers the body.
                raw_size=size + (len(msgspec.json.encode(earlier)) if earlier else 0),
                dialect="responses",
                request_id=request.request_id,
                defer_settlement=True,
                native=NativeRequest(api_format="responses", body=native, media=images([*prior, *items])),
                turn=turn,
                observer=observer,
            )

        if turn.stored or previous is not None:
            # Not from the cache: a kept answer has an id of its own, and a conversation is one key's.
            answer = await upstream(None)
        else:
            answer = await self.response_cache.serve(
                token,
                body,
                endpoint="responses",
                cache_control_header=request.cache_control,
                request_id=request.request_id,
                upstream=upstream,
            )
        if isinstance(answer, StreamAnswer):
            answer.chunks = _then(answer.chunks, lambda: self._keep_response(token, turn))
        else:
            await self._keep_response(token, turn)
        return answer

    async def _keep_response(self, token: TokenInfo, turn: ResponsesTurn) -> None:
        """Store the turn's Response (`turn.final`: the whole answer, or the one its stream completed with; None
        if the stream broke off) and its input items, unless the client said `store: false`. A whole answer is
        kept before it is sent, so that the next turn may name it at once."""
        if not turn.stored or turn.final is None:
            return
        try:
            await stored_responses.store(
                self.gateway.session_maker,
                token,
                turn.final,
                turn.input_items,
                turn.request.previous_response_id,
            )
        except Exception as error:
            # The client has its answer, billed; only its continuation by id is lost. Not a reason to fail it.
            logger.error("a response could not be stored", response_id=turn.id, exc_info=error)

    async def _count_tokens(self, token: TokenInfo, request: _Request, receive: Receive) -> Answer:
        body, size = await self._body(request, receive)
        return await self.gateway.count_tokens(token, body, count_tokens_request(body), size)


# How the usage log names each route's calls (a refused key is recorded before its body is read).
_ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/embeddings": "embeddings",
    "/v1/rerank": "rerank",
    "/v1/images/generations": "images",
    "/v1/moderations": "moderations",
    "/v1/audio/speech": "speech",
    "/v1/audio/transcriptions": "transcriptions",
    "/v1/models": "models",
    f"{MODELS_PREFIX}{{model}}": "models",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "count_tokens",
    f"{RESPONSES_PREFIX}{{response_id}}": "responses",
    f"{RESPONSES_PREFIX}{{response_id}}{INPUT_ITEMS_SUFFIX}": "responses",
    "/v1/responses": "responses",
}

# Routes whose body is multipart/form-data (an upload), not JSON.
_MULTIPART = frozenset({"/v1/audio/transcriptions"})


def _query(request: _Request) -> dict[str, str]:
    """The query string's parameters (the last of a repeated one)."""
    return dict(parse_qsl(request.query.decode("latin-1"), keep_blank_values=True))


async def _then(chunks: AsyncIterator[bytes], done: Callable[[], Awaitable[None]]) -> AsyncIterator[bytes]:
    """The stream's chunks, then `done()` once they are all sent; closing this closes the stream (its billing)."""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    await done()


def gateway_mount(gateway_api: GatewayApi) -> ASGIRouteHandler:
    """The route handler of /v1 and every path under it, to register beside (not under) the router that holds
    the guards: the gateway checks its own API keys, and the session authentication middleware steps aside
    (`exclude_from_auth`). The scope is shared, not copied, so that the route template the gateway writes
    reaches the request histogram in `RequestContextMiddleware`."""

    @asgi(MOUNT_PATH, is_mount=True, copy_scope=False, opt={"exclude_from_auth": True}, name="gateway")
    async def gateway(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            raise NotFoundException()  # a WebSocket: Litestar closes it
        await gateway_api(scope, receive, send)

    return gateway


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
    if (cause := unavailable_cause(error)) is not None:
        logger.warning("dependency unavailable", path=path, error=type(cause).__name__)
        return GatewayError(
            503, UNAVAILABLE_DETAIL, error_type="service_unavailable", code="service_unavailable", headers=RETRY_AFTER
        )
    logger.error("unhandled exception", path=path, exc_info=error)
    return GatewayError(
        500, "Internal error; quote the x-request-id header when reporting it.", error_type="server_error"
    )


def _encoded_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


async def _send_json(
    status: int, body: bytes, headers: dict[str, str], send: Send, content_type: str = "application/json"
) -> None:
    kind = _JSON if content_type == "application/json" else [(b"content-type", content_type.encode("latin-1"))]
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [*kind, (b"content-length", str(len(body)).encode()), *_encoded_headers(headers)],
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
