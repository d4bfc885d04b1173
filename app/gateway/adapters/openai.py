"""OpenAI and every OpenAI-compatible provider (DeepSeek, Zhipu, vLLM, any base URL): the format Lyss speaks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import msgspec

from app.gateway.adapters.base import (
    Adapter,
    Chunk,
    Completion,
    Target,
    Timeouts,
    UpstreamError,
    Usage,
    classify_http_error,
    estimated_tokens,
    network_error,
    reported_count,
    sse_data,
)

T = TypeVar("T")


class _UsageProbe(msgspec.Struct):
    prompt_tokens: Any = None
    completion_tokens: Any = None
    prompt_tokens_details: Any = None
    # DeepSeek's names for a prompt read from its cache (hit) and not (miss, a plain prompt token).
    prompt_cache_hit_tokens: Any = None


class _ToolCallFunction(msgspec.Struct):
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    function: _ToolCallFunction | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None


class _ChunkProbe(msgspec.Struct):
    """Just what billing needs from a chunk; everything else passes through untouched."""

    choices: list[_Choice] = []
    usage: _UsageProbe | None = None


_probe = msgspec.json.Decoder(_ChunkProbe)


def probe_chunk(raw: bytes) -> Chunk:
    try:
        probe = _probe.decode(raw)
    except msgspec.DecodeError:
        raise UpstreamError("the provider sent a stream chunk that is not JSON") from None
    usage = None
    if probe.usage is not None:
        usage = _usage(probe.usage.prompt_tokens, probe.usage.completion_tokens)
        cached = _cached(probe.usage.prompt_tokens_details, probe.usage.prompt_cache_hit_tokens)
        if usage is not None and cached:
            usage = msgspec.structs.replace(usage, cached_tokens=cached)
            if not _has_cached_details(probe.usage.prompt_tokens_details):
                raw = _with_cached_details(raw, cached)
    length = 0
    for choice in probe.choices:
        if choice.delta is not None:
            length += len(choice.delta.content or "")
            for call in choice.delta.tool_calls or []:
                length += len(call.function.arguments or "") if call.function else 0
    tokens = max(1, estimated_tokens(length)) if length else 0
    return Chunk(raw=raw, tokens=tokens, usage=usage, usage_only=usage is not None and not probe.choices)


def _usage(prompt: Any, completion: Any) -> Usage | None:
    """The provider's counts, or None (Lyss estimates) when they are not counts: the bill never rests on
    a negative, fractional or non-numeric figure."""
    prompt_tokens, completion_tokens = reported_count(prompt or 0), reported_count(completion or 0)
    if prompt_tokens is None or completion_tokens is None:
        return None
    return Usage(prompt_tokens, completion_tokens)


def _cached(details: Any, deepseek_hits: Any) -> int:
    """Prompt tokens read from the provider's cache: OpenAI's `prompt_tokens_details.cached_tokens`, else
    DeepSeek's `prompt_cache_hit_tokens`. A figure that is not a count is no cached token (full price)."""
    figure = details.get("cached_tokens") if isinstance(details, dict) else None
    if figure is None:
        figure = deepseek_hits
    return reported_count(figure or 0) or 0


def _has_cached_details(details: Any) -> bool:
    return isinstance(details, dict) and "cached_tokens" in details


def _with_cached_details(raw: bytes, cached: int) -> bytes:
    """A usage chunk with OpenAI's `prompt_tokens_details.cached_tokens` added where the provider (DeepSeek)
    names cached tokens its own way: OpenAI clients read them there."""
    chunk = msgspec.json.decode(raw)
    usage = chunk["usage"]
    details = usage.get("prompt_tokens_details")
    usage["prompt_tokens_details"] = {**(details if isinstance(details, dict) else {}), "cached_tokens": cached}
    return msgspec.json.encode(chunk)


