"""`POST /v1/responses` with the official `openai` SDK: the Responses API translated through chat for channels
whose provider does not serve it (an OpenAI-compatible one, DeepSeek, Anthropic), whole and streamed, with
tools and images; billed, refused, failed over and cut exactly as chat; bad input refused by parameter;
conversations continued with `previous_response_id`, and the response cache for answers not stored."""

from __future__ import annotations

from typing import Any

import msgspec
import openai
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, issue_key, sdk_http, set_price, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

WEATHER: Any = {
    "type": "function",
    "name": "weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}
# (channel type, model): a chat-only OpenAI-format provider, and Anthropic through the chat translation.
TRANSLATED = {"deepseek": ("deepseek", "gpt-test"), "anthropic": ("anthropic", "claude-test")}


def sdk(client: Client, key: str) -> openai.AsyncOpenAI:
    http = sdk_http(client)
    return openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=key, http_client=http, max_retries=0)


async def channel_and_key(
    client: Client, tenant: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders, provider: str, **key: Any
) -> tuple[str, str]:
    kind, model = TRANSLATED[provider]
    admin = auth_headers(tenant.admin)
    await add_channel(client, admin, upstream, "answers", kind=kind, models=[model])
    upstream.behave("answers", call_tools=True)
    await set_price(client, admin, model, 1_000_000, 2_000_000)
    issued, _ = await issue_key(client, auth_headers(tenant.user), **key)
    return issued, model


@pytest.mark.parametrize("provider", list(TRANSLATED))
async def test_a_response_is_answered_through_chat_with_instructions_and_billed_as_responses(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    provider: str,
) -> None:
    key, model = await channel_and_key(client, tenant_a, upstream, auth_headers, provider)
    response = await sdk(client, key).responses.create(
        model=model, input="hello there", instructions="be brief", max_output_tokens=50, metadata={"run": "7"}
    )
    assert response.output_text == "w0 w1 w2 w3 w4"
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert (response.status, response.model, response.instructions) == ("completed", model, "be brief")
    assert (response.max_output_tokens, response.metadata) == (50, {"run": "7"})
    assert response.usage is not None
    assert response.usage.output_tokens == 5
    assert response.usage.total_tokens == response.usage.input_tokens + 5
    sent = upstream.bodies[-1][1]
    if provider == "anthropic":
        assert (sent["system"], sent["max_tokens"]) == ("be brief", 50)
        assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]
    else:
        assert sent["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ]
        assert sent["max_tokens"] == 50
    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert (row.endpoint, row.model, row.status_code, row.stream) == ("responses", model, 200, False)
    assert (row.prompt_tokens, row.completion_tokens) == (response.usage.input_tokens, 5)
    # Credits: a prompt token at 1, a completion token at 2.
    assert row.cost == row.prompt_tokens + 2 * 5


@pytest.mark.parametrize("provider", list(TRANSLATED))
async def test_a_function_call_and_its_output_make_a_round_trip(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders, provider: str
) -> None:
    key, model = await channel_and_key(client, tenant_a, upstream, auth_headers, provider)
    gpt = sdk(client, key)
    first = await gpt.responses.create(model=model, input="weather in Paris?", tools=[WEATHER], tool_choice="auto")
    [call] = [item for item in first.output if item.type == "function_call"]
    assert (call.name, msgspec.json.decode(call.arguments)) == ("weather", {"city": "Paris"})
    assert first.tools[0].type == "function"
    sent = upstream.bodies[-1][1]
    if provider == "anthropic":
        assert sent["tools"][0]["input_schema"] == WEATHER["parameters"]
    else:
        assert sent["tools"][0]["function"]["name"] == "weather"
        assert sent["tool_choice"] == "auto"

    second = await gpt.responses.create(
        model=model,
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": "weather", "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
        ],
        tools=[WEATHER],
    )
    assert second.status == "completed"
    sent = upstream.bodies[-1][1]
    if provider == "anthropic":
        assert sent["messages"][1]["content"][-1]["type"] == "tool_use"
        assert sent["messages"][2]["content"] == [
            {"type": "tool_result", "tool_use_id": call.call_id, "content": "sunny, 21 C"}
        ]
    else:
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21 C"}


async def test_an_image_reaches_the_provider_and_an_output_cut_by_its_limit_is_incomplete(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key, model = await channel_and_key(client, tenant_a, upstream, auth_headers, "deepseek")
    image = "data:image/png;base64,iVBORw0KGgo="
    response = await sdk(client, key).responses.create(
        model=model,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is this?"},
                    {"type": "input_image", "image_url": image, "detail": "low"},
                ],
            }
        ],
        max_output_tokens=3,
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "w0 w1 w2"
    assert upstream.bodies[-1][1]["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
    ]


