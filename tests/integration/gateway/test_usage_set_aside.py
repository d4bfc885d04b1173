"""A usage record the database refuses, or that cannot be read, is set aside in its tenant's dead-letter stream
instead of holding up that tenant's usage log forever; a tenant whose records cannot be flushed at all does not
hold up the others'."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.gateway.engine import UsageRecord
from app.gateway.limits import USAGE_TENANTS_KEY, usage_stream_key
from app.gateway.usage import UsageFlusher
from db.provider import UsageLog
from db.session import tenant_session
from tests.support.tenants import TenantRows


def record(tenant: TenantRows, **fields: object) -> UsageRecord:
    values: dict[str, object] = {
        "id": str(uuid7()),
        "tenant_id": str(tenant.id),
        "user_id": str(tenant.user.id),
        "token_id": str(uuid7()),
        "channel_id": str(uuid7()),
        "request_id": f"req-{uuid7().hex[-8:]}",
        "endpoint": "chat",
        "model": "gpt-test",
        "upstream_model": "gpt-test",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "cost": 0,
        "latency_ms": 1,
        "upstream_latency_ms": 1,
        "status_code": 200,
        "outcome": "ok",
        "stream": False,
        "created_at": datetime.datetime.now(datetime.UTC),
    }
    return UsageRecord(**{**values, **fields})  # type: ignore[arg-type]


async def written_ids(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, expected: int) -> set[str]:
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        async with tenant_session(session_maker, tenant.id) as session:
            ids = {str(row) for row in await session.scalars(select(UsageLog.id))}
        if len(ids) >= expected or asyncio.get_running_loop().time() > deadline:
            return ids
        await asyncio.sleep(0.1)


async def test_refused_and_unreadable_records_are_set_aside_and_the_rest_written(
    redis_url: str,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    good = [record(tenant_a) for _ in range(5)]
    # Longer than the column allows: PostgreSQL refuses it (22001) in whichever batch it comes.
    refused = record(tenant_a, outcome="x" * 40)
    others = [record(tenant_b) for _ in range(3)]
    redis = Redis.from_url(redis_url)
    key_a, key_b = usage_stream_key(tenant_a.id), usage_stream_key(tenant_b.id)
    try:
        for item in (*good[:2], refused, *good[2:]):
            await redis.xadd(key_a, {"record": msgspec.json.encode(item)})
        await redis.xadd(key_a, {"record": b"{not json"})
        for item in others:
            await redis.xadd(key_b, {"record": msgspec.json.encode(item)})
        await redis.sadd(USAGE_TENANTS_KEY, tenant_a.id.hex, tenant_b.id.hex)
        await UsageFlusher(redis, session_maker).flush_once()

        assert await written_ids(session_maker, tenant_a, 5) == {item.id for item in good}
        assert await written_ids(session_maker, tenant_b, 3) == {item.id for item in others}
        assert await redis.xlen(key_a) == 0
        aside: Any = await redis.xrange(f"{key_a}:set-aside")
        kept = {fields[b"reason"].decode(): fields[b"record"] for _, fields in aside}
        assert len(kept) == 2
        [(refusal, refused_record)] = [(reason, raw) for reason, raw in kept.items() if "Truncation" in reason]
        assert "value too long" in refusal
        assert msgspec.json.decode(refused_record)["id"] == refused.id
        assert [raw for reason, raw in kept.items() if reason.startswith("unreadable record")] == [b"{not json"]
    finally:
        await redis.aclose()


async def test_a_tenant_whose_stream_cannot_be_read_does_not_stop_the_others(
    redis_url: str,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    others = [record(tenant_b) for _ in range(3)]
    redis = Redis.from_url(redis_url)
    try:
        await redis.set(usage_stream_key(tenant_a.id), "not a stream")
        for item in others:
            await redis.xadd(usage_stream_key(tenant_b.id), {"record": msgspec.json.encode(item)})
        await redis.sadd(USAGE_TENANTS_KEY, tenant_a.id.hex, tenant_b.id.hex)
        with pytest.raises(Exception, match="WRONGTYPE"):
            await UsageFlusher(redis, session_maker).flush_once()
        assert await written_ids(session_maker, tenant_b, 3) == {item.id for item in others}
    finally:
        await redis.delete(usage_stream_key(tenant_a.id))
        await redis.aclose()