def parse_usage(body: dict[str, Any]) -> Usage | None:
    """The answer's usage; where the provider names cached tokens its own way (DeepSeek), the answer also gets
    OpenAI's `prompt_tokens_details.cached_tokens`, which OpenAI clients read."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    counted = _usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _cached(details, usage.get("prompt_cache_hit_tokens"))
    if counted is None or not cached:
        return counted
    if not _has_cached_details(details):
        usage["prompt_tokens_details"] = {**(details if isinstance(details, dict) else {}), "cached_tokens": cached}
    return msgspec.structs.replace(counted, cached_tokens=cached)


def with_other_limit_parameter(body: dict[str, Any], refusal: UpstreamError) -> dict[str, Any] | None:
    """The request with its output limit under the other parameter name, if the provider refused the name.

    OpenAI's reasoning models refuse `max_tokens` ("Unsupported parameter: 'max_tokens' ... use
    'max_completion_tokens' instead"); older Azure API versions and some compatible servers refuse
    `max_completion_tokens`. The limit itself (what was reserved) stays the same.
    """
    if refusal.status not in (400, 422):
        return None
    text = refusal.body.decode("utf-8", "replace").lower()
    for sent, other in (("max_tokens", "max_completion_tokens"), ("max_completion_tokens", "max_tokens")):
        if sent in body and other not in body and _names_refused_parameter(text, sent):
            changed = {name: value for name, value in body.items() if name != sent}
            changed[other] = body[sent]
            return changed
    return None


async def _with_limit_fallback(body: dict[str, Any], send: Callable[[dict[str, Any]], Awaitable[T]]) -> T:
    """`send(body)`; if the provider refuses the limit's parameter name, once more under the other name."""
    try:
        return await send(body)
    except UpstreamError as refusal:
        if (corrected := with_other_limit_parameter(body, refusal)) is None:
            raise
        return await send(corrected)


def _names_refused_parameter(text: str, name: str) -> bool:
    quoted = (f"'{name}'", f'"{name}"', f"`{name}`", f": {name}")
    if not any(form in text for form in quoted):
        return False
    return any(word in text for word in ("unsupported", "not supported", "unrecognized", "unknown", "not permitted"))


async def _post(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], data: Any, timeouts: Timeouts
) -> tuple[bytes, str]:
    """POST `data` and read the whole answer and its content type (only printable ASCII, since it may be passed
    on as a header); a provider's error status or a network failure becomes an UpstreamError the router
    understands."""
    try:
        async with http.post(
            url,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, connect=timeouts.connect, sock_read=timeouts.read),
        ) as response:
            raw = await response.read()
            if response.status >= 400:
                raise classify_http_error(response.status, raw, response.headers.get("Retry-After"))
            content_type = response.headers.get("Content-Type", "")
    except (aiohttp.ClientError, TimeoutError) as error:
        raise network_error(error) from None
    if not (content_type.isascii() and content_type.isprintable()) or not content_type:
        content_type = "application/octet-stream"
    return raw, content_type


