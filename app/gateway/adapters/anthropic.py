"""Anthropic Messages API as a provider: OpenAI-format requests, responses, tool calls and stream events translated."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec

from app.gateway.adapters.base import (
    MAX_REPORTED_TOKENS,
    Adapter,
    Chunk,
    Completion,
    Target,
    Timeouts,
    UpstreamError,
    Usage,
    estimated_tokens,
    network_error,
    reported_count,
    sse_data,
)
from app.gateway.adapters.openai import open_stream, post_json

ANTHROPIC_VERSION = "2023-06-01"
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def _image_block(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        header, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": header, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            blocks.append(_image_block(image.get("url", "") if isinstance(image, dict) else str(image)))
    return blocks


def _text(content: Any) -> str:
    return "".join(block["text"] for block in _content_blocks(content) if block["type"] == "text")


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice in (None, "auto"):
        return {"type": "auto"} if choice else None
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name")}
    return None


def output_limit(body: dict[str, Any]) -> Any:
    """The limit the gateway reserved for (set in `max_tokens`, the parameter Anthropic takes)."""
    return body.get("max_tokens") or body.get("max_completion_tokens")


def native_request(native: dict[str, Any], body: dict[str, Any], model: str) -> dict[str, Any]:
    """The client's own Anthropic request, with the channel's model name and the reserved limit."""
    return {**native, "model": model, "max_tokens": output_limit(body)}


def to_anthropic_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat request as an Anthropic Messages request."""
    system_parts: list[str] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        # Anthropic wants alternating roles: consecutive turns of one role (tool results) merge.
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for message in body.get("messages", []):
        role = message.get("role")
        if role in ("system", "developer"):
            system_parts.append(_text(message.get("content")))
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id"),
                "content": _text(message.get("content")),
            }
            add("user", [result])
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"))
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                try:
                    arguments = msgspec.json.decode(function.get("arguments") or "{}")
                except msgspec.DecodeError:
                    arguments = {}
                blocks.append(
                    {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments}
                )
            add("assistant", blocks)
        else:
            add("user", _content_blocks(message.get("content")))

    request: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": output_limit(body),
    }
    if system_parts:
        request["system"] = "\n\n".join(system_parts)
    for name in ("temperature", "top_p", "stream"):
        if body.get(name) is not None:
            request[name] = body[name]
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        request["tools"] = [
            {
                "name": tool["function"]["name"],
                "description": tool["function"].get("description", ""),
                "input_schema": tool["function"].get("parameters") or {"type": "object", "properties": {}},
            }
            for tool in body["tools"]
            if tool.get("type") == "function" and isinstance(tool.get("function"), dict)
        ]
        if (choice := _tool_choice(body.get("tool_choice"))) is not None:
            request["tool_choice"] = choice
    return request


def _usage(usage: Any) -> Usage:
    """Anthropic's counts: cache reads and writes are input too, priced on their own; a figure that is not a
    count counts 0."""
    usage = usage if isinstance(usage, dict) else {}

    def count(name: str) -> int:
        return reported_count(usage.get(name) or 0) or 0

    read, written = count("cache_read_input_tokens"), count("cache_creation_input_tokens")
    prompt = min(count("input_tokens") + read + written, MAX_REPORTED_TOKENS)
    return Usage(prompt, count("output_tokens"), cached_tokens=read, cache_write_tokens=written)


