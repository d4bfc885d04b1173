"""What /v1 does with malformed, odd or SDK-specific requests: a 400 in the caller's protocol naming the
parameter, never a 500; unknown fields pass through; the SDKs' own calls (models.retrieve, count_tokens)."""

from __future__ import annotations

from typing import Any

import anthropic
import msgspec
import openai
import pytest
from anthropic.types import TextBlockParam
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, chat_body, issue_key, sdk_http, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

NUL = "\u0000"
JSON = {"Content-Type": "application/json"}


def openai_error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


def anthropic_error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"}, body
    return dict(body["error"])


async def gateway_key(client: Client, tenant: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders) -> str:
    admin = auth_headers(tenant.admin)
    await add_channel(client, admin, upstream, "primary", models=["gpt-test", "embed-test"])
    await add_channel(client, admin, upstream, "claude", kind="anthropic", models=["claude-test"])
    key, _ = await issue_key(client, auth_headers(tenant.user))
    return key


# --- OpenAI bodies: each field Lyss reads is typed ------------------------------------------------

CHAT_MISTAKES: list[tuple[dict[str, Any], str]] = [
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [1, 2]}, "messages[0]"),
    ({"messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}]}, "arguments"),
    ({"model": 5}, "model"),
    ({"model": ""}, "model"),
    ({"stream": "yes"}, "stream"),
    ({"stream": True, "stream_options": "x"}, "stream_options"),
    ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "abc"}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": 1e308}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": 2**63}, "max_tokens"),
    ({"max_tokens": 10**400}, "max_tokens"),
    ({"max_completion_tokens": -5}, "max_completion_tokens"),
    ({"n": 0}, "n"),
    ({"n": "2"}, "n"),
    ({"tools": "x"}, "tools"),
    ({"tools": [1]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    ({"stop": 5}, "stop"),
]
EMBEDDING_INPUTS: list[Any] = [5, [], [1, "a"], [[1], "a"], [[1], [-2]], [True]]


async def test_a_malformed_chat_or_embeddings_request_is_a_400_naming_the_parameter(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders, subtests: pytest.Subtests
) -> None:
    key = await gateway_key(client, tenant_a, upstream, auth_headers)
    cases = [("/v1/chat/completions", {**chat_body(), **change}, param) for change, param in CHAT_MISTAKES]
    cases += [("/v1/embeddings", {"model": "embed-test", "input": value}, "input") for value in EMBEDDING_INPUTS]
    for path, body, param in cases:
        with subtests.test(msg=f"{path} {param}"):
            # 10**400 has no float form: it goes as raw JSON digits.
            response = await client.post(path, content=msgspec.json.encode(body), headers={**bearer(key), **JSON})
            assert response.status_code == 400, response.text
            error = openai_error(response)
            assert error["type"] == "invalid_request_error"
            assert param in (error["param"] or ""), error
            assert param in error["message"]
    assert sum(upstream.calls.values()) == 0


async def test_token_ids_are_embeddings_input_too(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key = await gateway_key(client, tenant_a, upstream, auth_headers)
    for value in ([1, 2, 3], [[1, 2], [3]], ["a", "b"], "a"):
        response = await client.post(
            "/v1/embeddings", json={"model": "embed-test", "input": value}, headers=bearer(key)
        )
        assert response.status_code == 200, response.text
        assert upstream.bodies[-1][1]["input"] == value


async def test_unknown_fields_pass_through_untouched(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key = await gateway_key(client, tenant_a, upstream, auth_headers)
    extra: dict[str, Any] = {
        "user": "u-1",
        "seed": 7,
        "logit_bias": {"50256": -100},
        "frobnicate": {"deep": [1, {"x": None}]},
    }
    response = await client.post("/v1/chat/completions", json=chat_body(**extra), headers=bearer(key))
    assert response.status_code == 200, response.text
    sent = upstream.bodies[-1][1]
    assert {name: sent[name] for name in extra} == extra


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/messages"])
async def test_nesting_beyond_the_limit_and_nul_characters_are_400s_in_the_callers_shape(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders, path: str
) -> None:
    key = await gateway_key(client, tenant_a, upstream, auth_headers)
    valid = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "input": "hi", "max_tokens": 5}
    prefix = msgspec.json.encode(valid)[:-1]
    deep = prefix + b',"extra":' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}"
    if path == "/v1/embeddings":
        nul, named = msgspec.json.encode({**valid, "input": f"h{NUL}i"}), "input"
    else:
        nul = msgspec.json.encode({**valid, "messages": [{"role": "user", "content": f"h{NUL}i"}]})
        named = "messages[0].content"
    for raw, mention in ((deep, "nested more than 64 levels"), (nul, named)):
        response = await client.post(path, content=raw, headers={**bearer(key), **JSON})
        assert response.status_code == 400, response.text
        error = anthropic_error(response) if path == "/v1/messages" else openai_error(response)
        assert mention in error["message"]
    assert sum(upstream.calls.values()) == 0


async def test_a_megabyte_model_name_is_not_echoed_back(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key = await gateway_key(client, tenant_a, upstream, auth_headers)
    response = await client.post("/v1/chat/completions", json=chat_body(model="m" * 1_000_000), headers=bearer(key))
    assert response.status_code == 404, response.text[:300]
    assert len(response.content) < 500
    assert "1000000 characters" in openai_error(response)["message"]


# --- Anthropic bodies ------------------------------------------------------------------------------


def claude_body(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-test", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], **fields}


MESSAGES_MISTAKES: list[tuple[dict[str, Any], str]] = [
    ({"messages": "hi"}, "messages"),
    ({"messages": [1, 2]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "nope"}, 3, None]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [3]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "system", "content": "hi"}]}, "messages[0].role"),
    ({"tools": "x"}, "tools"),
    ({"tools": [1]}, "tools[0]"),
    ({"system": 5}, "system"),
    ({"system": [1, {"x": 1}]}, "system[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}, "messages[0].content[0].tool_use_id"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image", "source": 7}]}]},
        "messages[0].content[0].source",
    ),
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
]


