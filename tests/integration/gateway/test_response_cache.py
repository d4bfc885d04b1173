"""The response cache, driven by the official SDKs: an identical call of the same tenant is answered from Redis
without the provider (whole or as the same stream), billed its fraction and logged as a hit with what it saved;
another tenant, a key set to `off`, `Cache-Control`, another parameter, a sampled answer, the TTL and the size
limit all miss; concurrent hits and misses never spend more than a key's quota."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import httpx
import openai
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.response_cache import hit_charge
from db.provider import ApiToken, UsageLog
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel, chat_body, issue_key, sdk_http, set_price, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

# Each call asks for (and the mock answers) 10 completion tokens at 1 credit each; prompts are free.
CALL_COST = 10
MESSAGES: Any = [{"role": "user", "content": "hello there"}]


async def cache_on(client: Client, admin: dict[str, str], **settings: Any) -> dict[str, Any]:
    response = await client.put("/api/response-cache", json={"enabled": True, **settings}, headers=admin)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def setup(
    client: Client,
    tenant: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    channel: str = "primary",
    **key_fields: Any,
) -> str:
    """A channel serving gpt-test and claude-test at 1 credit per completion token, and the user's key."""
    admin = auth_headers(tenant.admin)
    await add_channel(client, admin, upstream, channel, models=["gpt-test"])
    await add_channel(client, admin, upstream, f"{channel}-claude", kind="anthropic", models=["claude-test"])
    await set_price(client, admin, "gpt-test", 0, 1_000_000)
    await set_price(client, admin, "claude-test", 0, 1_000_000)
    upstream.behave(channel, words=CALL_COST)
    upstream.behave(f"{channel}-claude", words=CALL_COST)
    key, _ = await issue_key(client, auth_headers(tenant.user), **key_fields)
    return key


def openai_sdk(client: Client, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{client.base_url}/v1", api_key=key, http_client=sdk_http(client), max_retries=0
    )


async def ask(
    client: Client, key: str, headers: dict[str, str] | None = None, **fields: Any
) -> tuple[dict[str, Any], str | None]:
    """A whole chat completion through the OpenAI SDK: (its body, its `x-lyss-cache` header)."""
    body = {"messages": MESSAGES, "model": "gpt-test", "max_tokens": CALL_COST, "temperature": 0} | fields
    raw = await openai_sdk(client, key).chat.completions.with_raw_response.create(**body, extra_headers=headers)
    return raw.parse().model_dump(), raw.headers.get("x-lyss-cache")


async def test_a_second_identical_call_is_a_hit_without_the_provider_billed_its_fraction_with_the_saving_logged(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
) -> None:
    key = await setup(client, tenant_a, upstream, auth_headers)
    await cache_on(client, auth_headers(tenant_a.admin), hit_cost_fraction=0.35)

    first, first_cache = await ask(client, key)
    second, second_cache = await ask(client, key)

    assert (first_cache, second_cache) == ("miss", "hit")
    assert upstream.calls["primary"] == 1
    assert second == first  # the same answer, its id included
    miss, hit = await usage_rows(session_maker, tenant_a, 2)
    assert (miss.outcome, miss.cost, miss.completion_tokens) == ("ok", CALL_COST, CALL_COST)
    # 35% of 10 credits is 3.5: rounded up, never down to a free hit.
    assert (hit.outcome, hit.cost, hit.channel_id) == ("cache_hit", 4, None)
    assert (hit.prompt_tokens, hit.completion_tokens) == (miss.prompt_tokens, miss.completion_tokens)
    assert hit.details == {"cache": "hit", "original_cost": CALL_COST, "saved": CALL_COST - 4}
    # The entry is under the tenant's hash tag, so a script or a cluster slot never mixes tenants.
    redis = Redis.from_url(redis_url)
    try:
        assert len(await redis.keys(f"lyss:gw:{{{tenant_a.id.hex}}}:cache:*")) == 1
    finally:
        await redis.aclose()
    await asyncio.sleep(0.6)  # one more flusher pass commits the totals with the last rows
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(ApiToken.used_quota)) == CALL_COST + 4


