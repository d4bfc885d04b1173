"""Valid /v1 bodies mutated by a table of kinds (types, NULs, huge numbers, nesting, shapes): never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any

import httpx
import msgspec
import pytest

from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, issue_key
from tests.support.json_paths import JsonPath, leaves_and_branches, replaced
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

CHAT, EMBEDDINGS, MESSAGES = "/v1/chat/completions", "/v1/embeddings", "/v1/messages"

CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOL = {"name": "weather", "description": "The weather of a city", "input_schema": CITY}
FUNCTION = {"type": "function", "function": {"name": "weather", "parameters": CITY}}
# Valid bodies, streamed and not: every mutation starts from one of these.
VALID: dict[str, list[dict[str, Any]]] = {
    CHAT: [
        {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16, "temperature": 0.5,
         "tools": [FUNCTION]},
        {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}], "stream": True,
         "stream_options": {"include_usage": True}},
    ],
    EMBEDDINGS: [{"model": "embed-test", "input": ["one", "two"]}],
    MESSAGES: [
        {"model": "claude-test", "max_tokens": 16, "system": "Be brief.",
         "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}], "tools": [TOOL]},
        {"model": "claude-test", "max_tokens": 16, "stream": True,
         "messages": [{"role": "user", "content": "hello"}]},
    ],
}  # fmt: skip
# The token limits Lyss reserves quota for, per endpoint.
LIMITS = {CHAT: ["max_tokens", "max_completion_tokens", "n"], EMBEDDINGS: [], MESSAGES: ["max_tokens"]}
# One value of each JSON type.
JSON_TYPES: list[Any] = ["text", 7, True, None, ["text"], {"key": "value"}]
# Wrong shapes of the fields Lyss reads, as (field, value); a refusal must name the field. (OpenAI `tools` are
# the provider's business: they pass through, and other JSON types for them are in the sweep below.)
WRONG_SHAPES: dict[str, list[tuple[str, Any]]] = {
    CHAT: [
        ("messages", "hi"),
        ("messages", [1, 2]),
        ("messages", [{"role": "user"}]),
        ("messages", [{"role": "user", "content": 5}]),
        ("messages", [{"role": "user", "content": [{"type": "nope"}, 3, None]}]),
        ("messages", [{"content": "no role"}]),
        ("stream", "yes"),
    ],
    EMBEDDINGS: [
        ("input", None),
        ("input", True),
        ("input", {"text": "x"}),
        ("input", [None]),
        ("input", [{"text": "x"}]),
        ("input", [["nested", "strings"]]),
    ],
    MESSAGES: [
        ("messages", "hi"),
        ("messages", [1, 2]),
        ("messages", [{"role": "user", "content": 5}]),
        ("messages", [{"role": "user", "content": [{"type": "nope"}, 3, None]}]),
        ("messages", [{"role": "user", "content": [{"type": "tool_result", "content": "sunny"}]}]),
        ("messages", [{"role": "user", "content": [{"type": "image", "source": 5}]}]),
        ("tools", "x"),
        ("tools", [1]),
        ("system", 5),
        ("system", [1, {"x": 1}]),
    ],
}
# With `stream: true`, broken options for it.
BROKEN_STREAM_OPTIONS: list[Any] = ["x", 5, [], {"include_usage": "yes"}]
# Raw JSON, as no encoder writes it: an array nested 5,000 levels deep (far below the body size limit).
DEEP = "[" * 5000 + "]" * 5000
DEEP_MARK = "__deeply_nested__"


class Expect(Enum):
    REFUSED = "a 400 in the caller's error shape naming the field"
    ANSWERED = "a well-formed 200"
    NO_SERVER_ERROR = "no 5xx"


class Mutation(msgspec.Struct, frozen=True):
    what: str
    body: dict[str, Any]
    field: str | None = None
    # A field the provider must receive as sent: (path, value).
    passed_through: tuple[JsonPath, Any] | None = None


def value_at(document: Any, path: JsonPath) -> Any:
    for part in path:
        if isinstance(document, dict):
            document = document.get(part)
        elif isinstance(document, list) and isinstance(part, int) and part < len(document):
            document = document[part]
        else:
            return None
    return document


def spelled(path: JsonPath) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".") or "the body"


def json_type(value: Any) -> str:
    return {bool: "bool", int: "number", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), "null"
    )


# --- the table: each kind of mutation, what it yields for a valid body, and what the answer must be -----------
# /v1 is outside the OpenAPI schema, so its bodies are generated here. Each kind applies to every field of a
# valid body it fits: the set of requests is fixed, and the test needs no seed to be deterministic.


def unchanged(endpoint: str, body: dict[str, Any]) -> Iterator[Mutation]:
    yield Mutation("the valid body itself", body)


def other_json_types(endpoint: str, body: dict[str, Any]) -> Iterator[Mutation]:
    for path, current in leaves_and_branches(body):
        for value in JSON_TYPES:
            if json_type(value) != json_type(current):
                yield Mutation(f"{spelled(path)} = {json.dumps(value)}", replaced(body, path, value))


def nul_in_strings(endpoint: str, body: dict[str, Any]) -> Iterator[Mutation]:
    for path, current in leaves_and_branches(body):
        if isinstance(current, str):
            value = current[:1] + "\x00" + current[1:]
            yield Mutation(f"{spelled(path)} = {json.dumps(value)}", replaced(body, path, value), str(path[0]))


def huge_limits(endpoint: str, body: dict[str, Any]) -> Iterator[Mutation]:
    for name in LIMITS[endpoint]:
        for value in (2**63, -(2**63) - 1, 10**400):
            yield Mutation(f"{name} = {'10**400' if value == 10**400 else value}", {**body, name: value}, name)


def refused_limits(endpoint: str, body: dict[str, Any]) -> Iterator[Mutation]:
    for name in LIMITS[endpoint]:
        for value in (-1, 0, 1.5, 1e308, "abc", True):
            yield Mutation(f"{name} = {json.dumps(value)}", {**body, name: value}, name)


def deep_nesting(endpoint: str, body: dict[str, Any]) -> Iterator[Mutation]:
    yield Mutation("x_extra = [[[...]]] 5,000 levels deep", {**body, "x_extra": DEEP_MARK})


def wrong_shapes(endpoint: str, body: dict[str, Any]) -> Iterator[Mutation]:
    for name, value in WRONG_SHAPES[endpoint]:
        yield Mutation(f"{name} = {json.dumps(value)}", {**body, name: value}, name)
    if endpoint == CHAT:
        for value in BROKEN_STREAM_OPTIONS:
            broken = {**body, "stream": True, "stream_options": value}
            yield Mutation(f"stream = true, stream_options = {json.dumps(value)}", broken, "stream_options")


def unknown_fields(endpoint: str, body: dict[str, Any]) -> Iterator[Mutation]:
    extra = {"kept": [1, "two", None], "deep": {"er": True}}
    # Anthropic's request is translated for the channel, so only the OpenAI endpoints can pass fields through.
    through = endpoint != MESSAGES
    yield Mutation(
        "x_extra = {...}", {**body, "x_extra": extra}, passed_through=(("x_extra",), extra) if through else None
    )
    if endpoint == CHAT:
        named = replaced(body, ("messages", 0, "name"), "alice")
        yield Mutation("messages[0].name = alice", named, passed_through=(("messages", 0, "name"), "alice"))


MUTATION_KINDS: list[tuple[str, Callable[[str, dict[str, Any]], Iterator[Mutation]], Expect]] = [
    ("none (the valid bodies)", unchanged, Expect.ANSWERED),
    ("every value replaced by one of each other JSON type", other_json_types, Expect.NO_SERVER_ERROR),
    ("a NUL character in every string", nul_in_strings, Expect.REFUSED),
    ("token limits beyond 64 bits", huge_limits, Expect.REFUSED),
    ("token limits OpenAI and Anthropic refuse", refused_limits, Expect.REFUSED),
    ("nesting 5,000 levels deep in an extra field", deep_nesting, Expect.REFUSED),
    ("wrong shapes of the fields Lyss reads", wrong_shapes, Expect.REFUSED),
    ("unknown fields", unknown_fields, Expect.ANSWERED),
]


# --- what an answer must look like ------------------------------------------------------------------


def error_shape_problem(endpoint: str, response: httpx.Response) -> str | None:
    """Why a refusal is not in the caller's error format (OpenAI's on /v1/chat/completions and /v1/embeddings,
    Anthropic's on /v1/messages), or None."""
    try:
        body = response.json()
    except ValueError:
        return "the body is not JSON"
    if endpoint == MESSAGES:
        error = body.get("error") if isinstance(body, dict) else None
        if set(body) != {"type", "error"} or body["type"] != "error" or not isinstance(error, dict):
            return 'not {"type": "error", "error": {...}}'
        if set(error) != {"type", "message"} or not all(isinstance(error[key], str) for key in error):
            return 'error is not {"type": str, "message": str}'
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if set(body) != {"error"} or not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return 'not {"error": {"message", "type", "param", "code"}}'
    if not isinstance(error["message"], str) or not isinstance(error["type"], str):
        return "message or type is not a string"
    return None


