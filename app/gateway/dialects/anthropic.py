"""The Anthropic dialect of /v1/messages: Anthropic-format clients in, Lyss's OpenAI-format core behind.

A request is first decoded into typed structs (a wrong shape is a 400 in Anthropic's error format, naming
the field), then turned into an OpenAI chat request and routed like any other call. A channel that speaks
Anthropic itself is sent the client's own request (model and limit set), so that nothing is lost in
translation (`cache_control`, documents, thinking), and its answer and events come back as they were;
for any other channel the answer and the stream events are translated back into Anthropic's format.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec

from app.gateway.adapters.base import Usage
from app.gateway.dialects.openai import NonEmpty, TokenLimit, invalid_parameter

FINISH_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "end_turn"}
# Says whether `/v1/messages/count_tokens` was answered by an Anthropic channel or estimated by Lyss.
COUNTED_BY_HEADER = "x-lyss-token-count"


class _Base64Source(msgspec.Struct, tag="base64", tag_field="type"):
    media_type: NonEmpty
    data: str


class _UrlSource(msgspec.Struct, tag="url", tag_field="type"):
    url: NonEmpty


class _FileSource(msgspec.Struct, tag="file", tag_field="type"):
    file_id: NonEmpty


class _TextSource(msgspec.Struct, tag="text", tag_field="type"):
    data: str


class _ContentSource(msgspec.Struct, tag="content", tag_field="type"):
    content: str | list[dict[str, Any]]


class TextBlock(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ImageBlock(msgspec.Struct, tag="image", tag_field="type"):
    source: _Base64Source | _UrlSource | _FileSource


class DocumentBlock(msgspec.Struct, tag="document", tag_field="type"):
    source: _Base64Source | _UrlSource | _FileSource | _TextSource | _ContentSource


class SearchResultBlock(msgspec.Struct, tag="search_result", tag_field="type"):
    source: str
    title: str
    content: list[TextBlock]


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: NonEmpty
    name: NonEmpty
    input: dict[str, Any]


class ToolResultBlock(msgspec.Struct, tag="tool_result", tag_field="type"):
    tool_use_id: NonEmpty
    content: str | list[TextBlock | ImageBlock | DocumentBlock | SearchResultBlock] | None = None
    is_error: bool | None = None


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type"):
    data: str


class ServerToolUseBlock(msgspec.Struct, tag="server_tool_use", tag_field="type"):
    id: NonEmpty
    name: NonEmpty
    input: dict[str, Any]


class WebSearchToolResultBlock(msgspec.Struct, tag="web_search_tool_result", tag_field="type"):
    tool_use_id: NonEmpty
    content: list[dict[str, Any]] | dict[str, Any]


Block = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | SearchResultBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
    | ServerToolUseBlock
    | WebSearchToolResultBlock
)


class _Message(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class _Tool(msgspec.Struct):
    name: NonEmpty
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    # Set for Anthropic's own server tools (web search, code execution...), which only Anthropic runs.
    type: str | None = None


class _ToolChoice(msgspec.Struct):
    type: Literal["auto", "any", "tool", "none"]
    name: NonEmpty | None = None


class _Request(msgspec.Struct):
    model: NonEmpty
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[_Tool] | None = None
    tool_choice: _ToolChoice | None = None
    thinking: dict[str, Any] | None = None


class MessagesRequest(_Request, kw_only=True):
    """The fields of a Messages request Lyss reads or translates; the others pass on untouched."""

    max_tokens: TokenLimit
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stream: bool | None = None

    @property
    def media(self) -> int:
        """Images and documents: a reference to one can cost far more tokens than its bytes."""
        count = 0
        for message in self.messages:
            for block in message.content if isinstance(message.content, list) else []:
                if isinstance(block, ImageBlock | DocumentBlock):
                    count += 1
                elif isinstance(block, ToolResultBlock) and isinstance(block.content, list):
                    count += sum(isinstance(part, ImageBlock | DocumentBlock) for part in block.content)
        return count


class CountTokensRequest(_Request):
    """`POST /v1/messages/count_tokens`: a Messages request without `max_tokens`."""


def messages_request(body: dict[str, Any]) -> MessagesRequest:
    try:
        return msgspec.convert(body, MessagesRequest, strict=True)
    except msgspec.ValidationError as error:
        raise invalid_parameter(error) from None


def count_tokens_request(body: dict[str, Any]) -> CountTokensRequest:
    try:
        return msgspec.convert(body, CountTokensRequest, strict=True)
    except msgspec.ValidationError as error:
        raise invalid_parameter(error) from None


def _image_url(source: _Base64Source | _UrlSource | _FileSource) -> str | None:
    if isinstance(source, _Base64Source):
        return f"data:{source.media_type};base64,{source.data}"
    if isinstance(source, _UrlSource):
        return source.url
    return None  # an Anthropic file id means nothing to another provider


def _text_of(blocks: str | list[Any] | None) -> str:
    if isinstance(blocks, str):
        return blocks
    return "".join(block.text for block in blocks or [] if isinstance(block, TextBlock))


def _openai_turns(message: _Message) -> list[dict[str, Any]]:
    """One Anthropic message as OpenAI messages: tool results first (role `tool`), then the turn itself."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    parts: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock) and (url := _image_url(block.source)) is not None:
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif isinstance(block, ToolUseBlock):
            arguments = msgspec.json.encode(block.input).decode()
            tool_calls.append(
                {"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}}
            )
        elif isinstance(block, ToolResultBlock):
            turns.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": _text_of(block.content)})
    content: Any = parts
    if all(part["type"] == "text" for part in parts):
        content = "".join(part["text"] for part in parts)
    if message.role == "assistant":
        turn: dict[str, Any] = {"role": "assistant", "content": content or None}
        if tool_calls:
            turn["tool_calls"] = tool_calls
        turns.append(turn)
    elif content:
        turns.append({"role": "user", "content": content})
    return turns


def to_openai_request(request: MessagesRequest) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": _text_of(request.system)})
    for message in request.messages:
        messages.extend(_openai_turns(message))
    translated: dict[str, Any] = {"model": request.model, "messages": messages, "max_tokens": request.max_tokens}
    for name in ("temperature", "top_p", "stream"):
        if (value := getattr(request, name)) is not None:
            translated[name] = value
    if request.stop_sequences:
        translated["stop"] = request.stop_sequences
    # Anthropic's server tools (typed) only run at Anthropic; another provider is given the client's own.
    tools = [tool for tool in request.tools or [] if tool.type in (None, "custom")]
    if tools:
        translated["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description or "",
                    "parameters": tool.input_schema or {"type": "object", "properties": {}},
                },
            }
            for tool in tools
        ]
        choice = request.tool_choice
        if choice is not None and choice.type == "tool":
            translated["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        elif choice is not None:
            translated["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    return translated


def estimated_input_tokens(request: _Request, encoded_size: int) -> int:
    """Tokens of a request when no provider counts them: about four bytes a token, plus the turns' framing."""
    return (encoded_size + 3) // 4 + 8 * len(request.messages)


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
        "usage": anthropic_usage(usage),
    }


def anthropic_usage(usage: Usage) -> dict[str, int]:
    """A `usage` object in Anthropic's shape, where `input_tokens` leaves out cache reads and writes."""
    read, written = usage.cache_counts()
    return {
        "input_tokens": usage.uncached_prompt_tokens(),
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": written,
        "output_tokens": usage.completion_tokens,
    }


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode({"type": kind, **payload}) + b"\n\n"


class AnthropicStreamWriter:
    """OpenAI-format chunks in, Anthropic stream events out.

    `input_tokens` is what `message_start` reports: the provider's count is known only at the end of an
    OpenAI-format stream, so it starts as Lyss's estimate and the final count comes in `message_delta`.
    """

    def __init__(self, model: str, input_tokens: int) -> None:
        self.model = model
        self.input_tokens = input_tokens
        self.started = False
        self.open_block: int | None = None
        self.block_count = 0
        self.tool_blocks: dict[int, int] = {}
        self.finish: str | None = None

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
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
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
        final = usage or Usage(self.input_tokens, 0)
        out += _event(
            "message_delta",
            {
                "delta": {"stop_reason": FINISH_REASONS.get(self.finish or "stop", "end_turn"), "stop_sequence": None},
                "usage": anthropic_usage(final),
            },
        )
        return out + _event("message_stop", {})

    @staticmethod
    def error_event(message: str) -> bytes:
        return _event("error", {"error": {"type": "api_error", "message": message}})
