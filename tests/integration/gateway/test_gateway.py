"""The /v1 gateway in process, over real HTTP to the loopback mock provider and real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import datetime
from collections import Counter
from typing import Any
from uuid import UUID

import msgspec
import pytest
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.gateway.engine import UsageRecord
from app.gateway.limits import USAGE_TENANTS_KEY, GatewayLimits, usage_stream_key
from app.gateway.usage import UsageFlusher
from app.settings import Settings
from db.provider import ApiToken, Channel
from db.session import tenant_session
from db.tenant import AuditEvent, Organization
from tests.support.clients import AuthHeaders, Client, app_client, bearer
from tests.support.gateway import add_channel, chat_body, issue_key, set_price, token_id_of, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.redis_cluster import redis_at
from tests.support.tenants import TenantRows


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


# --- the basic call ------------------------------------------------------------------------------


async def test_chat_completion_routes_bills_and_logs(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    channel = await add_channel(
        client, admin, upstream, "primary", models=["gpt-test"], model_mapping={"gpt-test": "gpt-up"}
    )
    await set_price(client, admin, "gpt-test", 1_000_000, 2_000_000)  # 1 and 2 credits per token
    key, token = await issue_key(client, auth_headers(tenant_a.user))
    response = await client.post("/v1/chat/completions", json=chat_body(max_tokens=50), headers=bearer(key))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["choices"][0]["message"]["content"] == "w0 w1 w2 w3 w4"
    assert response.headers["x-lyss-channel"] == "primary"
    assert float(response.headers["x-lyss-overhead-ms"]) >= 0
    name, sent = upstream.bodies[0]
    assert (name, sent["model"]) == ("primary", "gpt-up")  # model_mapping applied upstream
    assert upstream.headers_seen[0]["Authorization"] == "Bearer key-of-primary"

    rows = await usage_rows(session_maker, tenant_a, 1)
    assert len(rows) == 1
    row = rows[0]
    assert (row.model, row.upstream_model, row.channel_id, row.token_id) == (
        "gpt-test",
        "gpt-up",
        UUID(channel["id"]),
        token_id_of(token),
    )
    assert (row.prompt_tokens, row.completion_tokens, row.cost, row.outcome) == (2, 5, 2 * 1 + 5 * 2, "ok")
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = await session.get_one(ApiToken, token_id_of(token))
        assert stored.used_quota == 12
        assert (await session.get_one(Channel, row.channel_id)).used_quota == 12


async def test_a_redelivered_usage_record_is_written_and_counted_once(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
) -> None:
    """A flusher that died after writing but before acknowledging leaves its records to be read again."""
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "primary")
    await set_price(client, admin, "gpt-test", 1_000_000, 1_000_000)
    key, token = await issue_key(client, auth_headers(tenant_a.user))
    assert (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 200
    [row] = await usage_rows(session_maker, tenant_a, 1)
    await asyncio.sleep(0.6)  # the pass that wrote the row has committed the token's total with it
    record = UsageRecord(
        id=str(row.id), tenant_id=str(tenant_a.id), user_id=str(row.user_id), token_id=str(row.token_id),
        channel_id=str(row.channel_id), request_id=row.request_id, endpoint=row.endpoint, model=row.model,
        upstream_model=row.upstream_model, prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens, cost=row.cost, latency_ms=row.latency_ms,
        upstream_latency_ms=row.upstream_latency_ms, status_code=row.status_code, outcome=row.outcome,
        stream=row.stream, created_at=row.created_at,
    )  # fmt: skip
    fresh = msgspec.structs.replace(record, id=str(uuid7()), cost=5)
    redis = Redis.from_url(redis_url)
    try:
        for queued in (record, fresh):
            await redis.xadd(usage_stream_key(tenant_a.id), {"record": msgspec.json.encode(queued)})
        await redis.sadd(USAGE_TENANTS_KEY, tenant_a.id.hex)
        await UsageFlusher(redis, session_maker).flush_once()
    finally:
        await redis.aclose()
    rows = await usage_rows(session_maker, tenant_a, 2)
    assert sorted(str(item.id) for item in rows) == sorted([record.id, fresh.id])
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert (await session.get_one(ApiToken, token_id_of(token))).used_quota == row.cost + 5


async def test_calls_go_on_when_redis_drops_its_connections_and_forgets_its_scripts(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
) -> None:
    """What a Redis restart looks like to a running worker: its idle connections closed, no scripts cached."""
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "primary")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    assert (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 200
    redis = Redis.from_url(redis_url)
    try:
        await redis.script_flush()
        assert await redis.client_kill_filter(_type="normal", skipme=True) >= 1
    finally:
        await redis.aclose()
    for _ in range(3):
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
        assert response.status_code == 200, response.text
    assert len(await usage_rows(session_maker, tenant_a, 4)) == 4


async def test_an_answer_reaches_the_client_even_when_its_settlement_fails(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders, redis_url: str
) -> None:
    """Settlement runs after the answer is sent: a Redis failure there is logged, not turned into a 500."""
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "primary")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    redis = Redis.from_url(redis_url)
    try:
        await redis.set(usage_stream_key(tenant_a.id), "not a stream")  # the settle script's XADD fails
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "w0 w1 w2 w3 w4"
        assert await redis.type(usage_stream_key(tenant_a.id)) == b"string"  # nothing was appended
    finally:
        await redis.delete(usage_stream_key(tenant_a.id))
        await redis.aclose()


async def test_streaming_passes_chunks_through_and_strips_usage_unless_asked(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "primary")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    plain = await client.post("/v1/chat/completions", json=chat_body(stream=True), headers=bearer(key))
    assert plain.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in plain.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [msgspec.json.decode(event) for event in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "w0 w1 w2 w3 w4 "
    assert all("usage" not in chunk for chunk in chunks)  # asked for on the client's behalf, kept back
    assert upstream.bodies[0][1]["stream_options"] == {"include_usage": True}

    asked = await client.post(
        "/v1/chat/completions", json=chat_body(stream=True, stream_options={"include_usage": True}), headers=bearer(key)
    )
    usage = [msgspec.json.decode(line[6:]) for line in asked.text.splitlines() if '"usage"' in line]
    assert usage[0]["usage"]["completion_tokens"] == 5


async def test_embeddings_and_models(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "chat", models=["gpt-test", "gpt-other"])
    await add_channel(client, admin, upstream, "embed", models=["embed-test"])
    key, _ = await issue_key(client, auth_headers(tenant_a.user), allowed_models=["gpt-test", "embed-test"])
    embedded = await client.post(
        "/v1/embeddings", json={"model": "embed-test", "input": ["a b", "c"]}, headers=bearer(key)
    )
    assert [item["index"] for item in embedded.json()["data"]] == [0, 1]
    models = await client.get("/v1/models", headers=bearer(key))
    assert [model["id"] for model in models.json()["data"]] == ["embed-test", "gpt-test"]  # not gpt-other


# --- failover and routing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "expected_cooldown"),
    [({"status": 500}, True), ({"hang_seconds": 5.0}, True), ({"status": 429}, True), ({"garbage": True}, True)],
    ids=["500", "timeout", "429", "garbage"],
)
async def test_failover_to_the_next_priority_tier(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    failure: dict[str, Any],
    expected_cooldown: bool,
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "first", priority=10)
    await add_channel(client, admin, upstream, "second", priority=5)
    upstream.behave("first", **failure)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    for _ in range(3):
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
        assert response.status_code == 200, response.text
        assert response.headers["x-lyss-channel"] == "second"
    # After its failure the first channel cools down: it is not tried again at once.
    assert upstream.calls["first"] == 1
    assert upstream.calls["second"] == 3


async def test_every_channel_failing_is_a_502_and_costs_nothing(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "broken")
    await set_price(client, admin, "*", 1_000_000, 1_000_000)
    upstream.behave("broken", garbage=True)
    key, token = await issue_key(client, auth_headers(tenant_a.user), quota=1_000_000)
    response = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
    assert response.status_code == 502
    assert error_of(response)["type"] == "upstream_error"
    rows = await usage_rows(session_maker, tenant_a, 1)
    assert [(row.outcome, row.cost, row.status_code) for row in rows] == [("upstream_error", 0, 502)]
    assert await redis_used(settings, tenant_a, token) == 0  # the reservation was released


async def redis_used(settings: Settings, tenant: TenantRows, token: dict[str, Any]) -> int:
    async with redis_at(settings.redis_url or "") as client:
        value = await client.get(GatewayLimits.token_used_key(tenant.id, UUID(token["id"])))
    return int(value or 0)


@pytest.mark.slow  # two thousand routed calls: a share within five points needs that many
async def test_channel_weights_reach_the_router_of_real_calls(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    # The exact split is tested on the router itself (tests/unit/test_routing.py); here the weights set through
    # the API must steer real calls: 400 calls at 3:1 put the heavy channel's share within 0.65 to 0.85 (a tolerance
    # of over 4.5 standard deviations), where unweighted routing would give 0.5.
    admin = auth_headers(tenant_a.admin)
    for name, weight in (("heavy", 3), ("light", 1)):
        response = await client.post(
            "/api/channels", json={"name": name, "type": "echo", "models": ["m"], "weight": weight}, headers=admin
        )
        assert response.status_code == 201, response.text
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    used: Counter[str] = Counter()
    for _ in range(400):
        response = await client.post("/v1/chat/completions", json=chat_body("m", max_tokens=1), headers=bearer(key))
        used[response.headers["x-lyss-channel"]] += 1
    assert sum(used.values()) == 400
    assert abs(used["heavy"] / 400 - 0.75) <= 0.1, used


async def test_bad_credentials_upstream_disable_the_channel_and_a_passing_test_enables_it(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    channel = await add_channel(client, admin, upstream, "revoked", priority=10)
    await add_channel(client, admin, upstream, "backup", priority=1)
    upstream.behave("revoked", status=401, error_code="invalid_api_key")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    assert (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 200
    listed = (await client.get(f"/api/channels/{channel['id']}", headers=admin)).json()
    assert listed["status"] == "auto_disabled"
    assert "credentials" in listed["status_reason"]
    async with tenant_session(session_maker, tenant_a.id) as session:
        actions = list(await session.scalars(select(AuditEvent.action)))
    assert "channel.auto_disabled" in actions

    failing = (await client.post(f"/api/channels/{channel['id']}/test", headers=admin)).json()
    assert (failing["ok"], failing["status"]) == (False, "auto_disabled")
    upstream.behave("revoked")  # the key was fixed at the provider
    passing = (await client.post(f"/api/channels/{channel['id']}/test", headers=admin)).json()
    assert (passing["ok"], passing["status"], passing["error"]) == (True, "enabled", None)
    assert passing["latency_ms"] >= 0
    upstream.calls.clear()
    response = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
    assert response.headers["x-lyss-channel"] == "revoked"


async def test_an_embeddings_only_channel_is_tested_with_an_embeddings_call_and_comes_back(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    channel = await add_channel(client, admin, upstream, "vectors", models=["embed-test"])
    assert channel["test_kind"] == "chat"
    upstream.behave("vectors", status=401, error_code="invalid_api_key")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    body = {"model": "embed-test", "input": "a b"}
    await client.post("/v1/embeddings", json=body, headers=bearer(key))
    assert (await client.get(f"/api/channels/{channel['id']}", headers=admin)).json()["status"] == "auto_disabled"

    upstream.behave("vectors", embeddings_only=True)  # the key was fixed; the account still serves no chat
    chat_probe = (await client.post(f"/api/channels/{channel['id']}/test", headers=admin)).json()
    assert (chat_probe["ok"], chat_probe["kind"], chat_probe["status"]) == (False, "chat", "auto_disabled")
    assert "404" in chat_probe["error"]

    changed = await client.patch(f"/api/channels/{channel['id']}", json={"test_kind": "embeddings"}, headers=admin)
    assert (changed.status_code, changed.json()["test_kind"]) == (200, "embeddings")
    upstream.bodies.clear()
    passing = (await client.post(f"/api/channels/{channel['id']}/test", headers=admin)).json()
    assert (passing["ok"], passing["kind"], passing["model"], passing["status"]) == (
        True, "embeddings", "embed-test", "enabled"
    )  # fmt: skip
    assert upstream.bodies == [("vectors", {"model": "embed-test", "input": "ping"})]  # one short input
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = await session.get_one(Channel, UUID(channel["id"]))
    assert (stored.status, stored.status_reason, stored.last_test_error, stored.test_kind) == (
        "enabled", None, None, "embeddings"
    )  # fmt: skip
    assert (await client.post("/v1/embeddings", json=body, headers=bearer(key))).status_code == 200


async def test_a_channel_whose_provider_has_no_embeddings_api_is_never_tested_with_embeddings(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    body = {"name": "claude", "type": "anthropic", "models": ["claude-test"], "keys": ["k"], "test_kind": "embeddings"}
    refused = await client.post("/api/channels", json=body, headers=admin)
    assert refused.status_code == 400, refused.text
    assert "test_kind" in refused.json()["detail"]
    assert "anthropic" in refused.json()["detail"]
    channel = await add_channel(client, admin, upstream, "claude", kind="anthropic", models=["claude-test"])
    changed = await client.patch(f"/api/channels/{channel['id']}", json={"test_kind": "embeddings"}, headers=admin)
    assert changed.status_code == 400, changed.text
    assert "test_kind" in changed.json()["detail"]
    async with tenant_session(session_maker, tenant_a.id) as session:
        rows = (await session.execute(select(Channel.name, Channel.test_kind))).all()
    assert rows == [("claude", "chat")]


async def test_a_non_retryable_upstream_rejection_is_passed_on(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "picky", priority=10)
    await add_channel(client, admin, upstream, "other", priority=1)
    upstream.behave("picky", status=400, error_code="invalid_request_error")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    response = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
    assert response.status_code == 400
    assert upstream.calls["other"] == 0  # another channel would refuse the same request


# --- limits ----------------------------------------------------------------------------------------


async def test_rpm_limit(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "primary")
    key, _ = await issue_key(client, auth_headers(tenant_a.user), rpm_limit=2)
    statuses = [
        (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    refused = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
    assert error_of(refused)["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_quota_refuses_what_the_balance_cannot_cover(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "primary")
    await set_price(client, admin, "gpt-test", 0, 1_000_000)  # one credit per completion token
    key, token = await issue_key(client, auth_headers(tenant_a.user), quota=25)
    ok = [await client.post("/v1/chat/completions", json=chat_body(max_tokens=10), headers=bearer(key))
          for _ in range(3)]  # fmt: skip
    # Each call reserves 10 (its max_tokens) and settles 5 (the mock answers five words).
    assert [response.status_code for response in ok] == [200, 200, 200]
    assert await redis_used(settings, tenant_a, token) == 15
    refused = await client.post("/v1/chat/completions", json=chat_body(max_tokens=20), headers=bearer(key))
    assert refused.status_code == 429
    assert error_of(refused)["code"] == "insufficient_quota"
    assert await redis_used(settings, tenant_a, token) == 15  # nothing reserved for a refused call


async def test_the_organization_budget_caps_all_its_keys_together(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "primary")
    await set_price(client, admin, "gpt-test", 0, 1_000_000)
    async with tenant_session(session_maker, tenant_a.id) as session:
        (await session.get_one(Organization, tenant_a.id)).quota = 15
        await session.commit()
    first, _ = await issue_key(client, auth_headers(tenant_a.user), name="first")
    second, _ = await issue_key(client, admin, name="second")
    assert (
        await client.post("/v1/chat/completions", json=chat_body(max_tokens=10), headers=bearer(first))
    ).status_code == 200
    refused = await client.post("/v1/chat/completions", json=chat_body(max_tokens=11), headers=bearer(second))
    assert refused.status_code == 429
    assert "organization" in error_of(refused)["message"]


async def test_counters_are_rebuilt_from_postgres_when_redis_is_emptied(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "primary")
    await set_price(client, admin, "gpt-test", 0, 1_000_000)
    key, token = await issue_key(client, auth_headers(tenant_a.user), quota=100)
    await client.post("/v1/chat/completions", json=chat_body(max_tokens=10), headers=bearer(key))
    await usage_rows(session_maker, tenant_a, 1)
    await asyncio.sleep(0.3)  # the flusher commits the quota totals with the rows
    async with redis_at(settings.redis_url or "") as redis:
        await redis.flushdb()
    await client.post("/v1/chat/completions", json=chat_body(max_tokens=10), headers=bearer(key))
    assert await redis_used(settings, tenant_a, token) == 10  # 5 from PostgreSQL + 5 settled now


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code_or_message"),
    [
        (b'{"model": "gpt-test", "messages": [', 400, "could not parse"),
        (b'["not", "an", "object"]', 400, "must be an object"),
        (b'{"model": "gpt-test"}', 400, "messages"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model"),
        (b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}', 404, "model_not_found"),
        (b'{"model": "gpt-secret", "messages": [{"role": "user", "content": "x"}]}', 403, "model_not_allowed"),
    ],
    ids=["malformed", "not-object", "no-messages", "no-model", "unknown-model", "model-not-allowed"],
)
async def test_bad_requests_get_openai_format_errors(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    body: bytes,
    status: int,
    code_or_message: str,
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "primary", models=["gpt-test", "gpt-secret"])
    key, _ = await issue_key(client, auth_headers(tenant_a.user), allowed_models=["gpt-test", "no-such-model"])
    response = await client.post(
        "/v1/chat/completions", content=body, headers={**bearer(key), "Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    error = error_of(response)
    assert code_or_message in (error["code"] or "") + error["message"]
    assert upstream.calls["primary"] == 0


async def test_body_size_content_type_and_keys(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "primary")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    missing = await client.post("/v1/chat/completions", json=chat_body())
    wrong = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer("sk-lyss-not-a-real-key"))
    assert [error_of(r)["code"] for r in (missing, wrong)] == ["invalid_api_key", "invalid_api_key"]
    assert missing.status_code == wrong.status_code == 401
    text = await client.post(
        "/v1/chat/completions", content=b"hello", headers={**bearer(key), "Content-Type": "text/plain"}
    )
    assert text.status_code == 400
    assert "application/json" in error_of(text)["message"]
    small = msgspec.structs.replace(settings, max_request_body_bytes=2048)
    async with app_client(small) as limited:
        big = await limited.post("/v1/chat/completions", json=chat_body(text="x " * 4000), headers=bearer(key))
    assert big.status_code == 413
    assert error_of(big)["code"] == "request_too_large"
    assert upstream.calls["primary"] == 0


async def test_wrong_methods_and_unknown_paths_under_v1(client: Client, tenant_a: TenantRows) -> None:
    wrong = await client.get("/v1/chat/completions")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert error_of(wrong)["type"] == "invalid_request_error"
    anthropic = await client.get("/v1/messages")
    assert anthropic.status_code == 405
    assert anthropic.json()["type"] == "error"  # Anthropic's shape on its endpoint
    unknown = await client.post("/v1/completions-of-another-kind", json={})
    assert unknown.status_code == 404
    assert "x-request-id" in unknown.headers


async def test_expired_revoked_and_disabled_keys_and_ip_allow_list(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    user = auth_headers(tenant_a.user)
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "primary")
    soon = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)).isoformat()
    expiring, _ = await issue_key(client, user, name="expiring", expires_at=soon)
    revoked, revoked_token = await issue_key(client, user, name="revoked")
    disabled, disabled_token = await issue_key(client, user, name="disabled")
    fenced, _ = await issue_key(client, user, name="fenced", allowed_ips=["10.0.0.0/8"])
    await client.delete(f"/api/tokens/{revoked_token['id']}", headers=user)
    await client.patch(f"/api/tokens/{disabled_token['id']}", json={"status": "disabled"}, headers=user)
    await asyncio.sleep(1.1)
    for key, status, words in ((expiring, 401, "expired"), (revoked, 401, "Incorrect"), (disabled, 401, "disabled"),
                               (fenced, 403, "address")):  # fmt: skip
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
        assert response.status_code == status
        assert words in error_of(response)["message"]


async def test_a_disabled_channel_takes_no_calls(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    channel = await add_channel(client, admin, upstream, "primary")
    await client.post(f"/api/channels/{channel['id']}/disable", headers=admin)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    response = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
    assert response.status_code == 404
    assert error_of(response)["code"] == "model_not_found"
    assert upstream.calls["primary"] == 0


# --- tenancy ---------------------------------------------------------------------------------------


async def test_a_key_of_tenant_a_never_reaches_a_channel_of_tenant_b(
    client: Client,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    b_channel = await add_channel(client, auth_headers(tenant_b.admin), upstream, "b-only", models=["shared-model"])
    # A names B's channel id in its key's allowed channels: it is not A's to allow.
    refused = await client.post(
        "/api/tokens", json={"name": "x", "allowed_channels": [b_channel["id"]]}, headers=auth_headers(tenant_a.user)
    )
    assert refused.status_code == 400
    # A key whose row names it anyway (written before keys were checked) still never reaches it.
    key, token = await issue_key(client, auth_headers(tenant_a.user))
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(
            update(ApiToken).where(ApiToken.id == UUID(token["id"])).values(allowed_channels=[b_channel["id"]])
        )
        await session.commit()
    response = await client.post("/v1/chat/completions", json=chat_body("shared-model"), headers=bearer(key))
    assert response.status_code == 404
    assert upstream.calls["b-only"] == 0
    seen_by_a = await client.get(f"/api/channels/{b_channel['id']}", headers=auth_headers(tenant_a.admin))
    assert seen_by_a.status_code == 404
    tested_by_a = await client.post(f"/api/channels/{b_channel['id']}/test", headers=auth_headers(tenant_a.admin))
    assert tested_by_a.status_code == 404


async def test_a_key_may_allow_only_channels_of_its_own_organization(
    client: Client,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    own = await add_channel(client, admin, upstream, "own")
    foreign = await add_channel(client, auth_headers(tenant_b.admin), upstream, "foreign")
    for stranger in (foreign["id"], str(uuid7())):
        body = {"name": "fenced", "allowed_channels": [own["id"], stranger]}
        refused = await client.post("/api/tokens", json=body, headers=admin)
        assert refused.status_code == 400, refused.text
        detail = refused.json()["detail"]
        assert "allowed_channels" in detail
        assert stranger in detail
        assert own["id"] not in detail
    _, token = await issue_key(client, admin, name="fenced", allowed_channels=[own["id"]])
    assert token["allowed_channels"] == [own["id"]]
    changed = await client.patch(
        f"/api/tokens/{token['id']}", json={"allowed_channels": [foreign["id"]]}, headers=admin
    )
    assert changed.status_code == 400, changed.text
    assert foreign["id"] in changed.json()["detail"]
    async with tenant_session(session_maker, tenant_a.id) as session:
        rows = (await session.execute(select(ApiToken.name, ApiToken.allowed_channels))).all()
    assert rows == [("fenced", [own["id"]])]


async def test_personal_and_group_channels(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "mine", models=["personal-model"], scope="personal",
                      owner_id=str(tenant_a.user.id))  # fmt: skip
    await add_channel(client, admin, upstream, "team", models=["team-model"], scope="group",
                      group_id=str(tenant_a.group.id))  # fmt: skip
    user_key, _ = await issue_key(client, auth_headers(tenant_a.user))
    admin_key, _ = await issue_key(client, admin)
    assert (await client.post("/v1/chat/completions", json=chat_body("personal-model"),
                              headers=bearer(user_key))).status_code == 200  # fmt: skip
    assert (await client.post("/v1/chat/completions", json=chat_body("personal-model"),
                              headers=bearer(admin_key))).status_code == 404  # fmt: skip
    assert (await client.post("/v1/chat/completions", json=chat_body("team-model"),
                              headers=bearer(user_key))).status_code == 404  # fmt: skip
    from db.tenant import UserGroupMember

    async with tenant_session(session_maker, tenant_a.id) as session:
        session.add(UserGroupMember(group_id=tenant_a.group.id, user_id=tenant_a.user.id))
        await session.commit()
    assert (await client.post("/v1/chat/completions", json=chat_body("team-model"),
                              headers=bearer(user_key))).status_code == 200  # fmt: skip


# --- management API -------------------------------------------------------------------------------


async def test_keys_are_shown_once_stored_hashed_and_users_see_only_their_own(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key, token = await issue_key(client, auth_headers(tenant_a.user))
    assert key.startswith("sk-lyss-")
    assert len(key) > 40
    fetched = (await client.get(f"/api/tokens/{token['id']}", headers=auth_headers(tenant_a.user))).json()
    assert key not in str(fetched)
    assert fetched["key_prefix"] == key[:14]
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = await session.get_one(ApiToken, UUID(token["id"]))
    assert key not in (stored.key_hash, stored.key_prefix)
    assert len(stored.key_hash) == 64
    admin_key, _ = await issue_key(client, auth_headers(tenant_a.admin), name="admin key")
    user_view = (await client.get("/api/tokens", headers=auth_headers(tenant_a.user))).json()
    admin_view = (await client.get("/api/tokens", headers=auth_headers(tenant_a.admin))).json()
    assert [t["name"] for t in user_view] == ["test key"]
    assert sorted(t["name"] for t in admin_view) == ["admin key", "test key"]
    admins_token = next(t for t in admin_view if t["name"] == "admin key")
    peek = await client.get(f"/api/tokens/{admins_token['id']}", headers=auth_headers(tenant_a.user))
    assert peek.status_code == 404
    for_someone_else = await client.post(
        "/api/tokens", json={"name": "x", "user_id": str(tenant_a.admin.id)}, headers=auth_headers(tenant_a.user)
    )
    assert for_someone_else.status_code == 404
    assert admin_key != key


async def test_channel_keys_are_encrypted_and_never_shown(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    channel = await add_channel(client, auth_headers(tenant_a.admin), upstream, "secretive")
    assert channel["key_count"] == 1
    assert "key-of-secretive" not in str(channel)
    async with tenant_session(session_maker, tenant_a.id) as session:
        raw = (await session.execute(select(Channel.encrypted_keys))).scalar_one()
    assert raw.startswith("v1:")
    assert "key-of-secretive" not in raw
    end_user = await client.get("/api/channels", headers=auth_headers(tenant_a.user))
    assert end_user.status_code == 403


async def test_usage_api_filters_pages_and_aggregates(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await client.post("/api/channels", json={"name": "echo", "type": "echo", "models": ["m", "n"]}, headers=admin)
    user_key, _ = await issue_key(client, auth_headers(tenant_a.user))
    admin_key, _ = await issue_key(client, admin, name="admin key")
    for model in ("m", "m", "n"):
        await client.post("/v1/chat/completions", json=chat_body(model), headers=bearer(user_key))
    await client.post("/v1/chat/completions", json=chat_body("m"), headers=bearer(admin_key))
    await usage_rows(session_maker, tenant_a, 4)
    first = (await client.get("/api/usage", params={"limit": 2}, headers=admin)).json()
    second = (await client.get("/api/usage", params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin)).json()
    assert len(first["items"]) == len(second["items"]) == 2
    assert second["next_cursor"] is None
    ids = [item["id"] for item in first["items"] + second["items"]]
    assert len(set(ids)) == 4
    times = [item["created_at"] for item in first["items"] + second["items"]]
    assert times == sorted(times, reverse=True)
    only_n = (await client.get("/api/usage", params={"model": "n"}, headers=admin)).json()
    assert [item["model"] for item in only_n["items"]] == ["n"]
    mine = (await client.get("/api/usage", headers=auth_headers(tenant_a.user))).json()
    assert len(mine["items"]) == 3  # a user sees their own calls only
    daily = (await client.get("/api/usage/daily", headers=admin)).json()
    assert len(daily) == 1
    assert daily[0]["requests"] == 4
    assert daily[0]["errors"] == 0


async def test_a_revoked_key_stops_at_once_in_every_worker_despite_caching(
    settings: Settings, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    cached = msgspec.structs.replace(settings, gateway_cache_seconds=300.0)
    async with app_client(cached) as worker_one, app_client(cached) as worker_two:
        await add_channel(worker_one, auth_headers(tenant_a.admin), upstream, "primary")
        key, token = await issue_key(worker_one, auth_headers(tenant_a.user))
        for worker in (worker_one, worker_two):  # both now hold the key in their caches
            assert (await worker.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 200
        await worker_one.delete(f"/api/tokens/{token['id']}", headers=auth_headers(tenant_a.user))
        assert (await worker_one.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 401
        # The other worker hears of it over Redis pub/sub within its half-second poll.
        for _ in range(40):
            status = (await worker_two.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code
            if status == 401:
                break
            await asyncio.sleep(0.05)
        assert status == 401


async def test_azure_channels_call_the_deployment_url_with_an_api_key_header(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    await add_channel(
        client,
        auth_headers(tenant_a.admin),
        upstream,
        "azure",
        kind="azure-openai",
        base_url=upstream.base_url("azure").removesuffix("/v1"),
        model_mapping={"gpt-test": "my-deployment"},
        api_version="2024-10-21",
    )
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    response = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
    assert response.status_code == 200, response.text
    seen = upstream.headers_seen[0]
    assert seen["path_qs"] == "/azure/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    assert seen["api-key"] == "key-of-azure"
    assert "Authorization" not in seen


async def test_a_channel_whose_keys_cannot_be_decrypted_is_left_out_and_the_others_serve(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    broken = await add_channel(client, admin, upstream, "broken", models=["gpt-test"], priority=9)
    await add_channel(client, admin, upstream, "sound", models=["gpt-test"], priority=1)
    # As if written under encryption keys this process does not have (a restore with the wrong keys).
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(
            update(Channel).where(Channel.id == UUID(broken["id"])).values(encrypted_keys="v1:gone:x")
        )
        await session.commit()
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    answered = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
    assert answered.status_code == 200, answered.text
    assert answered.headers["x-lyss-channel"] == "sound"
    assert upstream.calls["broken"] == 0


async def test_an_embeddings_call_the_key_cannot_afford_is_told_to_send_less_input_not_fewer_output_tokens(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "embed-budget", models=["embed-priced"])
    await set_price(client, admin, "embed-priced", 2_000_000_000, 0)
    key, _ = await issue_key(client, auth_headers(tenant_a.user), quota=1_000)
    response = await client.post(
        "/v1/embeddings", json={"model": "embed-priced", "input": ["a few words to embed"]}, headers=bearer(key)
    )
    assert response.status_code == 429, response.text
    message = response.json()["error"]["message"]
    assert "send fewer or shorter inputs" in message
    assert "output tokens" not in message
    assert upstream.calls["embed-budget"] == 0