async def test_a_hit_costs_nothing_by_default(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await setup(client, tenant_a, upstream, auth_headers)
    assert (await cache_on(client, auth_headers(tenant_a.admin)))["hit_cost_fraction"] == 0
    await ask(client, key)
    await ask(client, key)
    _, hit = await usage_rows(session_maker, tenant_a, 2)
    assert (hit.outcome, hit.cost, hit.details["saved"]) == ("cache_hit", 0, CALL_COST)


async def test_a_streamed_call_replays_as_the_same_stream_in_both_dialects(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await setup(client, tenant_a, upstream, auth_headers)
    await cache_on(client, auth_headers(tenant_a.admin))
    claude = anthropic.AsyncAnthropic(
        base_url=str(client.base_url), api_key=key, http_client=sdk_http(client), max_retries=0
    )

    async def claude_stream() -> tuple[str, int]:
        async with claude.messages.stream(
            model="claude-test", max_tokens=CALL_COST, messages=MESSAGES, extra_body={"temperature": 0}
        ) as events:
            message = await events.get_final_message()
        return "".join(block.text for block in message.content if block.type == "text"), message.usage.output_tokens

    async def openai_stream() -> tuple[str, list[str]]:
        chunks = await openai_sdk(client, key).chat.completions.create(
            model="gpt-test", messages=MESSAGES, max_tokens=CALL_COST, temperature=0, stream=True
        )
        parts = [chunk.choices[0].delta.content or "" async for chunk in chunks if chunk.choices]
        return "".join(parts), parts

    first_claude = await claude_stream()
    assert first_claude == await claude_stream()
    assert first_claude[0].startswith("w0 w1")
    first_openai = await openai_stream()
    assert first_openai == await openai_stream()  # the same text in the same chunks
    assert (upstream.calls["primary-claude"], upstream.calls["primary"]) == (1, 1)
    # The raw events again, byte for byte, marked as a hit.
    async with client.stream(
        "POST",
        "/v1/chat/completions",
        json=chat_body(max_tokens=CALL_COST, temperature=0, stream=True),
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        assert response.headers["x-lyss-cache"] == "hit"
        assert response.headers["content-type"].startswith("text/event-stream")
        assert (await response.aread()).endswith(b"data: [DONE]\n\n")
    rows = await usage_rows(session_maker, tenant_a, 5)
    assert [(row.endpoint, row.outcome, row.stream) for row in rows] == [
        ("messages", "ok", True),
        ("messages", "cache_hit", True),
        ("chat", "ok", True),
        ("chat", "cache_hit", True),
        ("chat", "cache_hit", True),
    ]


async def test_another_tenant_with_the_same_body_misses(
    client: Client,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
) -> None:
    key_a = await setup(client, tenant_a, upstream, auth_headers, channel="alpha")
    key_b = await setup(client, tenant_b, upstream, auth_headers, channel="bravo")
    await cache_on(client, auth_headers(tenant_a.admin))
    await cache_on(client, auth_headers(tenant_b.admin))
    await ask(client, key_a)
    assert (await ask(client, key_a))[1] == "hit"
    assert (await ask(client, key_b))[1] == "miss"
    assert (upstream.calls["alpha"], upstream.calls["bravo"]) == (1, 1)


async def test_a_key_set_to_off_never_uses_the_cache_and_one_set_to_on_does_where_its_organization_does_not(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
) -> None:
    key = await setup(client, tenant_a, upstream, auth_headers)
    off_key, off_token = await issue_key(client, auth_headers(tenant_a.user), name="no cache", response_cache="off")
    assert off_token["response_cache"] == "off"
    # The organization's cache is off: an inheriting key does not use it, nor touches Redis for it.
    assert (await ask(client, key))[1] is None
    await cache_on(client, auth_headers(tenant_a.admin))
    await ask(client, key)
    assert (await ask(client, off_key))[1] is None
    assert (await ask(client, off_key))[1] is None
    assert upstream.calls["primary"] == 4

    # Off for the organization, on for one key: that key's calls are cached (with the organization's TTL).
    await client.put("/api/response-cache", json={"enabled": False}, headers=auth_headers(tenant_a.admin))
    changed = await client.patch(
        f"/api/tokens/{off_token['id']}", json={"response_cache": "on"}, headers=auth_headers(tenant_a.user)
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["response_cache"] == "on"
    assert (await ask(client, off_key, max_tokens=9))[1] == "miss"
    assert (await ask(client, off_key, max_tokens=9))[1] == "hit"
    assert (await ask(client, key, max_tokens=9))[1] is None


async def test_no_cache_skips_the_lookup_and_no_store_skips_both(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
) -> None:
    key = await setup(client, tenant_a, upstream, auth_headers)
    await cache_on(client, auth_headers(tenant_a.admin))
    assert (await ask(client, key, headers={"Cache-Control": "no-store"}))[1] is None
    assert (await ask(client, key))[1] == "miss"  # no-store kept nothing
    assert (await ask(client, key, headers={"Cache-Control": "no-cache"}))[1] is None
    assert (await ask(client, key, headers={"Cache-Control": "max-age=0, No-Cache"}))[1] is None
    assert upstream.calls["primary"] == 4
    assert (await ask(client, key))[1] == "hit"
    assert upstream.calls["primary"] == 4


async def test_a_fresh_answer_after_no_cache_replaces_the_kept_one(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
) -> None:
    key = await setup(client, tenant_a, upstream, auth_headers)
    await cache_on(client, auth_headers(tenant_a.admin))
    upstream.behave("primary", words=CALL_COST, replies=["the old answer", "the new answer"])
    await ask(client, key)
    await ask(client, key, headers={"Cache-Control": "no-cache"})
    answer, cache = await ask(client, key)
    assert (answer["choices"][0]["message"]["content"], cache) == ("the new answer", "hit")


@pytest.mark.parametrize(
    "changed",
    [
        {"temperature": 0.0, "top_p": 0.5},
        {"max_tokens": CALL_COST - 1},
        {"seed": 7},
        {"messages": [{"role": "system", "content": "be brief"}, *MESSAGES]},
        {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]},
        {"response_format": {"type": "json_object"}},
    ],
    ids=["top_p", "output-limit", "seed", "system", "tools", "response_format"],
)
async def test_a_different_parameter_misses_and_bookkeeping_ones_do_not(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    changed: dict[str, Any],
) -> None:
    key = await setup(client, tenant_a, upstream, auth_headers)
    await cache_on(client, auth_headers(tenant_a.admin))
    await ask(client, key)
    assert (await ask(client, key, **changed))[1] == "miss"
    # Who asked and how the answer is tagged change nothing in it.
    assert (await ask(client, key, user="someone-else", metadata={"run": "7"}, store=False))[1] == "hit"
    assert upstream.calls["primary"] == 2


async def test_a_sampled_answer_is_cached_only_where_allowed(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
) -> None:
    key = await setup(client, tenant_a, upstream, auth_headers)
    await cache_on(client, auth_headers(tenant_a.admin))
    for _ in range(2):
        assert (await ask(client, key, temperature=0.7))[1] is None
        # No temperature: the provider's default of 1, sampled too.
        assert (await ask(client, key, temperature=openai.NOT_GIVEN))[1] is None
    assert upstream.calls["primary"] == 4
    await cache_on(client, auth_headers(tenant_a.admin), cache_sampled=True)
    assert (await ask(client, key, temperature=0.7))[1] == "miss"
    assert (await ask(client, key, temperature=0.7))[1] == "hit"
    assert (await ask(client, key, temperature=0.8))[1] == "miss"


async def test_an_answer_expires_after_its_ttl(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
) -> None:
    key = await setup(client, tenant_a, upstream, auth_headers)
    await cache_on(client, auth_headers(tenant_a.admin), ttl_seconds=1)
    await ask(client, key)
    assert (await ask(client, key))[1] == "hit"
    await asyncio.sleep(1.2)
    assert (await ask(client, key))[1] == "miss"
    assert upstream.calls["primary"] == 2


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_an_answer_larger_than_the_limit_is_served_but_not_kept(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    stream: bool,
) -> None:
    key = await setup(client, tenant_a, upstream, auth_headers)
    await cache_on(client, auth_headers(tenant_a.admin), max_entry_bytes=2048)
    headers = {"Authorization": f"Bearer {key}"}

    async def call(words: int) -> httpx.Response:
        upstream.behave("primary", words=words)
        body = chat_body(max_tokens=words, temperature=0, stream=stream)
        response = await client.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200, response.text
        return response

    big = await call(400)
    assert "w399" in big.text
    assert (await call(400)).headers["x-lyss-cache"] == "miss"
    await call(5)
    assert (await call(5)).headers["x-lyss-cache"] == "hit"
    assert upstream.calls["primary"] == 3


async def test_response_cache_settings_refuse_bad_input_naming_the_field_and_are_for_admins_only(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
) -> None:
    admin = auth_headers(tenant_a.admin)
    for body, field in [
        ({"hit_cost_fraction": 1.5}, "hit_cost_fraction"),
        ({"hit_cost_fraction": -0.1}, "hit_cost_fraction"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": "an hour"}, "ttl_seconds"),
        ({"max_entry_bytes": 10}, "max_entry_bytes"),
        ({"enabled": "yes"}, "enabled"),
        ({"shared": True}, "shared"),
    ]:
        refused = await client.put("/api/response-cache", json=body, headers=admin)
        assert refused.status_code == 400, (body, refused.text)
        assert field in refused.text
    assert (await client.get("/api/response-cache", headers=admin)).json()["enabled"] is False
    assert (await client.get("/api/response-cache", headers=auth_headers(tenant_a.user))).status_code == 403
    refused = await client.put("/api/response-cache", json={"enabled": True}, headers=auth_headers(tenant_a.user))
    assert refused.status_code == 403
    saved = await cache_on(client, admin, ttl_seconds=60, hit_cost_fraction=0.25)
    assert (await client.get("/api/response-cache", headers=admin)).json() == saved
    bad_key = await client.post(
        "/api/tokens", json={"name": "k", "response_cache": "sometimes"}, headers=auth_headers(tenant_a.user)
    )
    assert bad_key.status_code == 400
    assert "response_cache" in bad_key.text


def test_a_hit_charge_is_the_typed_fraction_rounded_up() -> None:
    assert [hit_charge(10, fraction) for fraction in (0.0, 0.1, 0.25, 0.35, 1.0)] == [0, 1, 3, 4, 10]
    assert hit_charge(0, 0.5) == 0


async def test_concurrent_hits_and_misses_never_spend_more_than_the_keys_quota(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    # 200 credits: 20 calls at full price, or more where some are hits at half price.
    key = await setup(client, tenant_a, upstream, auth_headers, quota=200)
    await cache_on(client, auth_headers(tenant_a.admin), hit_cost_fraction=0.5)
    headers = {"Authorization": f"Bearer {key}"}

    async def call(index: int) -> int:
        # Half the calls share one body (hits once it is kept), half are each their own.
        text = "the same question" if index % 2 else f"question {index}"
        body = chat_body(text=text, max_tokens=CALL_COST, temperature=0)
        return (await client.post("/v1/chat/completions", json=body, headers=headers)).status_code

    # The shared body's answer is kept first; then the concurrent calls race for what is left.
    statuses = [await call(1), *await asyncio.gather(*(call(index) for index in range(80)))]
    assert set(statuses) <= {200, 429}
    assert statuses.count(429) > 0
    rows = await usage_rows(session_maker, tenant_a, 81)
    await asyncio.sleep(0.6)  # one more flusher pass commits the totals with the last rows
    async with tenant_session(session_maker, tenant_a.id) as session:
        used = await session.scalar(select(ApiToken.used_quota))
        logged = await session.scalar(select(func.coalesce(func.sum(UsageLog.cost), 0)))
    hits = [row for row in rows if row.outcome == "cache_hit"]
    assert hits, "some identical calls were answered from the cache"
    assert {row.cost for row in hits} == {CALL_COST // 2}
    assert used is not None
    assert used == logged
    assert used <= 200
    assert statuses.count(200) == len([row for row in rows if row.outcome in ("ok", "cache_hit")])
