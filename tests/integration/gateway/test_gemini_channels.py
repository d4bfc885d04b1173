"""Gemini channels behind both front doors: the official `openai` and `anthropic` SDKs call a Gemini channel on
the loopback mock provider (`generateContent`, `streamGenerateContent?alt=sse`), with tools and images; usage is
billed as Gemini counts it (cached and thinking tokens), and Gemini's errors fail over, or not, as they should."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.provider import Channel, ProviderType
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel, issue_key, sdk_http, set_price, usage_rows
from tests.support.mock_upstream import MockUpstream, word_vector
from tests.support.portal import sign_in
from tests.support.tenants import TenantRows

MODEL = "gemini-test"
# Credits per million tokens: a prompt token costs 1 credit, read from Gemini's cache 0.1, a completion token 2.
PROMPT, CACHED, COMPLETION = 1_000_000, 100_000, 2_000_000
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


async def gemini_channel(
    client: Client, admin: dict[str, str], upstream: MockUpstream, name: str, **fields: Any
) -> dict[str, Any]:
    return await add_channel(
        client, admin, upstream, name, kind="gemini", models=[MODEL], base_url=upstream.gemini_base_url(name), **fields
    )


def openai_sdk(client: Client, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{client.base_url}/v1", api_key=key, http_client=sdk_http(client), max_retries=0
    )


def anthropic_sdk(client: Client, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=str(client.base_url), api_key=key, http_client=sdk_http(client), max_retries=0
    )


def gemini_calls(upstream: MockUpstream, name: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """(body, headers) of every call the account `name` got, in order."""
    bodies = [body for account, body in upstream.bodies if account == name]
    headers = [seen for seen in upstream.headers_seen if seen["path_qs"].startswith(f"/{name}/")]
    return list(zip(bodies, headers, strict=True))


async def test_the_openai_sdk_chats_whole_and_streamed_through_a_gemini_channel(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await gemini_channel(client, admin, upstream, "gem")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    sdk = openai_sdk(client, key)
    messages: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]

    answer = await sdk.chat.completions.create(model=MODEL, messages=messages, max_tokens=50, temperature=0.5)
    assert answer.choices[0].message.content == "w0 w1 w2 w3 w4"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (4, 5)

    chunks = await sdk.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=50, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = "", None, None
    async for chunk in chunks:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert (text, finish) == ("w0 w1 w2 w3 w4 ", "stop")
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (4, 5)

    (whole, whole_headers), (_, streamed_headers) = gemini_calls(upstream, "gem")
    assert whole_headers["path_qs"] == f"/gem/v1beta/models/{MODEL}:generateContent"
    assert streamed_headers["path_qs"] == f"/gem/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    # The key goes in its header, never in the URL (which ends up in logs).
    assert whole_headers["x-goog-api-key"] == streamed_headers["x-goog-api-key"] == "key-of-gem"
    assert "key-of-gem" not in whole_headers["path_qs"] + streamed_headers["path_qs"]
    assert whole["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert whole["contents"] == [{"role": "user", "parts": [{"text": "hello there"}]}]
    assert whole["generationConfig"] == {"maxOutputTokens": 50, "temperature": 0.5}
    rows = await usage_rows(session_maker, tenant_a, 2)
    assert [(row.prompt_tokens, row.completion_tokens, row.stream, row.outcome) for row in rows] == [
        (4, 5, False, "ok"),
        (4, 5, True, "ok"),
    ]
    assert {row.upstream_model for row in rows} == {MODEL}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_function_tool_round_trip_through_a_gemini_channel(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders, stream: bool
) -> None:
    await gemini_channel(client, auth_headers(tenant_a.admin), upstream, "gem")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    sdk = openai_sdk(client, key)
    messages: Any = [{"role": "user", "content": "weather in Paris?"}]

    if not stream:
        answer = await sdk.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], tool_choice="auto")
        assert answer.choices[0].finish_reason == "tool_calls"
        [call] = answer.choices[0].message.tool_calls or []
        assert call.type == "function"
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    else:
        chunks = await sdk.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], stream=True)
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in chunks:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for delta in choice.delta.tool_calls or []:
                    entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                    entry["id"] += delta.id or ""
                    entry["name"] += (delta.function.name if delta.function else None) or ""
                    entry["arguments"] += (delta.function.arguments if delta.function else None) or ""
        assert finish == "tool_calls"
        [entry] = calls.values()
        call_id, name, arguments = entry["id"], entry["name"], entry["arguments"]
    assert (name, json.loads(arguments)) == ("weather", {"city": "Paris"})

    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"celsius": 21}'},
    ]
    answer = await sdk.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    assert answer.choices[0].message.content == "w0 w1 w2 w3 w4"
    assert answer.choices[0].finish_reason == "stop"

    first, second = (body for body, _ in gemini_calls(upstream, "gem"))
    [declaration] = first["tools"][0]["functionDeclarations"]
    # Gemini refuses `additionalProperties`: it is left out.
    assert declaration["parameters"] == {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    assert second["contents"][1:] == [
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}],
        },
        {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"celsius": 21}}}]},
    ]


async def test_an_image_goes_inline_as_a_data_url_and_a_link_is_refused_before_any_call(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    await gemini_channel(client, auth_headers(tenant_a.admin), upstream, "gem")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    sdk = openai_sdk(client, key)

    def asking_about(url: str) -> Any:
        return [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ]

    answer = await sdk.chat.completions.create(model=MODEL, messages=asking_about(PIXEL), max_tokens=20)
    assert answer.choices[0].message.content == "w0 w1 w2 w3 w4"
    [(body, _)] = gemini_calls(upstream, "gem")
    assert body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PIXEL.split(",", 1)[1]}}

    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.chat.completions.create(
            model=MODEL, messages=asking_about("http://127.0.0.1:1/secret.png"), max_tokens=20
        )
    assert "data: URLs" in refused.value.message
    assert upstream.calls["gem"] == 1


async def test_the_anthropic_sdk_talks_to_a_gemini_channel_whole_streamed_and_with_a_tool(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    await gemini_channel(client, auth_headers(tenant_a.admin), upstream, "gem")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    sdk = anthropic_sdk(client, key)
    messages: Any = [{"role": "user", "content": "hello there"}]

    message = await sdk.messages.create(model=MODEL, max_tokens=100, system="Be brief.", messages=messages)
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "w0 w1 w2 w3 w4"  # type: ignore[union-attr]
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == ("end_turn", 4, 5)

    async with sdk.messages.stream(model=MODEL, max_tokens=100, messages=messages) as events:
        streamed = await events.get_final_message()
    assert streamed.content[0].text == "w0 w1 w2 w3 w4 "  # type: ignore[union-attr]
    assert streamed.usage.output_tokens == 5

    tool: Any = {
        "name": "weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    called = await sdk.messages.create(model=MODEL, max_tokens=100, messages=messages, tools=[tool])
    assert called.stop_reason == "tool_use"
    [use] = [block for block in called.content if block.type == "tool_use"]
    assert (use.name, use.input) == ("weather", {"city": "Paris"})

    bodies = [body for body, _ in gemini_calls(upstream, "gem")]
    assert bodies[0]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert bodies[0]["generationConfig"]["maxOutputTokens"] == 100
    assert bodies[2]["tools"][0]["functionDeclarations"][0]["name"] == "weather"


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_cached_and_thinking_tokens_are_billed_as_gemini_counts_them(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    stream: bool,
    dialect: str,
) -> None:
    admin = auth_headers(tenant_a.admin)
    await gemini_channel(client, admin, upstream, "gem")
    prices = {"prompt_price": PROMPT, "completion_price": COMPLETION, "cached_prompt_price": CACHED}
    assert (await client.put(f"/api/model-prices/{MODEL}", json=prices, headers=admin)).status_code == 200
    upstream.behave(
        "gem",
        reported_usage={
            "promptTokenCount": 1000,
            "cachedContentTokenCount": 800,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 2,
            "totalTokenCount": 1007,
        },
    )
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    messages: Any = [{"role": "user", "content": "hello there"}]
    if dialect == "openai":
        sdk = openai_sdk(client, key)
        if stream:
            chunks = await sdk.chat.completions.create(
                model=MODEL, messages=messages, max_tokens=100, stream=True, stream_options={"include_usage": True}
            )
            usage = None
            async for chunk in chunks:
                usage = chunk.usage or usage
        else:
            usage = (await sdk.chat.completions.create(model=MODEL, messages=messages, max_tokens=100)).usage
        assert usage is not None
        assert usage.prompt_tokens_details is not None
        assert (usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens) == (
            1000,
            7,
            800,
        )
    else:
        claude = anthropic_sdk(client, key)
        if stream:
            async with claude.messages.stream(model=MODEL, max_tokens=100, messages=messages) as events:
                claude_usage = (await events.get_final_message()).usage
        else:
            claude_usage = (await claude.messages.create(model=MODEL, max_tokens=100, messages=messages)).usage
        assert (claude_usage.input_tokens, claude_usage.cache_read_input_tokens) == (200, 800)
        assert claude_usage.output_tokens == 7

    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert (row.prompt_tokens, row.cached_tokens, row.cache_write_tokens, row.completion_tokens) == (1000, 800, 0, 7)
    # 200 plain prompt tokens at 1 + 800 cached at 0.1 = 280; 5 answer + 2 thinking tokens at 2 = 14.
    assert row.cost == 200 + 80 + 14


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_failing_gemini_channel_fails_over_to_the_next(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    status: int,
) -> None:
    admin = auth_headers(tenant_a.admin)
    failing = await gemini_channel(client, admin, upstream, "gem", priority=10)
    backup = await add_channel(client, admin, upstream, "backup", models=[MODEL], priority=1)
    upstream.behave("gem", status=status)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))

    raw = await openai_sdk(client, key).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}], max_tokens=20
    )
    assert raw.parse().choices[0].message.content == "w0 w1 w2 w3 w4"
    assert raw.headers["x-lyss-channel"] == "backup"
    assert (upstream.calls["gem"], upstream.calls["backup"]) == (1, 1)
    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert str(row.channel_id) == backup["id"]
    assert [attempt["status"] for attempt in row.details["attempts"]] == [status, 200]
    # A rate limit or an outage leaves the channel enabled.
    assert (await client.get(f"/api/channels/{failing['id']}", headers=admin)).json()["status"] == "enabled"


async def test_a_request_gemini_refuses_reaches_the_client_as_a_400_without_trying_another_channel(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await gemini_channel(client, admin, upstream, "gem", priority=10)
    await add_channel(client, admin, upstream, "backup", models=[MODEL], priority=1)
    upstream.behave("gem", status=400)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))

    with pytest.raises(openai.BadRequestError) as refused:
        await openai_sdk(client, key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello there"}], max_tokens=20
        )
    assert "scripted failure of gem" in refused.value.message
    assert (upstream.calls["gem"], upstream.calls["backup"]) == (1, 0)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_an_invalid_gemini_key_disables_the_channel_and_the_call_moves_on(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders, stream: bool
) -> None:
    admin = auth_headers(tenant_a.admin)
    broken = await gemini_channel(client, admin, upstream, "gem", priority=10, keys=["invalid-key"])
    await add_channel(client, admin, upstream, "backup", models=[MODEL], priority=1)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))

    sdk = openai_sdk(client, key)
    messages: Any = [{"role": "user", "content": "hello there"}]
    if stream:
        chunks = await sdk.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, stream=True)
        text = "".join([choice.delta.content or "" async for chunk in chunks for choice in chunk.choices])
    else:
        text = (await sdk.chat.completions.create(model=MODEL, messages=messages, max_tokens=20)).choices[
            0
        ].message.content or ""
    assert text.strip() == "w0 w1 w2 w3 w4"
    channel = (await client.get(f"/api/channels/{broken['id']}", headers=admin)).json()
    assert channel["status"] == "auto_disabled"
    assert "API_KEY_INVALID" in channel["status_reason"]
    assert "invalid-key" not in channel["status_reason"]


async def test_a_gemini_stream_cut_short_is_billed_for_what_was_delivered(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await gemini_channel(client, auth_headers(tenant_a.admin), upstream, "gem")
    upstream.behave("gem", words=20, cut_after_chunks=3)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))

    chunks = await openai_sdk(client, key).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}], max_tokens=50, stream=True
    )
    received: list[str] = []

    async def read() -> None:
        async for chunk in chunks:
            received.extend(choice.delta.content or "" for choice in chunk.choices)

    with pytest.raises(openai.APIError):
        await read()
    assert "".join(received) == "w0 w1 w2 "
    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert (row.outcome, row.completion_tokens) == ("upstream_cut", 3)


async def test_the_gemini_type_is_listed_and_its_channel_test_makes_a_real_call(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    types = {kind["name"]: kind for kind in (await client.get("/api/provider-types", headers=admin)).json()}
    assert types["gemini"]["api_format"] == "gemini"
    assert types["gemini"]["base_url"] == "https://generativelanguage.googleapis.com/v1beta"

    channel = await gemini_channel(client, admin, upstream, "gem")
    tested = await client.post(f"/api/channels/{channel['id']}/test", headers=admin)
    assert tested.status_code in (200, 201), tested.text
    assert tested.json()["ok"] is True
    assert upstream.calls["gem"] == 1

    embedder = await gemini_channel(client, admin, upstream, "emb", test_kind="embeddings")
    tested = await client.post(f"/api/channels/{embedder['id']}/test", headers=admin)
    assert tested.json()["ok"] is True
    assert upstream.headers_seen[-1]["path_qs"] == f"/emb/v1beta/models/{MODEL}:batchEmbedContents"


async def test_the_openai_sdk_embeds_through_a_gemini_channel(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await gemini_channel(client, admin, upstream, "gem")
    upstream.behave("gem", dimensions=16)
    await set_price(client, admin, MODEL, 1_000_000, 0)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    sdk = openai_sdk(client, key)
    texts = ["the cat sat", "a dog ran far away"]

    # The SDK asks for base64 and decodes it; asked for floats, they come as they are.
    packed = await sdk.embeddings.create(model=MODEL, input=texts, dimensions=16)
    plain = await sdk.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    for answer in (packed, plain):
        assert [item.index for item in answer.data] == [0, 1]
        for item, text in zip(answer.data, texts, strict=True):
            assert item.embedding == pytest.approx(word_vector(text, 16), abs=1e-6)
    body, _ = gemini_calls(upstream, "gem")[0]
    assert body["requests"][1] == {
        "model": f"models/{MODEL}",
        "content": {"parts": [{"text": "a dog ran far away"}]},
        "outputDimensionality": 16,
    }
    # Gemini does not count an embedding call's tokens: Lyss's estimate (4 characters a token) is billed.
    rows = await usage_rows(session_maker, tenant_a, 2)
    assert [(row.endpoint, row.prompt_tokens, row.cost) for row in rows] == [("embeddings", 3 + 5, 8)] * 2

    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.embeddings.create(model=MODEL, input=[[1, 2, 3]])
    assert "not token ids" in refused.value.message


async def test_the_portal_form_adds_a_gemini_channel_at_googles_address(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    form = await client.get("/portal/channels/new")
    google = "https://generativelanguage.googleapis.com/v1beta"
    assert f'<option value="gemini" data-base-url="{google}">Google Gemini</option>' in form.text
    fields = {"csrf_token": token, "name": "gem", "type": "gemini", "base_url": "", "keys": "AIza-x", "models": MODEL}
    assert (await client.post("/portal/channels/new", data=fields)).status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        channel, kind = (await session.execute(select(Channel, ProviderType).join(ProviderType))).one()
    assert (channel.name, channel.base_url, channel.models) == ("gem", None, [MODEL])
    assert (kind.name, kind.api_format, kind.base_url) == ("gemini", "gemini", google)
