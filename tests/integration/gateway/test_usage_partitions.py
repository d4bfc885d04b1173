"""The usage log's monthly partitions: where calls land, the worker's partitions ahead, retention, keyset pages."""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.gateway.admin import UsageFilter, usage_rows
from app.gateway.tasks import USAGE_PARTITIONS_AHEAD, make_usage_partitions
from app.jobs.registry import WorkerServices
from db.bootstrap import DatabaseUrls
from db.migrations import drop_expired_usage_partitions
from db.provider import UsageLog
from db.session import tenant_session
from tests.support.tenants import TenantRows


def _month(now: datetime.datetime, months: int) -> datetime.datetime:
    index = now.year * 12 + now.month - 1 + months
    return datetime.datetime(index // 12, index % 12 + 1, 1, tzinfo=datetime.UTC)


def _partition(month: datetime.datetime) -> str:
    return f"provider_usage_logs_{month:%Y%m}"


async def _partitions(owner_engine: AsyncEngine) -> set[str]:
    async with owner_engine.connect() as connection:
        found = await connection.execute(
            text(
                "SELECT c.relname FROM pg_inherits JOIN pg_class c ON c.oid = pg_inherits.inhrelid "
                "WHERE pg_inherits.inhparent = 'public.provider_usage_logs'::regclass"
            )
        )
        return set(found.scalars())


async def test_calls_land_in_their_months_partition_or_the_default_one(
    session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows, superuser_connection: Any
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    long_ago = _month(now, -40)
    async with tenant_session(session_maker, tenant_a.id) as session:
        session.add_all(
            [
                UsageLog(endpoint="chat", model="recent", created_at=now),
                UsageLog(endpoint="chat", model="old", created_at=long_ago),
            ]
        )
        await session.commit()
    placed = dict(
        await superuser_connection.fetch(
            "SELECT model, tableoid::regclass::text FROM provider_usage_logs WHERE tenant_id = $1", tenant_a.id
        )
    )
    assert placed == {"recent": _partition(now), "old": "provider_usage_logs_default"}
    async with tenant_session(session_maker, tenant_a.id) as session:
        rows, _ = await usage_rows(session, UsageFilter(), cursor=None, limit=10)
    assert [row.model for row in rows] == ["recent", "old"]


async def test_the_worker_makes_the_missing_months_ahead(
    worker_services: WorkerServices, owner_engine: AsyncEngine
) -> None:
    last = _partition(_month(datetime.datetime.now(datetime.UTC), USAGE_PARTITIONS_AHEAD))
    async with owner_engine.begin() as connection:
        await connection.execute(text(f"DROP TABLE {last}"))
    assert last not in await _partitions(owner_engine)
    assert await make_usage_partitions(worker_services) == {"made": 1}
    assert last in await _partitions(owner_engine)
    assert await make_usage_partitions(worker_services) == {"made": 0}


async def test_retention_drops_only_the_months_past_it(database: DatabaseUrls, owner_engine: AsyncEngine) -> None:
    now = datetime.datetime.now(datetime.UTC)
    kept, expired = _month(now, -13), _month(now, -14)
    async with owner_engine.begin() as connection:
        for month in (kept, expired):
            await connection.execute(
                text(
                    f"CREATE TABLE {_partition(month)} PARTITION OF provider_usage_logs "
                    f"FOR VALUES FROM ('{month.isoformat()}') TO ('{_month(month, 1).isoformat()}')"
                )
            )
    try:
        assert await drop_expired_usage_partitions(database.owner_url, 0) == []
        assert await drop_expired_usage_partitions(database.owner_url, 13) == [_partition(expired)]
        remaining = await _partitions(owner_engine)
        assert _partition(kept) in remaining
        assert _partition(now) in remaining
        assert _partition(expired) not in remaining
    finally:
        async with owner_engine.begin() as connection:
            await connection.execute(text(f"DROP TABLE IF EXISTS {_partition(kept)}"))


async def test_keyset_pages_return_every_call_once_across_equal_times(
    session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows
) -> None:
    moment = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    async with tenant_session(session_maker, tenant_a.id) as session:
        session.add_all(
            UsageLog(endpoint="chat", model=f"m{number}", created_at=moment - datetime.timedelta(seconds=number // 4))
            for number in range(23)
        )
        await session.commit()
    seen: list[str] = []
    cursor = None
    async with tenant_session(session_maker, tenant_a.id) as session:
        while True:
            rows, cursor = await usage_rows(session, UsageFilter(), cursor=cursor, limit=5)
            seen += [row.model for row in rows]
            if cursor is None:
                break
    assert sorted(seen) == sorted(f"m{number}" for number in range(23))
    assert len(seen) == 23