def answer_problem(endpoint: str, response: httpx.Response) -> str | None:
    """Why a 200 is not a well-formed answer (a JSON object of its kind, or a stream that ends properly), or None."""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        try:
            body = response.json()
        except ValueError:
            return "the body is not JSON"
        expected = {CHAT: ("object", "chat.completion"), EMBEDDINGS: ("object", "list"), MESSAGES: ("type", "message")}
        key, value = expected[endpoint]
        return None if isinstance(body, dict) and body.get(key) == value else f"not a {value}: {excerpt(response)}"
    data = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    if endpoint == CHAT and (not data or data[-1] != "[DONE]"):
        return "an OpenAI stream that does not end with [DONE]"
    try:
        events = [msgspec.json.decode(item) for item in data if item != "[DONE]"]
    except msgspec.DecodeError:
        return "a stream event that is not JSON"
    if any("error" in event for event in events):
        return "a stream carrying an error event"
    if endpoint == MESSAGES and (not events or events[-1].get("type") != "message_stop"):
        return "an Anthropic stream that does not end with message_stop"
    return None


def excerpt(response: httpx.Response) -> str:
    return response.text[:160].replace("\n", "\\n")


def problem_with(
    endpoint: str, mutation: Mutation, expect: Expect, response: httpx.Response, upstream: MockUpstream
) -> str | None:
    status = response.status_code
    if status >= 500:
        return f"{status}: {excerpt(response)}"
    if 400 <= status < 500 and (shape := error_shape_problem(endpoint, response)):
        return f"{status} {shape}: {excerpt(response)}"
    if status == 200 and (answer := answer_problem(endpoint, response)):
        return answer
    if expect is Expect.REFUSED:
        if status != 400:
            return f"{status} instead of a 400: {excerpt(response)}"
        if mutation.field and mutation.field not in response.text:
            return f"a 400 that does not name `{mutation.field}`: {excerpt(response)}"
    if expect is Expect.ANSWERED:
        if status != 200:
            return f"{status} instead of a 200: {excerpt(response)}"
        if mutation.passed_through:
            path, value = mutation.passed_through
            sent = value_at(upstream.bodies[-1][1], path) if upstream.bodies else None
            if sent != value:
                return f"the provider received {spelled(path)} = {json.dumps(sent)}"
    return None