async def test_a_malformed_messages_request_is_an_anthropic_400_naming_the_field(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders, subtests: pytest.Subtests
) -> None:
    key = await gateway_key(client, tenant_a, upstream, auth_headers)
    for change, field in MESSAGES_MISTAKES:
        with subtests.test(msg=field):
            response = await client.post("/v1/messages", json=claude_body(**change), headers={"x-api-key": key})
            assert response.status_code == 400, response.text
            error = anthropic_error(response)
            assert error["type"] == "invalid_request_error"
            assert f"'{field}'" in error["message"], error
    assert sum(upstream.calls.values()) == 0


async def test_a_missing_max_tokens_is_named(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key = await gateway_key(client, tenant_a, upstream, auth_headers)
    body = claude_body()
    del body["max_tokens"]
    response = await client.post("/v1/messages", json=body, headers={"x-api-key": key})
    assert response.status_code == 400
    assert "'max_tokens'" in anthropic_error(response)["message"]


async def test_an_anthropic_channel_gets_the_clients_own_request_with_cache_control(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key = await gateway_key(client, tenant_a, upstream, auth_headers)
    system: list[TextBlockParam] = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    content: list[TextBlockParam] = [
        {"type": "text", "text": "a long document", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "the question"},
    ]
    sdk = anthropic.AsyncAnthropic(
        base_url=str(client.base_url), api_key=key, http_client=sdk_http(client), max_retries=0
    )
    answer = await sdk.messages.create(
        model="claude-test",
        max_tokens=40,
        system=system,
        messages=[{"role": "user", "content": content}],
        metadata={"user_id": "u-7"},
    )
    assert answer.content[0].type == "text"
    name, sent = upstream.bodies[-1]
    assert name == "claude"
    assert sent["system"] == system
    assert sent["messages"] == [{"role": "user", "content": content}]
    assert sent["metadata"] == {"user_id": "u-7"}
    assert sent["max_tokens"] == 40


async def test_anthropic_streams_report_input_tokens_at_the_start(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await gateway_key(client, tenant_a, upstream, auth_headers)
    sdk = anthropic.AsyncAnthropic(
        base_url=str(client.base_url), api_key=key, http_client=sdk_http(client), max_retries=0
    )
    question = [{"role": "user", "content": "one two three four five six seven eight nine ten eleven twelve"}]
    starts = []
    for model in ("claude-test", "gpt-test"):  # the first passed through, the second translated
        async with sdk.messages.stream(model=model, max_tokens=20, messages=question) as stream:  # type: ignore[arg-type]
            async for event in stream:
                if event.type == "message_start":
                    starts.append(event.message.usage.input_tokens)
            final = await stream.get_final_message()
        assert final.usage.input_tokens > 0
    rows = await usage_rows(session_maker, tenant_a, 2)
    assert starts[0] == rows[0].prompt_tokens == 12  # the provider's own count, as the usage log has it
    assert starts[1] > 0  # an estimate until the OpenAI-format provider reports its count at the end


# --- paths and the SDKs' own calls ---------------------------------------------------------------


async def test_unknown_paths_answer_in_the_callers_protocol(client: Client) -> None:
    for path in ("/v1/nothing", "/v1", "/v1/chat/completions/extra"):
        response = await client.post(path, json={})
        assert response.status_code == 404, path
        assert openai_error(response)["code"] == "unknown_url"
    claude = await client.post("/v1/messages/batches-of-another-kind", json={})
    assert claude.status_code == 404
    assert anthropic_error(claude)["type"] == "not_found_error"


async def test_models_retrieve_and_count_tokens_through_the_sdks(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key = await gateway_key(client, tenant_a, upstream, auth_headers)
    gpt = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=key, http_client=sdk_http(client), max_retries=0)
    model = await gpt.models.retrieve("gpt-test")
    assert (model.id, model.object) == ("gpt-test", "model")
    with pytest.raises(openai.NotFoundError):
        await gpt.models.retrieve("no-such-model")

    claude = anthropic.AsyncAnthropic(
        base_url=str(client.base_url), api_key=key, http_client=sdk_http(client), max_retries=0
    )
    messages = [{"role": "user", "content": "four words right here"}]
    counted = await claude.messages.with_raw_response.count_tokens(model="claude-test", messages=messages)  # type: ignore[arg-type]
    assert counted.headers["x-lyss-token-count"] == "provider"
    assert (await counted.parse()).input_tokens == 4  # the mock provider counts words
    assert upstream.bodies[-1][1]["model"] == "claude-test"
    estimated = await claude.messages.with_raw_response.count_tokens(model="gpt-test", messages=messages)  # type: ignore[arg-type]
    assert estimated.headers["x-lyss-token-count"] == "estimate"
    assert (await estimated.parse()).input_tokens > 0
    refused = await client.post(
        "/v1/messages/count_tokens", json={"model": "claude-test", "messages": "x"}, headers={"x-api-key": key}
    )
    assert refused.status_code == 400
    assert "'messages'" in anthropic_error(refused)["message"]


async def test_a_refusal_never_sends_a_long_value_back(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key = await gateway_key(client, tenant_a, upstream, auth_headers)
    block = {"type": "x" * 100_000}
    response = await client.post(
        "/v1/messages", json=claude_body(messages=[{"role": "user", "content": [block]}]), headers={"x-api-key": key}
    )
    assert response.status_code == 400
    assert len(response.content) < 1000
    assert "'messages[0].content[0].type'" in anthropic_error(response)["message"]
    api = await client.post(
        "/api/tokens", json={"name": "k", "budget_period": "y" * 100_000}, headers=auth_headers(tenant_a.admin)
    )
    assert api.status_code == 400
    assert len(api.content) < 1000
