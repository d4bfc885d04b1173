"""Prompt caching billed right: every provider's cached and cache-write token counts, whole and streamed,
reach the usage row at their own prices and the client in its own dialect; the reservation stays the
worst case, so a key that could only pay the cached price is still refused before the call."""

from __future__ import annotations

import math
import random
from typing import Any

import anthropic
import msgspec
import openai
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.admin import USAGE_EXPORT_COLUMNS, ExportNames, usage_export_row
from db.provider import ApiToken
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, chat_body, issue_key, sdk_http, token_id_of, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows

# Credits per million tokens: a prompt token costs 1 credit, read from the cache 0.1, written to it 1.25.
PROMPT, CACHED, CACHE_WRITE, COMPLETION = 1_000_000, 100_000, 1_250_000, 2_000_000

# (channel type, model, what the mock reports, prompt tokens, cached, cache-write, hand-computed cost)
PROVIDERS = {
    # 200 plain + 800 cached at 0.1 = 280, then 7 completion tokens at 2 = 14.
    "openai": (
        "openai-compatible",
        "gpt-test",
        {"prompt_tokens": 1000, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 800}},
        (1000, 800, 0, 294),
    ),
    # DeepSeek's own names: 400 missed at 1 + 600 hit at 0.1 = 460, + 14.
    "deepseek": (
        "deepseek",
        "gpt-test",
        {
            "prompt_tokens": 1000,
            "completion_tokens": 7,
            "prompt_cache_hit_tokens": 600,
            "prompt_cache_miss_tokens": 400,
        },
        (1000, 600, 0, 474),
    ),
    # Anthropic's `input_tokens` leaves the cache out: 100 plain + 700 read at 0.1 + 200 written at 1.25
    # = 100 + 70 + 250 = 420, + 14.
    "anthropic": (
        "anthropic",
        "claude-test",
        {"input_tokens": 100, "cache_read_input_tokens": 700, "cache_creation_input_tokens": 200, "output_tokens": 7},
        (1000, 700, 200, 434),
    ),
}


async def set_cache_prices(client: Client, admin: dict[str, str], model: str, **prices: int) -> None:
    body = {
        "prompt_price": PROMPT,
        "completion_price": COMPLETION,
        "cached_prompt_price": CACHED,
        "cache_write_price": CACHE_WRITE,
    }
    response = await client.put(f"/api/model-prices/{model}", json=body | prices, headers=admin)
    assert response.status_code == 200, response.text


async def openai_usage(client: Client, key: str, model: str, stream: bool) -> tuple[int, int]:
    """(prompt tokens, cached tokens) as the official OpenAI SDK reads them."""
    sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=key, http_client=sdk_http(client), max_retries=0)
    messages: Any = [{"role": "user", "content": "hello there"}]
    if not stream:
        answer = await sdk.chat.completions.create(
            model=model, messages=messages, max_tokens=1000, extra_body={"prompt_cache_key": "doc-7"}
        )
        usage = answer.usage
    else:
        chunks = await sdk.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=1000,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"prompt_cache_key": "doc-7"},
        )
        usage = None
        async for chunk in chunks:
            usage = chunk.usage or usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    return usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens or 0


async def anthropic_usage(client: Client, key: str, model: str, stream: bool) -> tuple[int, int, int]:
    """(input, cache read, cache creation) tokens as the official Anthropic SDK reads them."""
    sdk = anthropic.AsyncAnthropic(
        base_url=str(client.base_url), api_key=key, http_client=sdk_http(client), max_retries=0
    )
    messages: Any = [{"role": "user", "content": "hello there"}]
    if not stream:
        answer = await sdk.messages.create(model=model, max_tokens=1000, messages=messages)
    else:
        async with sdk.messages.stream(model=model, max_tokens=1000, messages=messages) as events:
            answer = await events.get_final_message()
    usage = answer.usage
    return usage.input_tokens, usage.cache_read_input_tokens or 0, usage.cache_creation_input_tokens or 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"], ids=["openai-client", "anthropic-client"])
