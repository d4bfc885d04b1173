"""A running Lyss (granian, real sockets) driven by the official openai and anthropic SDKs, unchanged.

Also what only a real server shows: 200 concurrent calls against a small quota, and a client that hangs up
mid-stream.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import anthropic
import httpx
import httpx2
import msgspec
import openai
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.provider import ApiToken, UsageLog
from db.session import tenant_session
from tests.support.commands import RunningLyss
from tests.support.gateway import chat_body, set_price, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = pytest.mark.slow


async def setup_calls(
    lyss: RunningLyss, tenant: TenantRows, upstream: MockUpstream, *channels: dict[str, Any], **key_fields: Any
) -> str:
    """Channels (as the tenant admin) and an API key (as the user), through the running server's API."""
    async with httpx.AsyncClient(base_url=lyss.url) as client:
        for channel in channels:
            body = {"type": "openai-compatible", "keys": [f"key-of-{channel['name']}"],
                    "base_url": upstream.base_url(channel["name"]), **channel}  # fmt: skip
            response = await client.post("/api/channels", json=body, headers=lyss.headers_for(tenant.admin))
            assert response.status_code == 201, response.text
        response = await client.post(
            "/api/tokens", json={"name": "sdk", **key_fields}, headers=lyss.headers_for(tenant.user)
        )
        assert response.status_code == 201, response.text
        return str(response.json()["key"])


# --- the official SDKs, unchanged ----------------------------------------------------------------


