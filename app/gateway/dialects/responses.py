"""The OpenAI Responses dialect of /v1/responses: its request checked and translated to a chat call, the answer back.

A channel whose provider does not serve the Responses API is given the chat translation (and through it
any other wire format); the client gets a Response object, whole or as the Responses event stream,
built from the chat answer. A conversation continued with `previous_response_id` is kept by Lyss
(`app/gateway/stored_responses.py`): its earlier items (`prior`) are sent before this turn's, by either path.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

import msgspec

from app.gateway import errors
from app.gateway.adapters.base import Usage
from app.gateway.dialects.openai import _AT_PATH, NonEmpty, TokenLimit

ItemType = Literal["message", "function_call", "function_call_output"]
TOOL_CHOICES = ("auto", "none", "required")


class _Part(msgspec.Struct):
    type: NonEmpty
    text: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class _MessageItem(msgspec.Struct):
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[_Part]
    type: Literal["message"] = "message"
    id: str | None = None
    status: str | None = None


class _FunctionCallItem(msgspec.Struct):
    call_id: NonEmpty
    name: NonEmpty
    arguments: str
    type: Literal["function_call"] = "function_call"
    id: str | None = None
    status: str | None = None


class _FunctionCallOutputItem(msgspec.Struct):
    call_id: NonEmpty
    output: str | list[_Part]
    type: Literal["function_call_output"] = "function_call_output"
    id: str | None = None
    status: str | None = None


Item = _MessageItem | _FunctionCallItem | _FunctionCallOutputItem
_ITEMS: dict[str, type[Item]] = {
    "message": _MessageItem,
    "function_call": _FunctionCallItem,
    "function_call_output": _FunctionCallOutputItem,
}


class _Tool(msgspec.Struct):
    type: NonEmpty
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _Format(msgspec.Struct):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class _Text(msgspec.Struct):
    format: _Format | None = None


class _Reasoning(msgspec.Struct):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: str | None = None


class ResponsesRequest(msgspec.Struct):
    """The fields of a Responses request Lyss reads; the others are not looked at."""

    model: NonEmpty
    input: str | Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1)]
    instructions: str | None = None
    tools: list[_Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_output_tokens: TokenLimit | None = None
    temperature: float | None = None
    top_p: float | None = None
    parallel_tool_calls: bool | None = None
    text: _Text | None = None
    reasoning: _Reasoning | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    stream: bool | None = None
    store: bool | None = None
    truncation: Literal["auto", "disabled"] | None = None
    previous_response_id: str | None = None


def _invalid(error: msgspec.ValidationError, prefix: str) -> errors.GatewayError:
    """A typed-decoding error as a 400 whose `param` is the path from the body's root (`input[2].content`)."""
    match = _AT_PATH.match(str(error))
    assert match is not None  # the pattern matches any message
    path, message = match["path"] or "", errors.shown(match["message"], 200)
    if message.startswith("Object missing required field"):
        field = message.split("`")[1]
        path = f"{path}.{field}" if path else field
        message = "this parameter is required"
    full = prefix + ("" if not path else path if path.startswith("[") or not prefix else f".{path}")
    if not full:
        return errors.invalid_request(f"Invalid request body: {message}.")
    return errors.invalid_request(f"Invalid value for '{full}': {message}.", param=full)


def _refuse(param: str, message: str) -> errors.GatewayError:
    return errors.invalid_request(f"Invalid value for '{param}': {message}", param=param)


def _item(raw: Any, param: str) -> Item:
    if not isinstance(raw, dict):
        raise _refuse(param, "each input item must be an object.")
    kind = raw.get("type", "message")
    if kind not in _ITEMS:
        shown = errors.shown(str(kind), 60)
        raise _refuse(
            f"{param}.type",
            f"'{shown}' is not an input item this server takes (message, function_call, function_call_output).",
        )
    try:
        item = msgspec.convert(raw, _ITEMS[kind], strict=True)
    except msgspec.ValidationError as error:
        raise _invalid(error, param) from None
    if isinstance(item, _MessageItem) and isinstance(item.content, list):
        allowed = ("output_text", "input_text", "refusal") if item.role == "assistant" else None
        for position, part in enumerate(item.content):
            _check_part(part, f"{param}.content[{position}]", allowed)
    elif isinstance(item, _FunctionCallOutputItem) and isinstance(item.output, list):
        for position, part in enumerate(item.output):
            _check_part(part, f"{param}.output[{position}]", None)
    return item


def _check_part(part: _Part, param: str, allowed: tuple[str, ...] | None) -> None:
    kinds = allowed or ("input_text", "input_image")
    if part.type not in kinds:
        shown = errors.shown(part.type, 60)
        raise _refuse(f"{param}.type", f"'{shown}' is not a content part here (use {', '.join(kinds)}).")
    if part.type == "input_image":
        if part.file_id is not None:
            raise _refuse(f"{param}.file_id", "files are not supported by this server; give the image as 'image_url'.")
        if not part.image_url:
            raise _missing(f"{param}.image_url")
    elif part.text is None:
        raise _missing(f"{param}.text")