def openai_usage(usage: Usage) -> dict[str, Any]:
    """A `usage` object in OpenAI's shape: cached tokens in `prompt_tokens_details`, as OpenAI reports them."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_counts()[0]},
    }


def to_openai_response(answer: dict[str, Any]) -> Completion:
    """An Anthropic Messages answer as an OpenAI chat completion."""
    text_parts = []
    tool_calls = []
    for block in answer.get("content") or []:
        if block.get("type") == "text":
            text_parts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": msgspec.json.encode(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text_parts) or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    usage = _usage(answer.get("usage"))
    body = {
        "id": answer.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.get("model", ""),
        "choices": [
            {"index": 0, "message": message, "finish_reason": STOP_REASONS.get(answer.get("stop_reason") or "", "stop")}
        ],
        "usage": openai_usage(usage),
    }
    return Completion(body=body, usage=usage)


class _StreamTranslator:
    """Anthropic stream events in, OpenAI chunks out (text, tool calls, finish reason, usage)."""

    def __init__(self) -> None:
        self.base: dict[str, Any] = {
            "id": "",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": "",
        }
        self.started_usage = Usage()
        self.tool_index = -1
        self.block_is_tool: dict[int, int] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, tokens: int = 0) -> Chunk:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return Chunk(raw=msgspec.json.encode({**self.base, "choices": [choice]}), tokens=tokens)

    def translate(self, event: dict[str, Any]) -> list[Chunk]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.base.update(id=message.get("id", ""), model=message.get("model", ""))
            self.started_usage = _usage(message.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                self.tool_index += 1
                self.block_is_tool[int(event.get("index", 0))] = self.tool_index
                call = {
                    "index": self.tool_index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                text = delta.get("text", "")
                return [self._chunk({"content": text}, tokens=max(1, estimated_tokens(len(text))))]
            if delta.get("type") == "input_json_delta":
                index = self.block_is_tool.get(int(event.get("index", 0)), 0)
                partial = delta.get("partial_json", "")
                call = {"index": index, "function": {"arguments": partial}}
                return [self._chunk({"tool_calls": [call]}, tokens=max(1, estimated_tokens(len(partial))))]
            return []
        if kind == "message_delta":
            usage, start = _usage(event.get("usage")), self.started_usage
            finish = STOP_REASONS.get((event.get("delta") or {}).get("stop_reason") or "", "stop")
            # `message_start` has the input counts; `message_delta`'s are cumulative where it repeats them.
            final_usage = Usage(
                max(start.prompt_tokens, usage.prompt_tokens),
                usage.completion_tokens,
                cached_tokens=max(start.cached_tokens, usage.cached_tokens),
                cache_write_tokens=max(start.cache_write_tokens, usage.cache_write_tokens),
            )
            return [
                self._chunk({}, finish=finish),
                Chunk(
                    raw=msgspec.json.encode({**self.base, "choices": [], "usage": openai_usage(final_usage)}),
                    usage=final_usage,
                    usage_only=True,
                ),
            ]
        if kind == "error":
            raise UpstreamError(f"the provider failed mid-stream: {event.get('error')}", status=502)
        return []


def _event(kind: str, data: bytes) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


class AnthropicAdapter(Adapter):
    supports_embeddings = False

    def _headers(self, target: Target) -> dict[str, str]:
        return {"x-api-key": target.api_key, "anthropic-version": ANTHROPIC_VERSION}

    def _url(self, target: Target, path: str = "/messages") -> str:
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
            request = native_request(native, body, target.upstream_model)
        else:
            request = to_anthropic_request(body, target.upstream_model)
        request.pop("stream", None)
        answer = await post_json(http, self._url(target), self._headers(target), request, timeouts)
        if answer.get("type") != "message":
            raise UpstreamError("the provider's answer is not a message", status=502)
        completion = to_openai_response(answer)
        if native is not None:
            completion.native = answer
        return completion

    async def stream(
        self,
        http: aiohttp.ClientSession,
        target: Target,
        body: dict[str, Any],
        timeouts: Timeouts,
        native: dict[str, Any] | None = None,
    ) -> AsyncIterator[Chunk]:
        if native is not None:
            request = {**native_request(native, body, target.upstream_model), "stream": True}
        else:
            request = {**to_anthropic_request(body, target.upstream_model), "stream": True}
        response = await open_stream(http, self._url(target), self._headers(target), request, timeouts)
        translator = _StreamTranslator()
        try:
            async for data in sse_data(response):
                try:
                    event = msgspec.json.decode(data)
                except msgspec.DecodeError:
                    raise UpstreamError("the provider sent a stream event that is not JSON", status=502) from None
                if not isinstance(event, dict):
                    raise UpstreamError("the provider sent a stream event that is not an object", status=502)
                chunks = translator.translate(event)
                if native is None:
                    for chunk in chunks:
                        yield chunk
                    continue
                # Each event as it came, with what billing needs from its translation.
                yield Chunk(
                    raw=b"",
                    native=_event(str(event.get("type") or "message"), data),
                    tokens=sum(chunk.tokens for chunk in chunks),
                    usage=next((chunk.usage for chunk in chunks if chunk.usage is not None), None),
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            raise network_error(error) from None
        finally:
            response.release()

    async def count_tokens(
        self, http: aiohttp.ClientSession, target: Target, native: dict[str, Any], timeouts: Timeouts
    ) -> dict[str, Any]:
        """Anthropic's own count of a Messages request's input tokens (`/v1/messages/count_tokens`)."""
        request = {**native, "model": target.upstream_model}
        answer = await post_json(
            http, self._url(target, "/messages/count_tokens"), self._headers(target), request, timeouts
        )
        if reported_count(answer.get("input_tokens")) is None:
            raise UpstreamError("the provider's token count is not a count", status=502)
        return answer