@pytest.mark.parametrize("provider", list(PROVIDERS))
async def test_cached_and_cache_write_tokens_are_billed_logged_and_reported_in_the_clients_dialect(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    provider: str,
    dialect: str,
    stream: bool,
) -> None:
    kind, model, reported, (prompt, cached, written, cost) = PROVIDERS[provider]
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "cache", kind=kind, models=[model])
    await set_cache_prices(client, admin, model)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    upstream.behave("cache", reported_usage=reported)

    if dialect == "openai":
        assert await openai_usage(client, key, model, stream) == (prompt, cached)
        if kind != "anthropic":
            assert upstream.bodies[-1][1]["prompt_cache_key"] == "doc-7"  # the provider's cache control went on
    else:
        assert await anthropic_usage(client, key, model, stream) == (prompt - cached - written, cached, written)

    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert (row.prompt_tokens, row.completion_tokens) == (prompt, 7)
    assert (row.cached_tokens, row.cache_write_tokens) == (cached, written)
    assert (row.cost, row.overshoot) == (cost, 0)
    [listed] = (await client.get("/api/usage", headers=admin)).json()["items"]
    assert (listed["cached_tokens"], listed["cache_write_tokens"], listed["cost"]) == (cached, written, cost)
    exported = dict(zip(USAGE_EXPORT_COLUMNS, usage_export_row(row, ExportNames({}, {}, {}, "USD")), strict=True))
    assert (exported["cached_tokens"], exported["cache_write_tokens"]) == (str(cached), str(written))
    if provider == "anthropic" and dialect == "anthropic" and not stream:
        await sign_in(client, tenant_a, tenant_a.admin.email)
        page = (await client.get(f"/portal/usage/{row.id}")).text
        assert f"{cached} read from the provider\u2019s cache, {written} written to it" in page


async def test_a_cache_count_beyond_the_prompt_or_not_a_count_never_lowers_the_bill(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "cache")
    await set_cache_prices(client, admin, "gpt-test")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    for details in ({"cached_tokens": 5000}, {"cached_tokens": -3}, {"cached_tokens": "all"}):
        upstream.behave(
            "cache", reported_usage={"prompt_tokens": 100, "completion_tokens": 1, "prompt_tokens_details": details}
        )
        response = await client.post("/v1/chat/completions", json=chat_body(max_tokens=10), headers=bearer(key))
        assert response.status_code == 200, response.text
    capped, negative, garbage = await usage_rows(session_maker, tenant_a, 3)
    # At most the 100 prompt tokens are cheap (100 at 0.1 = 10, + 2); a figure that is no count makes none cheap.
    assert (capped.cached_tokens, capped.cost) == (100, 12)
    assert (negative.cached_tokens, negative.cost) == (0, 102)
    assert (garbage.cached_tokens, garbage.cost) == (0, 102)


async def test_a_key_that_affords_the_cached_price_but_not_the_worst_case_is_refused_before_the_call(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "cache")
    # A cache write dearer than a plain prompt token: the reservation prices every prompt token at it.
    await set_cache_prices(client, admin, "gpt-test", cache_write_price=10_000_000)
    # The prompt bound is the body's size (~100 bytes): ~100 credits at the prompt price, ~10 cached, ~1,000
    # written; 100 completion tokens cost 200. 600 covers the call at any price but the dearest.
    key, _ = await issue_key(client, auth_headers(tenant_a.user), quota=600)
    upstream.behave(
        "cache",
        reported_usage={"prompt_tokens": 30, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 30}},
    )
    response = await client.post("/v1/chat/completions", json=chat_body(max_tokens=100), headers=bearer(key))
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert sum(upstream.calls.values()) == 0
    await set_cache_prices(client, admin, "gpt-test")
    allowed = await client.post("/v1/chat/completions", json=chat_body(max_tokens=100), headers=bearer(key))
    assert allowed.status_code == 200, allowed.text


