"""Backpressure: a channel's calls in flight, a key's and a user's concurrent requests and streams, held as
leases in Redis across workers; a full channel queues calls for a bounded time, then refuses them with 429;
slots of a process that died come back when their lease runs out."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

import msgspec
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.encryption import SecretBox
from app.gateway.client import chat_token, embed
from app.gateway.engine import create_gateway
from app.gateway.limits import GatewayLimits, lease_key
from app.settings import Settings
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client, app_client, bearer
from tests.support.gateway import add_channel, chat_body, issue_key, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

SLOW = 0.2


async def timed_call(client: Client, key: str, **fields: Any) -> tuple[int, float, Any]:
    started = time.monotonic()
    response = await client.post("/v1/chat/completions", json=chat_body(**fields), headers=bearer(key))
    return response.status_code, time.monotonic() - started, response


async def test_a_channel_limited_to_4_in_flight_never_has_more_at_the_provider_and_its_queue_is_bounded(
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    queue_seconds = 1.0
    bounded = msgspec.structs.replace(settings, gateway_queue_seconds=queue_seconds, gateway_queue_limit=20)
    # Two workers: the limit holds across processes, as it is kept in Redis.
    async with app_client(bounded) as one, app_client(bounded) as two:
        channel = await add_channel(one, auth_headers(tenant_a.admin), upstream, "slow", max_in_flight=4)
        assert channel["max_in_flight"] == 4
        # Slow enough that a second in the queue cannot serve all forty, four at a time.
        upstream.behave("slow", hang_seconds=0.5)
        key, _ = await issue_key(one, auth_headers(tenant_a.user))

        results = await asyncio.gather(*(timed_call((one, two)[index % 2], key) for index in range(40)))

    assert upstream.most_in_flight["slow"] == 4
    served = [result for result in results if result[0] == 200]
    refused = [result for result in results if result[0] == 429]
    assert len(served) + len(refused) == 40
    # Four at a time: queued calls were served, and the queue's bounds refused the rest.
    assert len(served) >= 8
    assert len(refused) >= 10
    error = refused[0][2].json()["error"]
    assert error["code"] == "channel_busy"
    assert error["message"].startswith("Every channel for this model is at its limit of calls in flight")
    assert refused[0][2].headers["retry-after"] == "1"
    rows = await usage_rows(session_maker, tenant_a, 40)
    refusals = [row for row in rows if row.outcome == "refused"]
    assert len(refusals) == len(refused)
    assert {(row.status_code, row.details["reason"], row.details["scope"], row.cost) for row in refusals} == {
        (429, "concurrency", "channel", 0)
    }
    assert [row.outcome for row in rows].count("ok") == len(served)
    # Nobody waited for a slot longer than the bound (and a margin for a loaded machine, which has taken 1.7 s):
    # the gateway's time beside the provider's. Unbounded, the last of forty would wait ~4.5 s.
    assert max(row.latency_ms - (row.upstream_latency_ms or 0) for row in rows) < queue_seconds * 1000 + 2500


async def test_a_queue_long_enough_serves_every_call_four_at_a_time(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "slow", max_in_flight=4)
    upstream.behave("slow", hang_seconds=SLOW)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))

    started = time.monotonic()
    results = await asyncio.gather(*(timed_call(client, key) for _ in range(20)))

    assert [status for status, _, _ in results] == [200] * 20
    assert upstream.most_in_flight["slow"] == 4
    assert time.monotonic() - started >= 20 / 4 * SLOW  # they did wait their turn


async def test_a_full_channel_fails_over_to_the_next_in_routing_order(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "narrow", max_in_flight=1, priority=10)
    await add_channel(client, admin, upstream, "wide", priority=1)
    upstream.behave("narrow", hang_seconds=SLOW)
    upstream.behave("wide", hang_seconds=SLOW)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))

    results = await asyncio.gather(*(timed_call(client, key) for _ in range(5)))

    assert [status for status, _, _ in results] == [200] * 5
    assert (upstream.calls["narrow"], upstream.calls["wide"]) == (1, 4)
    assert max(elapsed for _, elapsed, _ in results) < 2 * SLOW + 0.5  # nobody queued behind the narrow one


async def test_a_key_with_max_concurrent_2_runs_2_and_refuses_the_rest_at_once_on_the_record(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "primary")
    upstream.behave("primary", hang_seconds=1.0)
    key, token = await issue_key(client, auth_headers(tenant_a.user), max_concurrent=2)
    assert token["max_concurrent"] == 2

    results = await asyncio.gather(*(timed_call(client, key) for _ in range(10)))

    assert sorted(status for status, _, _ in results) == [200] * 2 + [429] * 8
    error = next(response.json()["error"] for status, _, response in results if status == 429)
    assert error["code"] == "concurrency_limit_exceeded"
    assert error["message"].startswith("Too many concurrent requests for this API key (at most 2 at once)")
    assert upstream.most_in_flight["primary"] == 2
    rows = await usage_rows(session_maker, tenant_a, 10)
    assert (
        sorted((row.outcome, row.details.get("reason"), row.details.get("scope")) for row in rows)
        == [("ok", None, None)] * 2 + [("refused", "concurrency", "key")] * 8
    )
    # Refused at once: before the two that run are answered (the provider takes a second).
    assert max(row.latency_ms for row in rows if row.outcome == "refused") < 1000
    # Both slots came back when the calls ended.
    again = await asyncio.gather(*(timed_call(client, key) for _ in range(2)))
    assert [status for status, _, _ in again] == [200, 200]


async def test_max_streams_bounds_streams_only_and_a_users_limit_spans_their_keys(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "primary")
    upstream.behave("primary", hang_seconds=0.4)
    key, _ = await issue_key(client, auth_headers(tenant_a.user), max_streams=1)

    results = await asyncio.gather(
        *(timed_call(client, key, stream=True) for _ in range(3)), timed_call(client, key), timed_call(client, key)
    )

    assert sorted(status for status, _, _ in results[:3]) == [200, 429, 429]
    assert [status for status, _, _ in results[3:]] == [200, 200]  # whole answers are not streams
    error = next(response.json()["error"] for status, _, response in results if status == 429)
    assert error["message"].startswith("Too many concurrent streams for this API key")

    budget = await client.patch(
        f"/api/users/{tenant_a.user.id}/budget", json={"max_concurrent": 1, "max_streams": 1}, headers=admin
    )
    assert (budget.json()["max_concurrent"], budget.json()["max_streams"]) == (1, 1)
    other, _ = await issue_key(client, auth_headers(tenant_a.user), name="another key")
    pair = await asyncio.gather(timed_call(client, key), timed_call(client, other))
    assert sorted(status for status, _, _ in pair) == [200, 429]
    error = next(response.json()["error"] for status, _, response in pair if status == 429)
    assert error["message"].startswith("Too many concurrent requests for your account (at most 1 at once)")


async def test_slots_of_a_process_that_died_come_back_within_the_lease_time(
    client: Client, settings: Settings, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    channel = await add_channel(client, auth_headers(tenant_a.admin), upstream, "primary", max_in_flight=2)
    key, token = await issue_key(client, auth_headers(tenant_a.user), max_concurrent=1)
    redis = Redis.from_url(settings.redis_url or "")
    limits = GatewayLimits(redis)
    try:
        # A worker takes the channel's two slots and the key's one, with a short lease, and dies holding them.
        for lease in ("dead-1", "dead-2"):
            taken = await limits.take_channel_slot(
                tenant_a.id, UUID(channel["id"]), limit=2, lease=lease, lease_seconds=2
            )
            assert taken == 1
        expiry = int(time.time() * 1000) + 1500
        await redis.zadd(lease_key(tenant_a.id, f"token:{token['id']}:inflight"), {"dead-1": expiry})

        status, _, response = await timed_call(client, key)
        assert status == 429
        assert response.json()["error"]["code"] == "concurrency_limit_exceeded"
        await asyncio.sleep(1.6)
        status, elapsed, response = await timed_call(client, key)
        # The key's slot is back; the channel's are not yet, so the call waited for them in the queue.
        assert (status, upstream.calls["primary"]) == (200, 1), response.text
        assert 0.2 < elapsed < 1.5
    finally:
        await limits.close()
        await redis.aclose()


async def test_a_long_stream_renews_its_lease_while_it_runs(
    settings: Settings, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    short = msgspec.structs.replace(settings, gateway_lease_seconds=2)
    async with app_client(short) as client:
        await add_channel(client, auth_headers(tenant_a.admin), upstream, "primary")
        upstream.behave("primary", words=30, chunk_delay_seconds=0.1)  # a stream of about three seconds
        key, _ = await issue_key(client, auth_headers(tenant_a.user), max_streams=1)

        long_stream = asyncio.create_task(timed_call(client, key, stream=True))
        await asyncio.sleep(2.5)  # past the first lease
        status, _, _ = await timed_call(client, key, stream=True)
        assert status == 429
        assert (await long_stream)[0] == 200
        status, _, _ = await timed_call(client, key, stream=True)
        assert status == 200


async def test_lyss_own_embedding_calls_keep_to_the_channel_limit(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "vectors", models=["embed-test"], max_in_flight=2)
    upstream.behave("vectors", hang_seconds=SLOW, dimensions=8)
    redis = Redis.from_url(settings.redis_url or "")
    # The gateway of a job worker or of memory: `client.embed` on the user's built-in key.
    gateway = create_gateway(settings, session_maker, redis, SecretBox(settings.encryption_keyring))
    try:
        async with tenant_session(session_maker, tenant_a.id) as session:
            token = await chat_token(session, tenant_a.user.id)
            await session.commit()
        vectors = await asyncio.gather(*(embed(gateway, token, "embed-test", [f"text {n}"]) for n in range(8)))
    finally:
        await gateway.close()
        await redis.aclose()

    assert [len(found[0]) for found in vectors] == [8] * 8
    assert upstream.most_in_flight["vectors"] == 2