async def test_openai_sdk_chat_stream_embeddings_models(
    lyss: RunningLyss, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    key = await setup_calls(lyss, tenant_a, upstream, {"name": "oa", "models": ["gpt-test", "embed-test"]})
    client = openai.AsyncOpenAI(base_url=f"{lyss.url}/v1", api_key=key, max_retries=0)
    completion = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hello"}], max_tokens=20
    )
    assert completion.choices[0].message.content == "w0 w1 w2 w3 w4"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5

    stream = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(pieces) == "w0 w1 w2 w3 w4 "

    embedding = await client.embeddings.create(model="embed-test", input=["one", "two"])
    assert [item.embedding for item in embedding.data] == [[0.1, 0.2, 0.3]] * 2
    models = await client.models.list()
    assert sorted(model.id for model in models.data) == ["embed-test", "gpt-test"]

    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    bad = openai.AsyncOpenAI(base_url=f"{lyss.url}/v1", api_key="sk-lyss-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.models.list()
    await client.close()
    await bad.close()


async def test_anthropic_sdk_through_an_anthropic_channel_with_tools(
    lyss: RunningLyss, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    key = await setup_calls(
        lyss, tenant_a, upstream, {"name": "claude", "type": "anthropic", "models": ["claude-test"]}
    )
    client = anthropic.AsyncAnthropic(base_url=lyss.url, api_key=key, max_retries=0)
    tools: list[anthropic.types.ToolParam] = [{"name": "weather", "description": "Weather of a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]  # fmt: skip
    message = await client.messages.create(
        model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "weather in Paris?"}], tools=tools
    )
    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    tool_use = message.content[1]
    assert tool_use.type == "tool_use"
    assert (tool_use.name, tool_use.input) == ("weather", {"city": "Paris"})
    assert message.usage.output_tokens == 5
    sent = upstream.bodies[-1][1]
    assert sent["tools"][0]["input_schema"]["properties"] == {"city": {"type": "string"}}  # round trip intact

    async with client.messages.stream(
        model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "w0 w1 w2 w3 w4 "
    assert final.usage.output_tokens == 5
    await client.close()


async def test_anthropic_sdk_through_an_openai_channel_and_openai_sdk_through_anthropic(
    lyss: RunningLyss, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    key = await setup_calls(
        lyss, tenant_a, upstream,
        {"name": "oa", "models": ["gpt-test"]},
        {"name": "claude", "type": "anthropic", "models": ["claude-test"]},
    )  # fmt: skip
    claude_client = anthropic.AsyncAnthropic(base_url=lyss.url, api_key=key, max_retries=0)
    message = await claude_client.messages.create(
        model="gpt-test", max_tokens=50, system="be brief", messages=[{"role": "user", "content": "hello"}]
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "w0 w1 w2 w3 w4"
    assert upstream.bodies[-1][1]["messages"][0] == {"role": "system", "content": "be brief"}

    openai_client = openai.AsyncOpenAI(base_url=f"{lyss.url}/v1", api_key=key, max_retries=0)
    completion = await openai_client.chat.completions.create(
        model="claude-test",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather?"}],
        tools=[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert (call.function.name, msgspec.json.decode(call.function.arguments)) == ("weather", {"city": "Paris"})
    assert upstream.bodies[-1][1]["system"] == "be brief"
    stream = await openai_client.chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "w0 w1 w2 w3 w4 "
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    await claude_client.close()
    await openai_client.close()


# --- what needs a real server ---------------------------------------------------------------------


async def test_no_overspend_under_200_concurrent_calls(
    lyss: RunningLyss,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    async with httpx.AsyncClient(base_url=lyss.url) as admin_client:
        await set_price(admin_client, lyss.headers_for(tenant_a.admin), "gpt-test", 0, 1_000_000)
    # Each call asks for (and the mock answers) 10 tokens at 1 credit each: the quota covers 50 calls.
    upstream.behave("oa", words=10, chunk_delay_seconds=0.0)
    key = await setup_calls(lyss, tenant_a, upstream, {"name": "oa", "models": ["gpt-test"]}, quota=500)
    limits = httpx2.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx2.AsyncClient(base_url=f"{lyss.url}/v1", limits=limits, timeout=60) as http:
        client = openai.AsyncOpenAI(base_url=f"{lyss.url}/v1", api_key=key, max_retries=0, http_client=http)

        async def call() -> int:
            try:
                await client.chat.completions.create(
                    model="gpt-test", messages=[{"role": "user", "content": "hello"}], max_tokens=10
                )
            except openai.RateLimitError:
                return 429
            return 200

        statuses = await asyncio.gather(*(call() for _ in range(200)))
    successes = statuses.count(200)
    assert statuses.count(429) + successes == 200
    assert successes == 50  # reservations are exact here (prompt tokens are free), so exactly 50 fit
    rows = await usage_rows(session_maker, tenant_a, 200)
    await asyncio.sleep(0.6)  # one more flusher pass commits the totals with the last rows
    async with tenant_session(session_maker, tenant_a.id) as session:
        token = (await session.scalars(select(ApiToken))).one()
        logged = await session.scalar(select(func.coalesce(func.sum(UsageLog.cost), 0)))
    # Every call is on the record: the refused ones too, at no cost, with why.
    assert len([row for row in rows if row.outcome == "ok"]) == successes
    refused = [row for row in rows if row.outcome == "refused"]
    assert len(refused) == 200 - successes
    assert {(row.status_code, row.cost, row.details["reason"], row.details["scope"]) for row in refused} == {
        (429, 0, "budget", "key")
    }
    assert token.used_quota == logged == 10 * successes
    assert token.used_quota <= token.quota


async def test_no_overspend_under_200_concurrent_calls_with_the_response_cache_on(
    lyss: RunningLyss,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = lyss.headers_for(tenant_a.admin)
    async with httpx.AsyncClient(base_url=lyss.url) as admin_client:
        await set_price(admin_client, admin, "gpt-test", 0, 1_000_000)
        cache = {"enabled": True, "hit_cost_fraction": 0.5}
        assert (await admin_client.put("/api/response-cache", json=cache, headers=admin)).status_code == 200
    upstream.behave("oa", words=10, chunk_delay_seconds=0.0)
    key = await setup_calls(lyss, tenant_a, upstream, {"name": "oa", "models": ["gpt-test"]}, quota=500)
    limits = httpx2.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx2.AsyncClient(base_url=f"{lyss.url}/v1", limits=limits, timeout=60) as http:
        client = openai.AsyncOpenAI(base_url=f"{lyss.url}/v1", api_key=key, max_retries=0, http_client=http)

        async def call(text: str) -> int:
            try:
                await client.chat.completions.create(
                    model="gpt-test", messages=[{"role": "user", "content": text}], max_tokens=10, temperature=0
                )
            except openai.RateLimitError:
                return 429
            return 200

        # One answer kept first; then identical calls (hits at 5 credits) race distinct ones (misses at 10).
        statuses = [await call("the same")]
        statuses += await asyncio.gather(*(call("the same" if i % 2 else f"question {i}") for i in range(199)))
    assert statuses.count(429) + statuses.count(200) == 200
    assert statuses.count(429) > 0
    rows = await usage_rows(session_maker, tenant_a, 200)
    await asyncio.sleep(0.6)  # one more flusher pass commits the totals with the last rows
    async with tenant_session(session_maker, tenant_a.id) as session:
        token = (await session.scalars(select(ApiToken))).one()
        logged = await session.scalar(select(func.coalesce(func.sum(UsageLog.cost), 0)))
    hits = [row for row in rows if row.outcome == "cache_hit"]
    assert hits
    assert {row.cost for row in hits} == {5}
    assert len(hits) + len([row for row in rows if row.outcome == "ok"]) == statuses.count(200)
    assert token.used_quota == logged
    assert token.used_quota <= token.quota


async def test_a_client_that_hangs_up_mid_stream_pays_for_what_it_received(
    lyss: RunningLyss,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    async with httpx.AsyncClient(base_url=lyss.url) as admin_client:
        await set_price(admin_client, lyss.headers_for(tenant_a.admin), "gpt-test", 0, 1_000_000)
    upstream.behave("oa", words=40, chunk_delay_seconds=0.1)
    key = await setup_calls(lyss, tenant_a, upstream, {"name": "oa", "models": ["gpt-test"]})
    received = 0
    async with (
        httpx.AsyncClient(base_url=lyss.url, timeout=30) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json=chat_body(stream=True, max_tokens=40),
            headers={"Authorization": f"Bearer {key}"},
        ) as response,  # fmt: skip
    ):
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                received += 1
                if received == 3:
                    break  # hang up
    rows = await usage_rows(session_maker, tenant_a, 1)
    assert len(rows) == 1
    row = rows[0]
    assert row.outcome == "client_disconnected"
    assert 3 <= row.completion_tokens <= 5  # what was sent before the hang-up was noticed, not the 40 planned
    assert row.cost == row.completion_tokens


async def test_a_provider_that_breaks_off_mid_stream_is_billed_for_what_arrived(
    lyss: RunningLyss,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    upstream.behave("oa", words=20, cut_after_chunks=3)
    key = await setup_calls(lyss, tenant_a, upstream, {"name": "oa", "models": ["gpt-test"]})
    async with httpx.AsyncClient(base_url=lyss.url, timeout=30) as http:
        response = await http.post(
            "/v1/chat/completions", json=chat_body(stream=True), headers={"Authorization": f"Bearer {key}"}
        )
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    contents = [msgspec.json.decode(e) for e in events]
    assert [c["choices"][0]["delta"]["content"] for c in contents[:3]] == ["w0 ", "w1 ", "w2 "]
    assert contents[-1]["error"]["code"] == "upstream_error"  # said, not silently truncated
    rows = await usage_rows(session_maker, tenant_a, 1)
    assert [(row.outcome, row.completion_tokens) for row in rows] == [("upstream_cut", 3)]
    assert UUID(str(rows[0].token_id))
