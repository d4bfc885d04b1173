"""The Anthropic dialect of /v1/messages: Anthropic-format clients in, Lyss's OpenAI-format core behind.

Requests are turned into OpenAI chat requests, routed like any other call (to Anthropic or any channel),
and the answers and stream events are turned back into Anthropic's format.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from app.gateway.adapters.base import Usage

FINISH_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "end_turn"}


def _openai_parts(content: Any) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    """Anthropic content as (OpenAI content, tool calls, tool results)."""
    if isinstance(content, str):
        return content, [], []
    parts: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    tool_results: list[dict[str, Any]] = []
    for block in content or []:
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            source = block.get("source") or {}
            url = (
                f"data:{source.get('media_type')};base64,{source.get('data')}"
                if source.get("type") == "base64"
                else source.get("url", "")
            )
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "tool_use":
            arguments = msgspec.json.encode(block.get("input") or {}).decode()
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        elif kind == "tool_result":
            result = block.get("content")
            text = (
                result
                if isinstance(result, str)
                else "".join(part.get("text", "") for part in result or [] if isinstance(part, dict))
            )
            tool_results.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts), tool_calls, tool_results
    return parts, tool_calls, tool_results


def to_openai_request(body: dict[str, Any]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        text = system if isinstance(system, str) else "".join(block.get("text", "") for block in system)
        messages.append({"role": "system", "content": text})
    for message in body.get("messages") or []:
        content, tool_calls, tool_results = _openai_parts(message.get("content"))
        messages.extend(tool_results)
        if message.get("role") == "assistant":
            turn: dict[str, Any] = {"role": "assistant", "content": content or None}
            if tool_calls:
                turn["tool_calls"] = tool_calls
            messages.append(turn)
        elif content:
            messages.append({"role": "user", "content": content})
    request: dict[str, Any] = {"model": body.get("model"), "messages": messages, "max_tokens": body.get("max_tokens")}
    for name in ("temperature", "top_p", "stream"):
        if body.get(name) is not None:
            request[name] = body[name]
    if body.get("stop_sequences"):
        request["stop"] = body["stop_sequences"]
    if body.get("tools"):
        request["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.get("name"),
                    "description": tool.get("description", ""),
                    "parameters": tool.get("input_schema") or {},
                },
            }
            for tool in body["tools"]
        ]
        choice = body.get("tool_choice") or {}
        mapping = {"auto": "auto", "any": "required", "none": "none"}
        if choice.get("type") == "tool":
            request["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif choice.get("type") in mapping:
            request["tool_choice"] = mapping[choice["type"]]
    return request


def to_anthropic_response(answer: dict[str, Any], model: str, usage: Usage | None) -> dict[str, Any]:
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        text = message["content"] if isinstance(message["content"], str) else str(message["content"])
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = msgspec.json.decode(function.get("arguments") or "{}")
        except msgspec.DecodeError:
            arguments = {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments})
    usage = usage or Usage()
    return {
        "id": answer.get("id") or f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": FINISH_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
    }


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode({"type": kind, **payload}) + b"\n\n"


class AnthropicStreamWriter:
    """OpenAI-format chunks in, Anthropic stream events out."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.open_block: int | None = None
        self.block_count = 0
        self.tool_blocks: dict[int, int] = {}
        self.finish: str | None = None
        self.output_tokens = 0

    def _start(self) -> bytes:
        self.started = True
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"message": message})

    def _close_block(self) -> bytes:
        if self.open_block is None:
            return b""
        index, self.open_block = self.open_block, None
        return _event("content_block_stop", {"index": index})

    def _open(self, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self.open_block = self.block_count
        self.block_count += 1
        return out + _event("content_block_start", {"index": self.open_block, "content_block": block})

    def write(self, raw: bytes) -> bytes:
        chunk = msgspec.json.decode(raw)
        out = b"" if self.started else self._start()
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.open_block is None or self.open_block in self.tool_blocks.values():
                    out += self._open({"type": "text", "text": ""})
                out += _event(
                    "content_block_delta",
                    {"index": self.open_block, "delta": {"type": "text_delta", "text": delta["content"]}},
                )
            for call in delta.get("tool_calls") or []:
                position = int(call.get("index", 0))
                if position not in self.tool_blocks:
                    function = call.get("function") or {}
                    out += self._open(
                        {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": {}}
                    )
                    self.tool_blocks[position] = self.open_block or 0
                arguments = (call.get("function") or {}).get("arguments")
                if arguments:
                    out += _event(
                        "content_block_delta",
                        {
                            "index": self.tool_blocks[position],
                            "delta": {"type": "input_json_delta", "partial_json": arguments},
                        },
                    )
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def finish_events(self, usage: Usage | None) -> bytes:
        out = b"" if self.started else self._start()
        out += self._close_block()
        usage = usage or Usage()
        out += _event(
            "message_delta",
            {
                "delta": {"stop_reason": FINISH_REASONS.get(self.finish or "stop", "end_turn"), "stop_sequence": None},
                "usage": {"output_tokens": usage.completion_tokens},
            },
        )
        return out + _event("message_stop", {})

    @staticmethod
    def error_event(message: str) -> bytes:
        return _event("error", {"error": {"type": "api_error", "message": message}})