@pytest.mark.parametrize("provider", list(TRANSLATED))
async def test_a_streamed_response_sends_the_events_in_order_and_the_usage_at_the_end(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    provider: str,
) -> None:
    key, model = await channel_and_key(client, tenant_a, upstream, auth_headers, provider)
    events = [event async for event in await sdk(client, key).responses.create(model=model, input="hi", stream=True)]
    kinds = [event.type for event in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 5,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == "w0 w1 w2 w3 w4 "
    first = events[0]
    assert first.type == "response.created"
    assert done.response.id == first.response.id
    assert done.response.usage is not None
    assert done.response.usage.output_tokens == 5
    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert (row.endpoint, row.stream, row.completion_tokens) == ("responses", True, 5)
    assert row.prompt_tokens == done.response.usage.input_tokens
    assert row.cost == row.prompt_tokens + 2 * 5

    streamed = await sdk(client, key).responses.create(model=model, input="hi", tools=[WEATHER], stream=True)
    calls = [event async for event in streamed]
    deltas = "".join(event.delta for event in calls if event.type == "response.function_call_arguments.delta")
    [arguments] = [event for event in calls if event.type == "response.function_call_arguments.done"]
    assert msgspec.json.decode(deltas) == msgspec.json.decode(arguments.arguments) == {"city": "Paris"}
    final = calls[-1]
    assert final.type == "response.completed"
    assert [item.type for item in final.response.output] == ["message", "function_call"]


async def test_a_stream_cut_by_the_provider_ends_with_an_error_and_is_billed_for_what_was_delivered(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key, model = await channel_and_key(client, tenant_a, upstream, auth_headers, "deepseek")
    upstream.behave("answers", cut_after_chunks=2)
    async with client.stream(
        "POST", "/v1/responses", json={"model": model, "input": "hi", "stream": True}, headers=bearer(key)
    ) as answer:
        body = b"".join([piece async for piece in answer.aiter_bytes()])
    kinds = [line[7:] for line in body.decode().splitlines() if line.startswith("event: ")]
    assert kinds[-1] == "error"
    assert kinds.count("response.output_text.delta") == 2
    assert "response.completed" not in kinds
    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert (row.endpoint, row.outcome, row.completion_tokens) == ("responses", "upstream_cut", 2)
    assert row.cost == row.prompt_tokens + 2 * 2


async def test_a_refusal_for_quota_is_recorded_and_a_failing_channel_fails_over(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "broken", kind="deepseek", models=["gpt-test"], priority=10)
    await add_channel(client, admin, upstream, "spare", kind="deepseek", models=["gpt-test"], priority=0)
    upstream.behave("broken", status=500)
    await set_price(client, admin, "gpt-test", 1_000_000, 2_000_000)
    key, _ = await issue_key(client, auth_headers(tenant_a.user), quota=1_000)
    gpt = sdk(client, key)
    answer = await gpt.responses.with_raw_response.create(model="gpt-test", input="hello", max_output_tokens=20)
    assert answer.headers["x-lyss-channel"] == "spare"
    assert answer.parse().output_text == "w0 w1 w2 w3 w4"
    assert upstream.calls["broken"] == 1
    with pytest.raises(openai.RateLimitError) as refused:
        await gpt.responses.create(model="gpt-test", input="hello", max_output_tokens=5_000)
    assert refused.value.code == "insufficient_quota"
    served, refusal = await usage_rows(session_maker, tenant_a, 2)
    assert (served.endpoint, served.outcome) == ("responses", "ok")
    assert [attempt["channel"] for attempt in served.details["attempts"]] == ["broken", "spare"]
    assert (refusal.endpoint, refusal.outcome, refusal.status_code, refusal.cost) == ("responses", "refused", 429, 0)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "gpt-test"}, "input"),
        ({"model": "gpt-test", "input": []}, "input"),
        ({"model": "gpt-test", "input": 7}, "input"),
        ({"model": "gpt-test", "input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
        ({"model": "gpt-test", "input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        (
            {"model": "gpt-test", "input": ["hi", "there", {"role": "user", "content": [{"type": "input_file"}]}]},
            "input[0]",
        ),
        (
            {
                "model": "gpt-test",
                "input": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": "b"},
                    {"role": "user", "content": [{"type": "input_audio"}]},
                ],
            },
            "input[2].content[0].type",
        ),
        (
            {"model": "gpt-test", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f1"}]}]},
            "input[0].content[0].file_id",
        ),
        ({"model": "gpt-test", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"model": "gpt-test", "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": "gpt-test", "input": "hi", "tools": [WEATHER, {"type": "file_search"}]}, "tools[1].type"),
        ({"model": "gpt-test", "input": "hi", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "gpt-test", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "gpt-test", "input": "hi", "max_output_tokens": "many"}, "max_output_tokens"),
        ({"model": "gpt-test", "input": "hi", "temperature": "hot"}, "temperature"),
        ({"model": "gpt-test", "input": "hi", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"model": "gpt-test", "input": "hi", "text": {"format": {"type": "json_schema"}}}, "text.format.name"),
        ({"model": "gpt-test", "input": "hi", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ],
)
async def test_bad_input_is_a_400_naming_the_parameter_and_reaches_no_provider(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    body: dict[str, Any],
    param: str,
) -> None:
    key, _ = await channel_and_key(client, tenant_a, upstream, auth_headers, "deepseek")
    response = await client.post("/v1/responses", json=body, headers=bearer(key))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert param in error["message"]
    assert upstream.calls["answers"] == 0


async def test_a_json_schema_format_and_reasoning_effort_are_sent_as_chat_parameters(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key, model = await channel_and_key(client, tenant_a, upstream, auth_headers, "deepseek")
    schema: dict[str, Any] = {"type": "object", "properties": {"city": {"type": "string"}}}
    turns: Any = [{"role": "developer", "content": "answer in JSON"}, {"role": "user", "content": "a city"}]
    response = await sdk(client, key).responses.create(
        model=model,
        input=turns,
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
        reasoning={"effort": "low"},
        temperature=0.2,
        store=False,
    )
    sent = upstream.bodies[-1][1]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": schema, "strict": True},
    }
    assert (sent["reasoning_effort"], sent["temperature"]) == ("low", 0.2)
    assert sent["messages"][0] == {"role": "system", "content": "answer in JSON"}
    assert (response.to_dict()["store"], response.temperature) == (False, 0.2)
    assert response.text is not None
    assert response.text.format is not None
    assert response.text.format.type == "json_schema"


# Credits per million tokens for the native channel's model: a prompt token 1, read from the cache 0.1.
PROMPT, CACHED, COMPLETION = 1_000_000, 100_000, 2_000_000
# What the mock reports in the Responses shape: 200 plain + 800 cached at 0.1 = 280, 7 completion at 2 = 14.
CACHED_USAGE = {
    "input_tokens": 1000,
    "input_tokens_details": {"cached_tokens": 800},
    "output_tokens": 7,
    "output_tokens_details": {"reasoning_tokens": 3},
    "total_tokens": 1007,
}


async def native_channel_and_key(
    client: Client, tenant: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> str:
    admin = auth_headers(tenant.admin)
    await add_channel(
        client, admin, upstream, "native", kind="openai", models=["gpt-4o"], model_mapping={"gpt-4o": "gpt-4o-up"}
    )
    body = {"prompt_price": PROMPT, "completion_price": COMPLETION, "cached_prompt_price": CACHED}
    response = await client.put("/api/model-prices/gpt-4o", json=body, headers=admin)
    assert response.status_code == 200, response.text
    key, _ = await issue_key(client, auth_headers(tenant.user))
    return key


async def test_an_openai_channel_is_sent_the_clients_own_responses_request_and_its_answer_comes_back(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await native_channel_and_key(client, tenant_a, upstream, auth_headers)
    upstream.behave("native", reported_usage=CACHED_USAGE)
    response = await sdk(client, key).responses.create(
        model="gpt-4o", input="hello there", instructions="be brief", max_output_tokens=50, tools=[WEATHER]
    )
    assert (upstream.responses_calls["native"], upstream.calls["native"]) == (1, 1)  # never chat
    sent = upstream.bodies[-1][1]
    assert (sent["model"], sent["max_output_tokens"], sent["store"]) == ("gpt-4o-up", 50, False)
    assert (sent["input"], sent["instructions"], sent["tools"]) == ("hello there", "be brief", [WEATHER])
    assert response.id.startswith("resp_")
    assert response.id != "resp_mock"
    assert response.to_dict()["store"] is True  # the client's, though the provider was told not to store
    assert response.output_text == "w0 w1 w2 w3 w4"
    [call] = [item for item in response.output if item.type == "function_call"]
    assert (call.name, call.call_id) == ("weather", "call_mock")
    assert response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 800

    conversation: Any = [
        {"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/cat.png"}]},
        {"type": "function_call", "call_id": "call_mock", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_mock", "output": "sunny"},
    ]
    second = await sdk(client, key).responses.create(model="gpt-4o", input=conversation)
    assert second.output_text == "w0 w1 w2 w3 w4"
    assert upstream.bodies[-1][1]["input"][2] == {
        "type": "function_call_output",
        "call_id": "call_mock",
        "output": "sunny",
    }
    assert upstream.responses_calls["native"] == 2

    rows = await usage_rows(session_maker, tenant_a, 2)
    assert [(row.endpoint, row.upstream_model) for row in rows] == [("responses", "gpt-4o-up")] * 2
    assert (rows[0].prompt_tokens, rows[0].cached_tokens, rows[0].completion_tokens) == (1000, 800, 7)
    assert rows[0].cost == 294


async def test_an_openai_channels_own_event_stream_comes_back_under_lyss_id_and_is_billed_from_its_usage(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await native_channel_and_key(client, tenant_a, upstream, auth_headers)
    upstream.behave("native", reported_usage=CACHED_USAGE)
    events = [event async for event in await sdk(client, key).responses.create(model="gpt-4o", input="hi", stream=True)]
    assert [event.type for event in events][:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    first, done = events[0], events[-1]
    assert first.type == "response.created"
    assert done.type == "response.completed"
    assert first.response.id == done.response.id
    assert done.response.id.startswith("resp_")
    assert done.response.to_dict()["store"] is True
    assert done.response.output_text == "w0 w1 w2 w3 w4"
    assert done.response.usage is not None
    assert done.response.usage.input_tokens_details.cached_tokens == 800
    assert upstream.bodies[-1][1]["stream"] is True
    assert upstream.responses_calls["native"] == 1
    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert (row.endpoint, row.stream, row.prompt_tokens, row.cached_tokens, row.completion_tokens) == (
        "responses",
        True,
        1000,
        800,
        7,
    )
    assert row.cost == 294


async def test_an_openai_channels_cut_stream_is_billed_for_what_was_delivered_and_a_failing_one_fails_over(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await native_channel_and_key(client, tenant_a, upstream, auth_headers)
    upstream.behave("native", cut_after_chunks=2)
    async with client.stream(
        "POST", "/v1/responses", json={"model": "gpt-4o", "input": "hi", "stream": True}, headers=bearer(key)
    ) as answer:
        body = b"".join([piece async for piece in answer.aiter_bytes()])
    kinds = [line[7:] for line in body.decode().splitlines() if line.startswith("event: ")]
    assert kinds.count("response.output_text.delta") == 2
    assert kinds[-1] == "error"
    [cut] = await usage_rows(session_maker, tenant_a, 1)
    assert (cut.outcome, cut.completion_tokens) == ("upstream_cut", 2)
    assert cut.cost == -(-cut.prompt_tokens * PROMPT // 1_000_000) + 2 * 2

    # The native channel fails: a chat-only channel of the same model answers, through the translation.
    upstream.behave("native", status=500)
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "chat-only", kind="deepseek", models=["gpt-4o"], priority=0)
    response = await sdk(client, key).responses.create(model="gpt-4o", input="hello")
    assert response.output_text == "w0 w1 w2 w3 w4"
    assert upstream.calls["chat-only"] == 1
    assert "messages" in upstream.bodies[-1][1]
    _, served = await usage_rows(session_maker, tenant_a, 2)
    assert [attempt["channel"] for attempt in served.details["attempts"]] == ["native", "chat-only"]


async def test_a_conversation_continues_by_previous_response_id_through_chat_and_is_kept_per_turn(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key, model = await channel_and_key(client, tenant_a, upstream, auth_headers, "deepseek")
    api = sdk(client, key)
    first = await api.responses.create(model=model, input="my name is Ada", instructions="be brief")
    second = await api.responses.create(model=model, input="what is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    # The provider got the whole conversation: the first turn, its answer, then this turn.
    assert upstream.bodies[-1][1]["messages"] == [
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "w0 w1 w2 w3 w4"},
        {"role": "user", "content": "what is my name?"},
    ]
    third = await api.responses.create(model=model, input="and again?", previous_response_id=second.id, stream=True)
    async for _ in third:
        pass
    assert [message["content"] for message in upstream.bodies[-1][1]["messages"]] == [
        "my name is Ada",
        "w0 w1 w2 w3 w4",
        "what is my name?",
        "w0 w1 w2 w3 w4",
        "and again?",
    ]
    kept = await api.responses.retrieve(second.id)
    assert (kept.id, kept.output_text, kept.previous_response_id) == (second.id, "w0 w1 w2 w3 w4", first.id)
    items = await api.responses.input_items.list(second.id)
    [item] = items.data
    assert item.type == "message"
    assert [part.to_dict()["text"] for part in item.content] == ["what is my name?"]

    # Another key of the same user cannot continue (or read) this key's conversation.
    other, _ = await issue_key(client, auth_headers(tenant_a.user), name="other")
    with pytest.raises(openai.NotFoundError) as refused:
        await sdk(client, other).responses.create(model=model, input="hi", previous_response_id=second.id)
    assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert refused.value.body["code"] == "previous_response_not_found"  # type: ignore[index]


async def test_a_response_not_to_be_stored_cannot_be_continued_or_read(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key, model = await channel_and_key(client, tenant_a, upstream, auth_headers, "deepseek")
    api = sdk(client, key)
    unkept = await api.responses.create(model=model, input="forget this", store=False)
    assert unkept.to_dict()["store"] is False
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(unkept.id)
    with pytest.raises(openai.NotFoundError):
        await api.responses.create(model=model, input="hi", previous_response_id=unkept.id)


async def test_an_openai_channel_is_sent_the_conversation_as_its_input_without_lyss_ids(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key = await native_channel_and_key(client, tenant_a, upstream, auth_headers)
    api = sdk(client, key)
    first = await api.responses.create(model="gpt-4o", input="my name is Ada", tools=[WEATHER])
    await api.responses.create(model="gpt-4o", input="and the weather?", previous_response_id=first.id)
    sent = upstream.bodies[-1][1]
    assert "previous_response_id" not in sent
    assert sent["store"] is False
    assert sent["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "my name is Ada"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "w0 w1 w2 w3 w4", "annotations": []}],
        },
        {"type": "function_call", "call_id": "call_mock", "name": "weather", "arguments": '{"city": "Paris"}'},
        {"role": "user", "content": "and the weather?"},
    ]


async def test_the_reservation_covers_the_earlier_turns_of_a_conversation(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    """The earlier turns are sent as prompt: a key that could pay for this turn alone, but not for the whole
    conversation at its worst case, is refused before the provider is called."""
    key, model = await channel_and_key(client, tenant_a, upstream, auth_headers, "deepseek", quota=1_000_000)
    api = sdk(client, key)
    long_turn = "word " * 20_000  # 100,000 bytes: its worst case alone is ~100,000 credits at 1 per token
    first = await api.responses.create(model=model, input=long_turn, max_output_tokens=10)
    [row] = await usage_rows(session_maker, tenant_a, 1)
    tokens = await client.get("/api/tokens", headers=auth_headers(tenant_a.user))
    [token] = [item for item in tokens.json() if item["name"] == "test key"]
    # Room for a short turn's worst case (a few hundred credits), not for the 100,000-byte one before it.
    room = 5_000
    changed = await client.patch(
        f"/api/tokens/{token['id']}", json={"quota": row.cost + room}, headers=auth_headers(tenant_a.user)
    )
    assert changed.status_code == 200, changed.text
    calls = upstream.calls["answers"]
    alone = await api.responses.create(model=model, input="short", max_output_tokens=10, store=False)
    assert alone.output_text
    with pytest.raises(openai.RateLimitError) as refused:
        await api.responses.create(model=model, input="short", max_output_tokens=10, previous_response_id=first.id)
    assert refused.value.status_code == 429
    assert upstream.calls["answers"] == calls + 1  # the short call alone went; the conversation never did


async def test_an_answer_not_stored_is_cached_and_a_stored_one_never_is(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key, model = await channel_and_key(client, tenant_a, upstream, auth_headers, "deepseek")
    cache = await client.put("/api/response-cache", json={"enabled": True}, headers=auth_headers(tenant_a.admin))
    assert cache.status_code == 200, cache.text
    api = sdk(client, key)
    body: Any = {"model": model, "input": "hello", "temperature": 0, "store": False}
    first = await api.responses.with_raw_response.create(**body)
    second = await api.responses.with_raw_response.create(**body)
    assert (first.headers["x-lyss-cache"], second.headers["x-lyss-cache"]) == ("miss", "hit")
    assert second.parse().output_text == first.parse().output_text == "w0 w1 w2 w3 w4"
    assert upstream.calls["answers"] == 1
    # Kept answers have ids of their own: never from the cache, each one a call.
    for _ in range(2):
        stored = await api.responses.with_raw_response.create(**{**body, "store": True})
        assert "x-lyss-cache" not in stored.headers
    assert upstream.calls["answers"] == 3
