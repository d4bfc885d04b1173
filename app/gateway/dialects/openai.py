"""The OpenAI dialect of /v1/chat/completions and /v1/embeddings: what Lyss reads of a request, typed.

A request travels on as the client's own JSON (every field Lyss does not know passes through untouched),
but each field Lyss reads or an adapter translates is first checked here against its type, strictly:
a wrong shape is a 400 naming the parameter, never a crash further in, and never a value quietly
replaced (OpenAI itself refuses `max_tokens: 0`, `"abc"` or `true`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from uuid import UUID

import msgspec

from app.gateway import errors

# Bounded by what any model can generate, and so that the worst-case cost of a call stays exact in Redis.
TokenLimit = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
# OpenAI's own bound for `n`.
Choices = Annotated[int, msgspec.Meta(ge=1, le=128)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
LIMIT_PARAMETERS = ("max_tokens", "max_completion_tokens")
_AT_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$")


class _ImageUrl(msgspec.Struct):
    url: str


class _ContentPart(msgspec.Struct):
    type: NonEmpty
    text: str | None = None
    image_url: _ImageUrl | str | None = None


class _FunctionCall(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    id: str | None = None
    type: str | None = None
    function: _FunctionCall | None = None


class _Message(msgspec.Struct):
    role: NonEmpty
    content: str | list[_ContentPart] | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None


class _Function(msgspec.Struct):
    name: NonEmpty
    description: str | None = None
    parameters: dict[str, Any] | None = None


class _Tool(msgspec.Struct):
    type: NonEmpty
    function: _Function | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class KnowledgeField(msgspec.Struct, forbid_unknown_fields=True):
    """Lyss's extension of a chat completion: search these knowledge bases with the last user message and put the
    best sections into the context, cited in `lyss_citations` (read, and taken out, by `app.knowledge.completions`
    before the engine sees the request)."""

    base_ids: Annotated[list[UUID], msgspec.Meta(min_length=1, max_length=20)]
    max_tokens: Annotated[int, msgspec.Meta(ge=100, le=100_000)] = 3000


class ChatRequest(msgspec.Struct):
    """The fields of a chat completion request Lyss reads or translates; the others are not looked at."""

    model: NonEmpty
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: TokenLimit | None = None
    max_completion_tokens: TokenLimit | None = None
    n: Choices | None = None
    tools: list[_Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    stop: str | list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    knowledge: KnowledgeField | None = None

    @property
    def requested_limit(self) -> int | None:
        """The largest output limit the request names: what the provider could generate under it."""
        limits = [limit for limit in (self.max_tokens, self.max_completion_tokens) if limit is not None]
        return max(limits) if limits else None

    @property
    def limit_parameter(self) -> str:
        """The parameter that names the largest limit (`max_tokens` when neither does), for error messages."""
        if self.max_completion_tokens is not None and self.max_completion_tokens == self.requested_limit:
            return "max_completion_tokens"
        return "max_tokens"

    @property
    def choices(self) -> int:
        return self.n or 1

    @property
    def images(self) -> int:
        return sum(
            1
            for message in self.messages
            if isinstance(message.content, list)
            for part in message.content
            if part.image_url is not None or part.type in ("image_url", "input_image")
        )


class EmbeddingsRequest(msgspec.Struct):
    model: NonEmpty
    # One text, a list of texts, or pre-tokenized input (a list of token ids, or a list of such lists).
    input: str | Annotated[list[Any], msgspec.Meta(min_length=1)]


def invalid_parameter(error: msgspec.ValidationError) -> errors.GatewayError:
    """A typed-decoding error as OpenAI's 400, with the parameter's path (`messages[0].content`) as `param`."""
    match = _AT_PATH.match(str(error))
    assert match is not None  # the pattern matches any message
    # The message may quote the client's value (an unknown `type`): cut, never a megabyte sent back.
    path, message = match["path"] or "", errors.shown(match["message"], 200)
    if not path and not message.startswith("Object missing required field"):
        return errors.invalid_request(f"Invalid request body: {message}.")
    if message.startswith("Object missing required field"):
        field = message.split("`")[1]
        path = f"{path}.{field}" if path else field
        return errors.invalid_request(f"Missing required parameter: '{path}'.", param=path)
    return errors.invalid_request(f"Invalid value for '{path}': {message}.", param=path)


def chat_request(body: dict[str, Any]) -> ChatRequest:
    try:
        request = msgspec.convert(body, ChatRequest, strict=True)
    except msgspec.ValidationError as error:
        raise invalid_parameter(error) from None
    for position, message in enumerate(request.messages):
        # Only an assistant turn (one that calls tools) may come without content, as OpenAI has it.
        if message.content is None and message.role != "assistant":
            path = f"messages[{position}].content"
            raise errors.invalid_request(f"Missing required parameter: '{path}'.", param=path)
    return request


def embeddings_request(body: dict[str, Any]) -> EmbeddingsRequest:
    try:
        request = msgspec.convert(body, EmbeddingsRequest, strict=True)
    except msgspec.ValidationError as error:
        raise invalid_parameter(error) from None
    if isinstance(request.input, list) and not _is_embeddings_input(request.input):
        raise errors.invalid_request(
            "Invalid value for 'input': give a string, a list of strings, a list of token ids (integers) or a list "
            "of such lists.",
            param="input",
        )
    return request


def _is_token_ids(values: Any) -> bool:
    return (
        isinstance(values, list)
        and bool(values)
        and all(isinstance(value, int) and not isinstance(value, bool) and value >= 0 for value in values)
    )


def _is_embeddings_input(values: list[Any]) -> bool:
    return (
        all(isinstance(value, str) for value in values)
        or _is_token_ids(values)
        or all(_is_token_ids(value) for value in values)
    )
