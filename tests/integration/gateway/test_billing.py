"""Every call is charged for what it may cost and what it did cost: the output limit reserved is the one
the provider is sent (in the parameter it takes), no parameter combination makes a call cheaper, and
usage a provider reports beyond the reservation is recorded as overshoot, never lost."""

from __future__ import annotations

import math
import random
from typing import Any

import msgspec
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.engine import MIN_CLAMPED_OUTPUT_TOKENS
from app.settings import Settings
from app.tenants.money import format_money
from db.provider import ApiToken
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, chat_body, issue_key, set_price, token_id_of, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import sign_in
from tests.support.tenants import TenantRows

PROMPT_PRICE, COMPLETION_PRICE = 1_000_000, 2_000_000  # one and two credits a token


def price(prompt_tokens: int, completion_tokens: int) -> int:
    return math.ceil(prompt_tokens * PROMPT_PRICE / 1e6) + math.ceil(completion_tokens * COMPLETION_PRICE / 1e6)


def limits_sent(body: dict[str, Any]) -> dict[str, Any]:
    return {name: body[name] for name in ("max_tokens", "max_completion_tokens") if name in body}


async def priced_key(
    client: Client, tenant: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders, **key_fields: Any
) -> tuple[str, dict[str, Any]]:
    admin = auth_headers(tenant.admin)
    await add_channel(client, admin, upstream, "primary")
    await set_price(client, admin, "gpt-test", PROMPT_PRICE, COMPLETION_PRICE)
    return await issue_key(client, auth_headers(tenant.user), **key_fields)