def raw_json(body: dict[str, Any]) -> bytes:
    # NULs are written as the JSON escape \u0000; the deep array is spliced in as text.
    return json.dumps(body).replace(json.dumps(DEEP_MARK), DEEP).encode()


@pytest.mark.parametrize("endpoint", [CHAT, EMBEDDINGS, MESSAGES])
async def test_mutated_bodies_get_no_server_error_and_answers_in_the_callers_protocol(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders, endpoint: str
) -> None:
    admin = auth_headers(tenant_a.admin)
    for name in ("chat", "claude"):
        # A body Lyss forwards but the provider cannot read gets the provider's 400, so that one such case does
        # not put the channel in cool-down for all the cases after it.
        upstream.behave(name, refuse_unreadable=True)
    await add_channel(client, admin, upstream, "chat", models=["gpt-test", "embed-test"])
    await add_channel(client, admin, upstream, "claude", models=["claude-test"], kind="anthropic")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    headers = {**bearer(key), "Content-Type": "application/json"}
    problems: list[str] = []
    sent = 0
    for kind, mutations, expect in MUTATION_KINDS:
        for valid in VALID[endpoint]:
            for mutation in mutations(endpoint, valid):
                upstream.bodies.clear()
                response = await client.post(endpoint, content=raw_json(mutation.body), headers=headers)
                sent += 1
                if problem := problem_with(endpoint, mutation, expect, response, upstream):
                    variant = " (streamed)" if valid.get("stream") else ""
                    problems.append(f"{kind}{variant}: {mutation.what} -> {problem}")
    assert sent > 30  # the table generated what it should
    assert not problems, f"{len(problems)} of {sent} mutated bodies for {endpoint}:\n" + "\n".join(problems)