def _json_post(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Content-Type": "application/json"}


async def post_json(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    timeouts: Timeouts,
) -> dict[str, Any]:
    """POST and decode a JSON answer; any failure becomes an UpstreamError the router understands."""
    raw, _ = await _post(http, url, _json_post(headers), msgspec.json.encode(body), timeouts)
    try:
        decoded = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise UpstreamError("the provider answered something that is not JSON", status=502) from None
    if not isinstance(decoded, dict):
        raise UpstreamError("the provider answered JSON that is not an object", status=502)
    return decoded


async def post_for_bytes(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    timeouts: Timeouts,
) -> tuple[bytes, str]:
    """POST JSON, read a binary answer (audio) and its content type; an empty one is a failure of the channel."""
    raw, content_type = await _post(http, url, _json_post(headers), msgspec.json.encode(body), timeouts)
    if not raw or content_type.startswith(("application/json", "text/")):
        raise UpstreamError("the provider answered no audio", status=502)
    return raw, content_type


async def post_form(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    fields: list[tuple[str, str]],
    file: tuple[str, str, bytes],
    timeouts: Timeouts,
) -> tuple[bytes, str]:
    """POST a multipart form with one file (built anew for each channel), read the answer whatever its type."""
    form = aiohttp.FormData(quote_fields=False)
    for name, value in fields:
        form.add_field(name, value)
    filename, content_type, content = file
    form.add_field("file", content, filename=filename, content_type=content_type)
    raw, answered_type = await _post(http, url, headers, form, timeouts)
    if not raw:
        raise UpstreamError("the provider answered nothing", status=502)
    return raw, answered_type


async def open_stream(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    timeouts: Timeouts,
) -> aiohttp.ClientResponse:
    try:
        response = await http.post(
            url,
            data=msgspec.json.encode(body),
            headers={**headers, "Content-Type": "application/json", "Accept": "text/event-stream"},
            timeout=aiohttp.ClientTimeout(total=None, connect=timeouts.connect, sock_read=timeouts.read),
        )
    except (aiohttp.ClientError, TimeoutError) as error:
        raise network_error(error) from None
    if response.status >= 400:
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            raw = b""
        response.release()
        raise classify_http_error(response.status, raw, response.headers.get("Retry-After"))
    return response


async def openai_chunks(response: aiohttp.ClientResponse) -> AsyncIterator[Chunk]:
    try:
        async for data in sse_data(response):
            if data == b"[DONE]":
                return
            yield probe_chunk(data)
    except (aiohttp.ClientError, TimeoutError) as error:
        raise network_error(error) from None
    finally:
        response.release()


def responses_usage(usage: Any) -> Usage | None:
    """A Responses API `usage` (`input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`), or None
    when it is not one (Lyss estimates)."""
    if not isinstance(usage, dict):
        return None
    counted = _usage(usage.get("input_tokens"), usage.get("output_tokens"))
    details = usage.get("input_tokens_details")
    cached = reported_count(details.get("cached_tokens") or 0) if isinstance(details, dict) else None
    return msgspec.structs.replace(counted, cached_tokens=cached) if counted is not None and cached else counted


def responses_native(native: dict[str, Any], body: dict[str, Any], model: str) -> dict[str, Any]:
    """The client's own Responses request for the provider: its model, the reserved output limit, and nothing
    kept there (Lyss holds the conversation: no `store`, no `previous_response_id`)."""
    request = {name: value for name, value in native.items() if name != "previous_response_id"}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    return {**request, "model": model, "max_output_tokens": limit, "store": False}


# Responses stream events that carry generated text, whose length estimates the tokens delivered.
_DELTA_EVENTS = frozenset({"response.output_text.delta", "response.function_call_arguments.delta"})
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete"})


def responses_chunk(data: bytes) -> Chunk:
    """One Responses stream event, passed on as it came, with what billing needs from it."""
    try:
        event = msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise UpstreamError("the provider sent a stream event that is not JSON", status=502) from None
    if not isinstance(event, dict):
        raise UpstreamError("the provider sent a stream event that is not an object", status=502)
    kind = str(event.get("type") or "")
    if kind in ("error", "response.failed"):
        raise UpstreamError(f"the provider failed mid-stream: {str(data[:300], 'utf-8', 'replace')}", status=502)
    tokens, usage = 0, None
    if kind in _DELTA_EVENTS and isinstance(event.get("delta"), str):
        tokens = max(1, estimated_tokens(len(event["delta"])))
    if kind in _FINAL_EVENTS and isinstance(event.get("response"), dict):
        usage = responses_usage(event["response"].get("usage"))
    native = b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"
    return Chunk(raw=b"", native=native, tokens=tokens, usage=usage)


class OpenAIAdapter(Adapter):
    # `{base_url}/rerank`: Jina (`…/v1`), Cohere (`…/v2`), vLLM, Infinity and TEI-style servers answer there.
    supports_rerank = True
    supports_media = True

    def _headers(self, target: Target) -> dict[str, str]:
        return {"Authorization": f"Bearer {target.api_key}"}

    def _url(self, target: Target, path: str) -> str:
        return f"{target.base_url.rstrip('/')}{path}"

    async def complete(
        self,
        http: aiohttp.ClientSession,
        target: Target,
        body: dict[str, Any],
        timeouts: Timeouts,
        native: dict[str, Any] | None = None,
    ) -> Completion:
        if native is not None:
            return await self._respond(http, target, body, timeouts, native)
        url, headers = self._url(target, "/chat/completions"), self._headers(target)
        answer = await _with_limit_fallback(body, lambda sent: post_json(http, url, headers, sent, timeouts))
        if not isinstance(answer.get("choices"), list):
            raise UpstreamError("the provider's answer has no choices", status=502)
        return Completion(body=answer, usage=parse_usage(answer))

    async def stream(
        self,
        http: aiohttp.ClientSession,
        target: Target,
        body: dict[str, Any],
        timeouts: Timeouts,
        native: dict[str, Any] | None = None,
    ) -> AsyncIterator[Chunk]:
        if native is not None:
            request = {**responses_native(native, body, target.upstream_model), "stream": True}
            response = await open_stream(
                http, self._url(target, "/responses"), self._headers(target), request, timeouts
            )
            try:
                async for data in sse_data(response):
                    yield responses_chunk(data)
            except (aiohttp.ClientError, TimeoutError) as error:
                raise network_error(error) from None
            finally:
                response.release()
            return
        url, headers = self._url(target, "/chat/completions"), self._headers(target)
        response = await _with_limit_fallback(body, lambda sent: open_stream(http, url, headers, sent, timeouts))
        async for chunk in openai_chunks(response):
            yield chunk

    async def _respond(
        self,
        http: aiohttp.ClientSession,
        target: Target,
        body: dict[str, Any],
        timeouts: Timeouts,
        native: dict[str, Any],
    ) -> Completion:
        """A Responses request sent as it came to `<base_url>/responses` (a provider that serves the API)."""
        request = {**responses_native(native, body, target.upstream_model), "stream": False}
        answer = await post_json(http, self._url(target, "/responses"), self._headers(target), request, timeouts)
        if answer.get("object") != "response" or not isinstance(answer.get("output"), list):
            raise UpstreamError("the provider's answer is not a response", status=502)
        # The output items stand in for choices: where the engine estimates the output when no usage came.
        return Completion(body={"choices": answer["output"]}, usage=responses_usage(answer.get("usage")), native=answer)

    async def embed(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> Completion:
        answer = await post_json(http, self._url(target, "/embeddings"), self._headers(target), body, timeouts)
        if not isinstance(answer.get("data"), list):
            raise UpstreamError("the provider's answer has no embeddings", status=502)
        return Completion(body=answer, usage=parse_usage(answer))

    async def rerank(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> dict[str, Any]:
        return await post_json(http, self._url(target, "/rerank"), self._headers(target), body, timeouts)

    async def generate_images(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> dict[str, Any]:
        return await post_json(http, self._url(target, "/images/generations"), self._headers(target), body, timeouts)

    async def moderate(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> dict[str, Any]:
        return await post_json(http, self._url(target, "/moderations"), self._headers(target), body, timeouts)

    async def speak(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> tuple[bytes, str]:
        return await post_for_bytes(http, self._url(target, "/audio/speech"), self._headers(target), body, timeouts)

    async def transcribe(
        self,
        http: aiohttp.ClientSession,
        target: Target,
        fields: list[tuple[str, str]],
        file: tuple[str, str, bytes],
        timeouts: Timeouts,
    ) -> tuple[bytes, str]:
        url = self._url(target, "/audio/transcriptions")
        return await post_form(http, url, self._headers(target), fields, file, timeouts)