async def test_the_largest_limit_named_is_reserved_and_sent_so_the_call_pays_for_what_it_used(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key, _ = await priced_key(client, tenant_a, upstream, auth_headers)
    upstream.behave("primary", reported_usage={"prompt_tokens": 3, "completion_tokens": 7})
    body = chat_body(max_completion_tokens=1, max_tokens=4000)
    response = await client.post("/v1/chat/completions", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    assert limits_sent(upstream.bodies[-1][1]) == {"max_tokens": 4000}  # one limit, the one reserved for
    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert (row.prompt_tokens, row.completion_tokens, row.cost, row.overshoot) == (3, 7, price(3, 7), 0)


async def test_a_provider_reporting_more_than_it_may_generate_leaves_an_overshoot_on_the_record(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key, token = await priced_key(client, tenant_a, upstream, auth_headers)
    upstream.behave("primary", reported_usage={"prompt_tokens": 2, "completion_tokens": 10_000})
    before = REGISTRY.get_sample_value("lyss_gateway_overshot_calls_total", {"endpoint": "chat"}) or 0
    response = await client.post("/v1/chat/completions", json=chat_body(max_tokens=1), headers=bearer(key))
    assert response.status_code == 200, response.text
    assert limits_sent(upstream.bodies[-1][1]) == {"max_tokens": 1}
    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert row.overshoot > 0
    assert row.cost + row.overshoot == price(2, 10_000)  # nothing lost: charged plus recorded is the bill
    assert row.cost >= price(2, 1)  # the key pays at least for what it allowed
    listed = (await client.get("/api/usage", headers=auth_headers(tenant_a.admin))).json()["items"]
    assert listed[0]["overshoot"] == row.overshoot
    await sign_in(client, tenant_a, tenant_a.admin.email)
    assert f"+{format_money(row.overshoot)} over" in (await client.get("/portal/usage")).text
    after = REGISTRY.get_sample_value("lyss_gateway_overshot_calls_total", {"endpoint": "chat"})
    assert after == before + 1
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert (await session.get_one(ApiToken, token_id_of(token))).used_quota == row.cost


@pytest.mark.parametrize(
    ("kind", "parameter"),
    [("openai", "max_completion_tokens"), ("openai-compatible", "max_tokens"), ("deepseek", "max_tokens")],
)
async def test_the_limit_goes_in_the_parameter_the_provider_type_takes(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    kind: str,
    parameter: str,
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "primary", kind=kind)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    for body, limit in ((chat_body(), settings.gateway_default_max_tokens), (chat_body(max_tokens=33), 33)):
        for stream in (False, True):
            response = await client.post("/v1/chat/completions", json={**body, "stream": stream}, headers=bearer(key))
            assert response.status_code == 200, response.text
            assert limits_sent(upstream.bodies[-1][1]) == {parameter: limit}


async def test_a_model_that_refuses_max_tokens_gets_max_completion_tokens_with_the_same_limit(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    """A reasoning model behind an OpenAI-compatible base URL: told max_tokens, it refuses it (as OpenAI's
    o-series do); Lyss says the same limit as max_completion_tokens, once, on the same channel."""
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "reasoner", kind="openai-compatible", models=["o-test"])
    upstream.behave("reasoner", refused_parameter="max_tokens")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    for stream in (False, True):
        upstream.bodies.clear()
        response = await client.post(
            "/v1/chat/completions", json=chat_body(model="o-test", max_tokens=12, stream=stream), headers=bearer(key)
        )
        assert response.status_code == 200, response.text
        assert [limits_sent(body) for _, body in upstream.bodies] == [
            {"max_tokens": 12},
            {"max_completion_tokens": 12},
        ]


async def test_n_choices_reserve_n_times_the_limit(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key, _ = await priced_key(client, tenant_a, upstream, auth_headers, quota=600)
    # The prompt bound is the body's size (~100 bytes, one credit each); 100 tokens cost 200.
    one = await client.post("/v1/chat/completions", json=chat_body(max_tokens=100, n=1), headers=bearer(key))
    assert one.status_code == 200, one.text
    three = await client.post("/v1/chat/completions", json=chat_body(max_tokens=100, n=3), headers=bearer(key))
    assert three.status_code == 429, three.text
    assert three.json()["error"]["code"] == "insufficient_quota"


async def test_a_call_that_could_cost_more_than_can_be_reserved_is_refused_by_name(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "primary")
    await set_price(client, admin, "gpt-test", 0, 2**62)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    response = await client.post("/v1/chat/completions", json=chat_body(max_tokens=2**31 - 1), headers=bearer(key))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "max_tokens"
    assert sum(upstream.calls.values()) == 0


@pytest.mark.parametrize(
    "reported",
    [
        {"prompt_tokens": -50, "completion_tokens": -50},
        {"prompt_tokens": "many", "completion_tokens": 3},
        {"prompt_tokens": 2.5, "completion_tokens": 1},
        {"prompt_tokens": 10**30, "completion_tokens": 1},
    ],
)
async def test_usage_a_provider_reports_is_never_trusted_blindly(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    reported: dict[str, Any],
) -> None:
    key, _ = await priced_key(client, tenant_a, upstream, auth_headers)
    upstream.behave("primary", reported_usage=reported)
    for stream in (False, True):
        response = await client.post("/v1/chat/completions", json=chat_body(stream=stream), headers=bearer(key))
        assert response.status_code == 200, response.text
    rows = await usage_rows(session_maker, tenant_a, 2)
    assert len(rows) == 2
    for row in rows:
        assert row.prompt_tokens >= 0
        assert row.completion_tokens >= 0
        assert row.cost > 0  # a negative or garbled count never turns into a free (or refunded) call
        assert row.cost + row.overshoot == price(row.prompt_tokens, row.completion_tokens)


# --- the property -----------------------------------------------------------------------------------

LIMIT_CHOICES: list[Any] = [None, 1, 5, 40, 300, 0, -3, "12", 2.5, True, 2**40]


def _valid(limit: Any) -> bool:
    return isinstance(limit, int) and not isinstance(limit, bool) and 1 <= limit <= 2**31 - 1


async def test_no_combination_of_limits_and_reported_usage_loses_money(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    """Random `max_tokens` / `max_completion_tokens` (absent, valid, invalid) and provider-reported usage:
    a request with an invalid limit is refused and costs nothing; otherwise the one limit sent is the
    largest named (or the default), the charge equals the price of the reported usage whenever the
    provider stayed within that limit, charge plus recorded overshoot is always the price of the reported
    usage, and the key's quota is never exceeded."""
    quota = 20_000
    key, token = await priced_key(client, tenant_a, upstream, auth_headers, quota=quota)
    rng = random.Random(14)  # noqa: S311 - a reproducible sequence of cases, not a secret
    served: list[tuple[int, int, int]] = []  # (limit sent, reported prompt, reported completion)
    refused_for_quota = clamped_calls = 0
    for _ in range(250):
        fields = {
            name: value
            for name in ("max_tokens", "max_completion_tokens")
            if (value := rng.choice(LIMIT_CHOICES)) is not None
        }
        body = chat_body(**fields)
        raw = msgspec.json.encode(body)
        prompt = rng.randint(0, len(raw))  # a real count never exceeds the bytes it came from
        completion = rng.randint(0, 400)
        upstream.behave("primary", reported_usage={"prompt_tokens": prompt, "completion_tokens": completion})
        upstream.bodies.clear()
        response = await client.post(
            "/v1/chat/completions", content=raw, headers={**bearer(key), "Content-Type": "application/json"}
        )
        if not all(_valid(value) for value in fields.values()):
            assert response.status_code == 400, (fields, response.text)
            assert response.json()["error"]["param"] in fields
            assert upstream.bodies == []
            continue
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "insufficient_quota"
            refused_for_quota += 1
            continue
        assert response.status_code == 200, (fields, response.text)
        expected_limit = max(fields.values(), default=settings.gateway_default_max_tokens)
        if clamped := response.headers.get("x-lyss-output-limit-clamped"):
            # No limit named and too little left for the default: the largest the budget pays for.
            assert not fields
            assert MIN_CLAMPED_OUTPUT_TOKENS <= int(clamped) < expected_limit
            expected_limit = int(clamped)
            clamped_calls += 1
        [(_, sent)] = upstream.bodies
        assert limits_sent(sent) == {"max_tokens": expected_limit}
        served.append((expected_limit, prompt, completion))

    logged = await usage_rows(session_maker, tenant_a, len(served) + refused_for_quota)
    rows = [row for row in logged if row.outcome == "ok"]
    assert len(rows) == len(served) > 10
    assert [(row.status_code, row.cost) for row in logged if row.outcome == "refused"] == [(429, 0)] * refused_for_quota
    for row, (limit, prompt, completion) in zip(rows, served, strict=True):
        assert (row.prompt_tokens, row.completion_tokens) == (prompt, completion)
        assert row.cost + row.overshoot == price(prompt, completion)
        if completion <= limit:
            assert (row.cost, row.overshoot) == (price(prompt, completion), 0)
        else:
            assert row.cost >= price(prompt, limit)
    async with tenant_session(session_maker, tenant_a.id) as session:
        used = (await session.get_one(ApiToken, token_id_of(token))).used_quota
    assert used == sum(row.cost for row in rows) <= quota
    # The sequence reached the quota's edge (calls clamped or refused) and served calls with the default
    # limit and with named ones.
    assert clamped_calls + refused_for_quota > 0
    assert {limit for limit, _, _ in served} > {settings.gateway_default_max_tokens}