async def test_a_cache_write_price_is_stored_shown_and_checked(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await set_cache_prices(client, admin, "org-model")
    listing = {price["model"]: price for price in (await client.get("/api/model-prices", headers=admin)).json()}
    assert listing["org-model"]["cache_write_price"] == CACHE_WRITE
    built_in = (await client.get("/api/model-prices/built-in", headers=admin)).json()["prices"]
    sonnet = next(price for price in built_in if price["model"] == "claude-sonnet-4-5")
    assert sonnet["cache_write_price"] == sonnet["prompt_price"] * 5 // 4
    for wrong in ("cheap", -1):
        response = await client.put(
            "/api/model-prices/org-model",
            json={"prompt_price": 1, "completion_price": 1, "cache_write_price": wrong},
            headers=admin,
        )
        assert response.status_code == 400, response.text
        assert "cache_write_price" in response.text
    listing = {price["model"]: price for price in (await client.get("/api/model-prices", headers=admin)).json()}
    assert listing["org-model"]["cache_write_price"] == CACHE_WRITE


async def test_the_portal_price_form_takes_a_cache_write_price_and_shows_a_wrong_one_by_its_field(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    form = {"csrf_token": token, "model": "org-model", "prompt_price": "1", "completion_price": "2"}
    wrong = await client.post("/portal/prices", data={**form, "cache_write_price": "-1"})
    assert wrong.status_code == 400
    assert field_error(wrong.text, "cache_write_price") == "An amount of money cannot be negative."
    admin = auth_headers(tenant_a.admin)
    assert "org-model" not in {
        price["model"] for price in (await client.get("/api/model-prices", headers=admin)).json()
    }
    saved = await client.post("/portal/prices", data={**form, "cache_write_price": "1.25"})
    assert saved.status_code in (200, 303), saved.text
    listing = {price["model"]: price for price in (await client.get("/api/model-prices", headers=admin)).json()}
    assert (listing["org-model"]["cache_write_price"], listing["org-model"]["cached_prompt_price"]) == (1_250_000, None)
    page = (await client.get("/portal/prices", params={"q": "org-model"})).text
    assert '$1.25 <span class="hint">cache write</span>' in page


def hand_cost(plain: int, read: int, written: int, completion: int) -> int:
    """Plain, cached and cache-write prompt tokens at their prices, rounded up once; the completion apart."""
    return math.ceil(plain + read / 10 + written * 5 / 4) + 2 * completion


async def test_no_mix_of_cached_and_cache_write_tokens_overspends_a_key(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    """Random cache reads and writes reported by an Anthropic channel (never more prompt than the request's
    bytes, as a real count): each charge is the hand-computed price, nothing is overshot, and the key never
    spends past its quota, though a write costs more than a plain prompt token."""
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "cache", kind="anthropic", models=["claude-test"])
    await set_cache_prices(client, admin, "claude-test")
    quota = 3_000
    key, token = await issue_key(client, auth_headers(tenant_a.user), quota=quota)
    rng = random.Random(20)  # noqa: S311 - a reproducible sequence of cases, not a secret
    served: list[tuple[int, int, int, int]] = []
    refused = 0
    for _ in range(80):
        body = chat_body(model="claude-test", max_tokens=rng.randint(1, 60))
        prompt = rng.randint(0, len(msgspec.json.encode(body)))
        read = rng.randint(0, prompt)
        written = rng.randint(0, prompt - read)
        completion = rng.randint(0, body["max_tokens"])
        reported = {
            "input_tokens": prompt - read - written,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": written,
            "output_tokens": completion,
        }
        upstream.behave("cache", reported_usage=reported)
        response = await client.post("/v1/chat/completions", json=body, headers=bearer(key))
        if response.status_code == 429:
            refused += 1
            continue
        assert response.status_code == 200, response.text
        served.append((prompt - read - written, read, written, completion))
    logged = await usage_rows(session_maker, tenant_a, len(served) + refused)
    rows = [row for row in logged if row.outcome == "ok"]
    assert len(rows) == len(served) > 10
    assert refused > 0  # the sequence reached the quota's edge
    for row, (plain, read, written, completion) in zip(rows, served, strict=True):
        assert (row.cached_tokens, row.cache_write_tokens) == (read, written)
        assert (row.cost, row.overshoot) == (hand_cost(plain, read, written, completion), 0)
    async with tenant_session(session_maker, tenant_a.id) as session:
        used = (await session.get_one(ApiToken, token_id_of(token))).used_quota
    assert used == sum(row.cost for row in rows) <= quota
