"""Budgets and policies of people and groups: keys draw on their owner's and groups' budgets, all at once,
with no overspend under concurrency; a key only narrows them; minting keys escapes nothing; small budgets
are clamped, not refused; every refused or failed call is on the record."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any
from uuid import UUID

import msgspec
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.engine import CLAMP_HEADER, MIN_CLAMPED_OUTPUT_TOKENS, CallCost
from app.gateway.limits import GatewayLimits
from app.gateway.tasks import reset_budget_periods
from app.settings import Settings
from db.auth import User
from db.provider import ApiToken, UsageLog
from db.session import tenant_session
from db.tenant import Budget, UserGroupMember
from tests.support.clients import AuthHeaders, Client, app_client
from tests.support.gateway import add_channel, chat_body, issue_key, set_price, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TEST_PASSWORD_HASH, TenantRows

# Each call asks for (and the mock answers) 10 completion tokens at 1 credit each; prompts are free.
CALL_COST = 10


async def priced_channel(client: Client, tenant: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders) -> None:
    admin = auth_headers(tenant.admin)
    await add_channel(client, admin, upstream, "primary", models=["gpt-test", "other-model"])
    await set_price(client, admin, "gpt-test", 0, 1_000_000)
    await set_price(client, admin, "other-model", 0, 1_000_000)
    upstream.behave("primary", words=CALL_COST)


async def new_users(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, count: int) -> list[User]:
    async with tenant_session(session_maker, tenant.id) as session:
        users = [
            User(email=f"person{index}@{tenant.slug}.example.com", hashed_password=TEST_PASSWORD_HASH, role="end_user")
            for index in range(count)
        ]
        session.add_all(users)
        await session.commit()
    return users


async def set_budget(client: Client, headers: dict[str, str], path: str, **fields: Any) -> dict[str, Any]:
    response = await client.patch(path, json=fields, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def call(client: Client, key: str, **fields: Any) -> Any:
    body = chat_body(**({"max_tokens": CALL_COST} | fields))
    return await client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


async def budget_row(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, **subject: UUID) -> Budget:
    async with tenant_session(session_maker, tenant.id) as session:
        ((column, value),) = subject.items()
        return (await session.scalars(select(Budget).where(getattr(Budget, column) == value))).one()


async def test_five_keys_of_one_user_share_the_users_budget_exactly_under_300_concurrent_calls(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await priced_channel(client, tenant_a, upstream, auth_headers)
    budget = await set_budget(
        client, auth_headers(tenant_a.admin), f"/api/users/{tenant_a.user.id}/budget", quota=40 * CALL_COST
    )
    assert (budget["quota"], budget["remaining"]) == (400, 400)
    keys = [(await issue_key(client, auth_headers(tenant_a.user), name=f"key {index}"))[0] for index in range(5)]

    responses = await asyncio.gather(*(call(client, keys[index % 5]) for index in range(300)))

    statuses = [response.status_code for response in responses]
    assert statuses.count(200) == 40
    assert statuses.count(429) == 260
    refusal = next(response.json()["error"] for response in responses if response.status_code == 429)
    assert refusal["code"] == "insufficient_quota"
    assert refusal["message"].startswith("The budget of your account has $0.00 left")
    rows = await usage_rows(session_maker, tenant_a, 300)
    await asyncio.sleep(0.6)  # one more flusher pass commits the totals with the last rows
    served = [row for row in rows if row.outcome == "ok"]
    refused = [row for row in rows if row.outcome == "refused"]
    assert (len(served), len(refused)) == (40, 260)
    assert {(row.cost, row.details["reason"], row.details["scope"]) for row in refused} == {(0, "budget", "user")}
    used = (await budget_row(session_maker, tenant_a, user_id=tenant_a.user.id)).used_quota
    assert used == sum(row.cost for row in served) == 400
    mine = await client.get("/api/me/budgets", headers=auth_headers(tenant_a.user))
    assert mine.json()[0]["remaining"] == 0


async def test_a_group_budget_is_shared_by_its_members_and_a_narrower_key_is_bounded_by_the_key(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await priced_channel(client, tenant_a, upstream, auth_headers)
    admin = auth_headers(tenant_a.admin)
    members = [tenant_a.user, *await new_users(session_maker, tenant_a, 2)]
    async with tenant_session(session_maker, tenant_a.id) as session:
        session.add_all(UserGroupMember(group_id=tenant_a.group.id, user_id=user.id) for user in members)
        await session.commit()
    await set_budget(client, admin, f"/api/groups/{tenant_a.group.id}/budget", quota=40 * CALL_COST)
    keys = [(await issue_key(client, admin, name=f"key of {user.email}", user_id=str(user.id)))[0] for user in members]

    responses = await asyncio.gather(*(call(client, keys[index % 3]) for index in range(300)))

    assert [response.status_code for response in responses].count(200) == 40
    message = next(response.json()["error"]["message"] for response in responses if response.status_code == 429)
    assert message.startswith("The budget of your group 'engineering' has $0.00 left")
    rows = [row for row in await usage_rows(session_maker, tenant_a, 300) if row.outcome == "ok"]
    await asyncio.sleep(0.6)
    group_used = (await budget_row(session_maker, tenant_a, group_id=tenant_a.group.id)).used_quota
    assert group_used == sum(row.cost for row in rows) == 400
    # Each member's own spend is counted too, and adds up to the group's.
    async with tenant_session(session_maker, tenant_a.id) as session:
        spent = await session.scalar(
            select(func.sum(Budget.used_quota)).where(Budget.user_id.in_([user.id for user in members]))
        )
    assert spent == 400

    # A key narrower than its user: the user may spend 400 more, the key 100.
    await set_budget(client, admin, f"/api/groups/{tenant_a.group.id}/budget", quota=-1)
    await set_budget(client, admin, f"/api/users/{tenant_a.user.id}/budget", quota=1000)
    narrow, _ = await issue_key(client, auth_headers(tenant_a.user), name="narrow", quota=10 * CALL_COST)
    statuses = [(await call(client, narrow)).status_code for _ in range(12)]
    assert statuses == [200] * 10 + [429] * 2
    last = (await call(client, narrow)).json()["error"]["message"]
    assert last.startswith("The budget of this API key has $0.00 left")


async def test_minting_keys_does_not_escape_the_users_policy(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
) -> None:
    """The reported journey: an admin limits a person to 2 requests a minute and one model; the person
    issues their own unlimited keys for every model, and still gets no more."""
    await priced_channel(client, tenant_a, upstream, auth_headers)
    await set_budget(
        client,
        auth_headers(tenant_a.admin),
        f"/api/users/{tenant_a.user.id}/budget",
        rpm_limit=2,
        allowed_models=["gpt-test"],
    )
    first, _ = await issue_key(client, auth_headers(tenant_a.user), name="mine")
    second, _ = await issue_key(client, auth_headers(tenant_a.user), name="another of mine")

    other = await call(client, first, model="other-model")
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "model_not_allowed"
    assert "The policy of your account does not allow the model 'other-model'" in other.json()["error"]["message"]
    listed = await client.get("/v1/models", headers={"Authorization": f"Bearer {second}"})
    assert [model["id"] for model in listed.json()["data"]] == ["gpt-test"]

    statuses = [(await call(client, key)).status_code for key in (first, second, first, second)]
    assert statuses == [200, 200, 429, 429]
    refused = await call(client, second)
    assert refused.json()["error"]["message"] == "Rate limit reached: requests per minute for your account."
    assert int(refused.headers["retry-after"]) >= 1


async def test_a_small_budget_gets_clamped_answers_until_not_even_the_floor_fits(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await priced_channel(client, tenant_a, upstream, auth_headers)
    upstream.behave("primary", words=40)
    key, token = await issue_key(client, auth_headers(tenant_a.user), quota=100)  # ~100 output tokens

    sent_limits: list[int] = []
    clamped: list[str | None] = []
    for _ in range(6):
        upstream.bodies.clear()
        response = await call(client, key, max_tokens=None)  # no limit named: the default would be 4096
        if response.status_code != 200:
            break
        sent_limits.append(upstream.bodies[-1][1]["max_tokens"])
        clamped.append(response.headers.get(CLAMP_HEADER))
    assert response.status_code == 429
    assert f"not even {MIN_CLAMPED_OUTPUT_TOKENS} output tokens fit" in response.json()["error"]["message"]
    # 100 left, then 60 (each answer 40 tokens), then 20: each call sent what the budget could pay for.
    assert sent_limits == [100, 60, 20]
    assert clamped == ["100", "60", "20"]
    # A limit named beyond the budget is refused, not lowered, and says what is left.
    named = await call(client, key, max_tokens=500)
    assert named.status_code == 429
    assert "has $0.00 left: this request could cost up to $0.0005" in named.json()["error"]["message"]
    rows = await usage_rows(session_maker, tenant_a, 5)
    await asyncio.sleep(0.6)
    async with tenant_session(session_maker, tenant_a.id) as session:
        used = (await session.get_one(ApiToken, UUID(token["id"]))).used_quota
    assert used == sum(row.cost for row in rows) == 100


def test_what_a_budget_affords_beside_its_prompt_is_exact() -> None:
    cost = CallCost(prompt_price=3_000_000, completion_price=15_000_000)
    for credits in (0, 1, 17, 1_000, 123_457):
        for prompt in (0, 5, 333):
            affordable = cost.affordable_completion(credits, prompt)
            if affordable:
                assert cost.of(prompt, affordable) <= credits < cost.of(prompt, affordable + 1)
            else:
                assert cost.of(prompt, 1) > credits
    assert CallCost(0, 0).affordable_completion(100, 10) == 0


async def test_a_daily_period_rolls_over_exactly_once_under_concurrent_resets_and_calls(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    await priced_channel(client, tenant_a, upstream, auth_headers)
    await set_budget(
        client,
        auth_headers(tenant_a.admin),
        f"/api/users/{tenant_a.user.id}/budget",
        quota=30 * CALL_COST,
        budget_period="daily",
    )
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    assert [(await call(client, key)).status_code for _ in range(10)] == [200] * 10
    await usage_rows(session_maker, tenant_a, 10)
    await asyncio.sleep(0.6)
    yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(
            update(Budget).where(Budget.user_id == tenant_a.user.id).values(budget_reset_at=yesterday)
        )
        await session.commit()
    redis_client = Redis.from_url(settings.redis_url or "")
    limits = GatewayLimits(redis_client)

    async def reset() -> int:
        async with tenant_session(session_maker, tenant_a.id) as session:
            return await reset_budget_periods(session, limits, tenant_a.id, datetime.datetime.now(datetime.UTC))

    outcomes = await asyncio.gather(reset(), reset(), reset(), *(call(client, key) for _ in range(10)))
    resets, responses = outcomes[:3], outcomes[3:]
    assert sorted(resets) == [0, 0, 1]  # the one row reset by one run; the others found it reset already
    assert all(response.status_code == 200 for response in responses)
    await usage_rows(session_maker, tenant_a, 20)
    await asyncio.sleep(0.6)
    row = await budget_row(session_maker, tenant_a, user_id=tenant_a.user.id)
    balance = int(await redis_client.get(limits.used_key(tenant_a.id, f"user:{tenant_a.user.id}")) or 0)
    # What was counted before the reset left the balance once: Redis and PostgreSQL agree on the rest.
    assert balance == row.used_quota <= 10 * CALL_COST
    async with tenant_session(session_maker, tenant_a.id) as session:
        total = await session.scalar(select(func.sum(UsageLog.cost)))
    assert total == 20 * CALL_COST
    # The new day allows 30 calls again, less those made since the reset.
    statuses = [(await call(client, key)).status_code for _ in range(31)]
    assert statuses.count(200) == 30 - row.used_quota // CALL_COST
    await redis_client.aclose()


async def test_every_refused_and_failed_call_is_on_the_record_with_its_reason(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await add_channel(client, admin, upstream, "one", models=["gpt-test", "rationed"], priority=2)
    await add_channel(client, admin, upstream, "two", models=["gpt-test"], priority=1)
    await add_channel(client, admin, upstream, "slow", models=["slow-model"])
    await add_channel(client, admin, upstream, "limited", models=["rationed-only"], rate_limit=1)
    await set_price(client, admin, "gpt-test", 0, 1_000_000)
    key, _ = await issue_key(
        client, user, name="everything", allowed_models=["gpt-test", "slow-model", "rationed-only"]
    )
    poor, _ = await issue_key(client, user, name="poor", quota=5)
    walled, _ = await issue_key(client, user, name="walled", allowed_ips=["10.9.9.9"])
    hurried, _ = await issue_key(client, user, name="hurried", rpm_limit=1)
    gone, gone_token = await issue_key(client, user, name="gone")
    assert (
        await client.patch(f"/api/tokens/{gone_token['id']}", json={"status": "disabled"}, headers=user)
    ).status_code == 200

    assert (await call(client, gone)).status_code == 401
    assert (await call(client, key, model="rationed")).status_code == 403
    assert (await call(client, walled)).status_code == 403
    assert (await call(client, poor, max_tokens=100)).status_code == 429
    assert (await call(client, hurried)).status_code == 200
    assert (await call(client, hurried)).status_code == 429
    assert (await call(client, key, model="rationed-only")).status_code == 200
    assert (await call(client, key, model="rationed-only")).status_code == 503
    upstream.behave("one", status=500)
    upstream.behave("two", status=500)
    assert (await call(client, key)).status_code == 502
    upstream.behave("slow", hang_seconds=3.0)
    assert (await call(client, key, model="slow-model")).status_code == 504

    rows = await usage_rows(session_maker, tenant_a, 10)
    seen = {(row.status_code, row.outcome, row.details.get("reason"), row.details.get("scope")) for row in rows}
    assert seen == {
        (401, "refused", "key_disabled", None),
        (403, "refused", "model_not_allowed", None),
        (403, "refused", "ip_not_allowed", None),
        (429, "refused", "budget", "key"),
        (200, "ok", None, None),
        (429, "refused", "rpm", "key"),
        (503, "refused", "no_channel", None),
        (502, "upstream_error", "upstream_error", None),
        (504, "upstream_error", "upstream_error", None),
    }
    assert all(row.cost == 0 for row in rows if row.status_code != 200)
    failed = next(row for row in rows if row.status_code == 502)
    assert [(attempt["channel"], attempt["status"]) for attempt in failed.details["attempts"]] == [
        ("one", 500),
        ("two", 500),
    ]
    assert all(attempt["error"] and attempt["latency_ms"] >= 0 for attempt in failed.details["attempts"])
    assert failed.details["error"] == "The provider failed to answer; the call was not billed."
    daily = await client.get("/api/usage/daily", headers=admin)
    (today,) = daily.json()
    assert (today["requests"], today["errors"]) == (10, 8)


async def test_budget_policy_and_group_name_changes_reach_the_gateways_cache_at_once(
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    cached = msgspec.structs.replace(settings, gateway_cache_seconds=300.0)
    async with tenant_session(session_maker, tenant_a.id) as session:
        session.add(UserGroupMember(group_id=tenant_a.group.id, user_id=tenant_a.user.id))
        await session.commit()
    async with app_client(cached) as client:
        await priced_channel(client, tenant_a, upstream, auth_headers)
        admin = auth_headers(tenant_a.admin)
        key, _ = await issue_key(client, auth_headers(tenant_a.user))
        assert (await call(client, key, model="other-model")).status_code == 200  # the member is now cached

        await set_budget(client, admin, f"/api/groups/{tenant_a.group.id}/budget", allowed_models=["gpt-test"])
        refused = await call(client, key, model="other-model")
        assert refused.status_code == 403
        assert "The policy of your group 'engineering'" in refused.json()["error"]["message"]

        renamed = await client.patch(f"/api/groups/{tenant_a.group.id}", json={"name": "research"}, headers=admin)
        assert renamed.status_code == 200, renamed.text
        again = await call(client, key, model="other-model")
        assert "The policy of your group 'research'" in again.json()["error"]["message"]