def _missing(param: str) -> errors.GatewayError:
    return errors.invalid_request(f"Missing required parameter: '{param}'.", param=param)


def parse_items(value: str | list[dict[str, Any]], param: str = "input") -> list[Item]:
    """Responses input items, checked: a string is one user message."""
    if isinstance(value, str):
        return [_MessageItem(role="user", content=value)]
    return [_item(raw, f"{param}[{position}]") for position, raw in enumerate(value)]


def responses_request(body: dict[str, Any]) -> tuple[ResponsesRequest, list[Item]]:
    """The request and its input items, checked; any problem is a 400 naming the parameter."""
    try:
        request = msgspec.convert(body, ResponsesRequest, strict=True)
    except msgspec.ValidationError as error:
        raise _invalid(error, "") from None
    for position, tool in enumerate(request.tools or []):
        if tool.type != "function":
            raise _refuse(
                f"tools[{position}].type",
                f"'{errors.shown(tool.type, 60)}' tools are not offered by this server; only 'function' tools are.",
            )
        if not tool.name:
            raise _missing(f"tools[{position}].name")
    choice = request.tool_choice
    if isinstance(choice, str) and choice not in TOOL_CHOICES:
        raise _refuse("tool_choice", f"give one of {', '.join(TOOL_CHOICES)} or a function.")
    if isinstance(choice, dict) and (choice.get("type") != "function" or not isinstance(choice.get("name"), str)):
        raise _refuse("tool_choice", "only {'type': 'function', 'name': ...} names a tool on this server.")
    fmt = request.text.format if request.text is not None else None
    if fmt is not None and fmt.type == "json_schema" and (not fmt.name or fmt.schema is None):
        raise _missing("text.format.name" if not fmt.name else "text.format.schema")
    return request, parse_items(request.input)


def _chat_content(content: str | list[_Part]) -> Any:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        if part.type == "input_image":
            image: dict[str, Any] = {"url": part.image_url}
            if part.detail is not None:
                image["detail"] = part.detail
            parts.append({"type": "image_url", "image_url": image})
        else:
            parts.append({"type": "text", "text": part.text or ""})
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def to_chat_messages(instructions: str | None, items: list[Item]) -> list[dict[str, Any]]:
    """Chat messages of a conversation's items: the instructions first, a run of function calls as one
    assistant turn (after the assistant's text, if it came just before), each output a tool message."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        if isinstance(item, _MessageItem):
            # `developer` is OpenAI's newer name for `system`: not every chat provider knows it.
            role = "system" if item.role == "developer" else item.role
            messages.append({"role": role, "content": _chat_content(item.content)})
        elif isinstance(item, _FunctionCallItem):
            function = {"name": item.name, "arguments": item.arguments}
            call = {"id": item.call_id, "type": "function", "function": function}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            output = item.output if isinstance(item.output, str) else _chat_content(item.output)
            text = output if isinstance(output, str) else msgspec.json.encode(output).decode()
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": text})
    return messages


def to_chat_request(request: ResponsesRequest, items: list[Item], prior: list[Item] | None = None) -> dict[str, Any]:
    """The chat completion request of a Responses request; `prior`: a stored conversation's items, sent first."""
    messages = to_chat_messages(request.instructions, [*(prior or []), *items])
    chat: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.max_output_tokens is not None:
        chat["max_tokens"] = request.max_output_tokens
    for name in ("temperature", "top_p", "parallel_tool_calls", "user", "stream"):
        if (value := getattr(request, name)) is not None:
            chat[name] = value
    if request.tools:
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description or "",
                    "parameters": tool.parameters or {"type": "object", "properties": {}},
                    **({"strict": tool.strict} if tool.strict is not None else {}),
                },
            }
            for tool in request.tools
        ]
    choice = request.tool_choice
    if isinstance(choice, dict):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice is not None:
        chat["tool_choice"] = choice
    fmt = request.text.format if request.text is not None else None
    if fmt is not None and fmt.type == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema}
        for name in ("description", "strict"):
            if (value := getattr(fmt, name)) is not None:
                schema[name] = value
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    if request.reasoning is not None and request.reasoning.effort is not None:
        chat["reasoning_effort"] = request.reasoning.effort
    return chat


def images(items: list[Item]) -> int:
    """The images among the items' content: each may be many input tokens, which the reservation covers."""
    return sum(
        1
        for item in items
        if isinstance(item, _MessageItem) and isinstance(item.content, list)
        for part in item.content
        if part.type == "input_image"
    )


def conversation_items(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A stored conversation's items as input items again: messages, function calls and their outputs, without
    the ids and statuses the answers gave them (a provider sent `store: false` knows no such ids). Reasoning
    items are left out (without the provider's stored state they cannot be sent back), and a refusal is
    replayed as the assistant's text."""
    items = []
    for item in stored:
        kind = item.get("type", "message")
        if kind not in _ITEMS:
            continue
        kept = {name: value for name, value in item.items() if name not in ("id", "status")}
        if kind == "message" and isinstance(kept.get("content"), list):
            kept["content"] = [
                {"type": "output_text", "text": part.get("refusal", "")}
                if isinstance(part, dict) and part.get("type") == "refusal"
                else part
                for part in kept["content"]
            ]
        items.append(kept)
    return items


def item_dict(item: Item) -> dict[str, Any]:
    """An input item as the API writes it (its `type` always named), for a stored conversation."""
    return {name: value for name, value in msgspec.to_builtins(item).items() if value is not None}


def responses_usage(usage: Usage, reasoning_tokens: int = 0) -> dict[str, Any]:
    cached, written = usage.cache_counts()
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _reasoning_tokens(answer: dict[str, Any]) -> int:
    usage = answer.get("usage")
    details = usage.get("completion_tokens_details") if isinstance(usage, dict) else None
    figure = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return figure if isinstance(figure, int) and not isinstance(figure, bool) and figure >= 0 else 0


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


class ResponsesTurn:
    """One call of /v1/responses: its request, this turn's items, its Lyss id, and its Response once built
    (`final`: the whole answer, or the one `response.completed` carried)."""

    def __init__(self, request: ResponsesRequest, items: list[Item]) -> None:
        self.request = request
        self.items = items
        self.id = _new_id("resp")
        self.created_at = int(time.time())
        self.final: dict[str, Any] | None = None

    @property
    def input_items(self) -> list[dict[str, Any]]:
        """This turn's input items, checked and each with its `type` named, as a stored conversation keeps them."""
        return [item_dict(item) for item in self.items]

    @property
    def stored(self) -> bool:
        """Whether the client lets the Response be kept (`store` defaults to true, as at OpenAI)."""
        return self.request.store is not False

    def response(
        self, model: str, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        """A Response object with the request's parameters echoed, as the API does."""
        request = self.request
        tools = [
            {
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
                "strict": tool.strict if tool.strict is not None else True,
            }
            for tool in request.tools or []
        ]
        fmt = request.text.format if request.text is not None else None
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": model,
            "output": output,
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "reasoning": {
                "effort": request.reasoning.effort if request.reasoning else None,
                "summary": request.reasoning.summary if request.reasoning else None,
            },
            "store": self.stored,
            "temperature": request.temperature if request.temperature is not None else 1.0,
            "text": {"format": msgspec.to_builtins(fmt) if fmt is not None else {"type": "text"}},
            "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
            "tools": tools,
            "top_p": request.top_p if request.top_p is not None else 1.0,
            "truncation": request.truncation or "disabled",
            "usage": usage,
            "user": request.user,
            "metadata": request.metadata or {},
        }

    def answer(self, chat: dict[str, Any], model: str, usage: Usage) -> dict[str, Any]:
        """The Response of a whole chat completion."""
        choice = (chat.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        incomplete = choice.get("finish_reason") == "length"
        output: list[dict[str, Any]] = []
        content = message.get("content")
        if content:
            text = content if isinstance(content, str) else str(content)
            output.append(_message_item(_new_id("msg"), text, "incomplete" if incomplete else "completed"))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            output.append(
                _call_item(
                    _new_id("fc"),
                    str(call.get("id") or _new_id("call")),
                    str(function.get("name") or ""),
                    str(function.get("arguments") or ""),
                    "completed",
                )
            )
        status = "incomplete" if incomplete else "completed"
        self.final = self.response(model, status, output, responses_usage(usage, _reasoning_tokens(chat)))
        return self.final

    def passed_through(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The provider's own Response (a channel that serves the API), under Lyss's id and with the client's
        `store` and `previous_response_id` (the provider was told not to keep it: Lyss keeps the conversation)."""
        previous = self.request.previous_response_id
        self.final = {**answer, "id": self.id, "store": self.stored, "previous_response_id": previous}
        return self.final

    def stream_writer(self, model: str, input_tokens: int) -> ResponsesStreamWriter:
        return ResponsesStreamWriter(self, model, input_tokens)


class _OpenCall:
    def __init__(self, output_index: int, call_id: str, name: str) -> None:
        self.output_index = output_index
        self.item_id = _new_id("fc")
        self.call_id = call_id
        self.name = name
        self.arguments = ""


class ResponsesStreamWriter:
    """OpenAI-format chunks in, Responses stream events out (`event:` and `data:` with a `sequence_number`)."""

    def __init__(self, turn: ResponsesTurn, model: str, input_tokens: int) -> None:
        self.turn = turn
        self.model = model
        self.input_tokens = input_tokens
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []
        self.text_index: int | None = None
        self.text_id = ""
        self.text = ""
        self.calls: dict[int, _OpenCall] = {}
        self.open_call: _OpenCall | None = None
        self.finish: str | None = None

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **payload}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"

    def _start(self) -> bytes:
        self.started = True
        response = self.turn.response(self.model, "in_progress", [], None)
        return self._event("response.created", {"response": response}) + self._event(
            "response.in_progress", {"response": response}
        )

    def _close_text(self, status: str) -> bytes:
        if self.text_index is None:
            return b""
        index, self.text_index = self.text_index, None
        part = {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
        where = {"item_id": self.text_id, "output_index": index}
        item = _message_item(self.text_id, self.text, status)
        self.output[index] = item
        return (
            self._event("response.output_text.done", {**where, "content_index": 0, "text": self.text, "logprobs": []})
            + self._event("response.content_part.done", {**where, "content_index": 0, "part": part})
            + self._event("response.output_item.done", {"output_index": index, "item": item})
        )

    def _close_call(self, status: str) -> bytes:
        call, self.open_call = self.open_call, None
        if call is None:
            return b""
        item = _call_item(call.item_id, call.call_id, call.name, call.arguments, status)
        self.output[call.output_index] = item
        return self._event(
            "response.function_call_arguments.done",
            {"item_id": call.item_id, "output_index": call.output_index, "arguments": call.arguments},
        ) + self._event("response.output_item.done", {"output_index": call.output_index, "item": item})

    def _text(self, delta: str) -> bytes:
        out = b""
        if self.text_index is None:
            out += self._close_call("completed")
            self.text_index, self.text_id, self.text = len(self.output), _new_id("msg"), ""
            item = {**_message_item(self.text_id, "", "in_progress"), "content": []}
            self.output.append(item)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._event("response.output_item.added", {"output_index": self.text_index, "item": item})
            out += self._event(
                "response.content_part.added",
                {"item_id": self.text_id, "output_index": self.text_index, "content_index": 0, "part": part},
            )
        self.text += delta
        return out + self._event(
            "response.output_text.delta",
            {
                "item_id": self.text_id,
                "output_index": self.text_index,
                "content_index": 0,
                "delta": delta,
                "logprobs": [],
            },
        )

    def _call(self, call: dict[str, Any]) -> bytes:
        out = b""
        position = int(call.get("index", 0))
        function = call.get("function") or {}
        opened = self.calls.get(position)
        if opened is None:
            out += self._close_text("completed") + self._close_call("completed")
            call_id, name = str(call.get("id") or _new_id("call")), str(function.get("name") or "")
            opened = _OpenCall(len(self.output), call_id, name)
            self.calls[position] = self.open_call = opened
            item = _call_item(opened.item_id, opened.call_id, opened.name, "", "in_progress")
            self.output.append(item)
            out += self._event("response.output_item.added", {"output_index": opened.output_index, "item": item})
        arguments = function.get("arguments")
        if arguments and opened is self.open_call:
            opened.arguments += arguments
            out += self._event(
                "response.function_call_arguments.delta",
                {"item_id": opened.item_id, "output_index": opened.output_index, "delta": arguments},
            )
        return out

    def write(self, raw: bytes) -> bytes:
        chunk = msgspec.json.decode(raw)
        out = b"" if self.started else self._start()
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out += self._text(str(delta["content"]))
            for call in delta.get("tool_calls") or []:
                out += self._call(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def finish_events(self, usage: Usage | None) -> bytes:
        out = b"" if self.started else self._start()
        status = "incomplete" if self.finish == "length" else "completed"
        out += self._close_text(status) + self._close_call(status)
        final = usage or Usage(self.input_tokens, 0)
        self.turn.final = self.turn.response(self.model, status, self.output, responses_usage(final))
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return out + self._event(kind, {"response": self.turn.final})

    def error_event(self, message: str) -> bytes:
        return self._event("error", {"code": "upstream_error", "message": message, "param": None})

    def passed_through(self, event: bytes) -> bytes:
        """The provider's own event (a channel that serves the API), its Response under Lyss's id; the last
        one's Response is the turn's. An error event after these continues their numbering."""
        kind, _, data = event.partition(b"\ndata: ")
        decoded = msgspec.json.decode(data.strip())
        if isinstance(decoded.get("sequence_number"), int):
            self.sequence = decoded["sequence_number"] + 1
        response = decoded.get("response")
        if not isinstance(response, dict):
            return event
        decoded["response"] = self.turn.passed_through(response)
        if decoded.get("type") not in ("response.completed", "response.incomplete"):
            self.turn.final = None
        return kind + b"\ndata: " + msgspec.json.encode(decoded) + b"\n\n"
