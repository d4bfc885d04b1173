"""Migration 0029 on a database that has calls: the rollups it makes are the sums of every tenant's calls."""

from __future__ import annotations

import datetime
import os
from uuid import UUID

import asyncpg
from uuid_utils.compat import uuid7

from app.gateway.rollups import DAILY_KINDS, HOURLY_KINDS
from db.bootstrap import plain_url
from db.migrations import upgrade_to_head
from db.provider import UsageLog
from tests.support.policies import database_at_revision
from tests.support.rollups import expected_rollups

_COLUMNS = (
    "id", "tenant_id", "user_id", "token_id", "endpoint", "model", "prompt_tokens", "completion_tokens",
    "cached_tokens", "cost", "overshoot", "latency_ms", "status_code", "created_at",
)  # fmt: skip


async def test_the_migration_sums_the_calls_already_logged(postgres_superuser_url: str) -> None:
    name = f"lyss_rollup_migration_{os.getpid()}"
    async with database_at_revision(postgres_superuser_url, name, "0028") as urls:
        now = datetime.datetime.now(datetime.UTC)
        tenants, user, key = [uuid7(), uuid7()], uuid7(), uuid7()
        calls = [
            UsageLog(id=uuid7(), tenant_id=tenant, user_id=owner, token_id=token, endpoint="chat", model=model,
                     prompt_tokens=3, completion_tokens=4, cached_tokens=1, cost=cost, overshoot=2, latency_ms=90,
                     status_code=status, created_at=now - back)
            for tenant in tenants
            for owner, token, model, cost, status, back in [
                (user, key, "a", 10, 200, datetime.timedelta(minutes=1)),
                (user, key, "a", 20, 200, datetime.timedelta(minutes=2)),
                (user, None, "b", 0, 429, datetime.timedelta(hours=5)),
                (None, None, "a", 0, 502, datetime.timedelta(days=2)),
                (user, key, "b", 30, 200, datetime.timedelta(days=70)),
            ]
        ]  # fmt: skip
        superuser = await asyncpg.connect(plain_url(postgres_superuser_url, name))
        try:
            for tenant in tenants:
                await superuser.execute(
                    "INSERT INTO tenant_organizations (id, slug, name) VALUES ($1, $2, 'T')", tenant, tenant.hex
                )
            await superuser.executemany(
                f"INSERT INTO provider_usage_logs ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join(f'${n}' for n in range(1, len(_COLUMNS) + 1))})",
                [tuple(getattr(call, column) for column in _COLUMNS) for call in calls],
            )
            await upgrade_to_head(urls.owner_url)
            found = {}
            for table in ("provider_usage_hourly", "provider_usage_daily"):
                rows = await superuser.fetch(
                    "SELECT tenant_id, kind, start, user_id, token_id, model, calls, errors, prompt_tokens, "
                    f"completion_tokens, cached_tokens, cost, overshoot, latency_ms_sum FROM {table}"
                )
                found[table] = {
                    (UUID(str(row[0])), row[1], row[2], UUID(str(row[3])), UUID(str(row[4])), row[5]): tuple(row[6:])
                    for row in rows
                }
            forced = await superuser.fetchval(
                "SELECT bool_and(relforcerowsecurity) FROM pg_class "
                "WHERE relname IN ('provider_usage_logs', 'provider_usage_hourly', 'provider_usage_daily')"
            )
        finally:
            await superuser.close()
        for table, unit, kinds in (
            ("provider_usage_hourly", "hour", HOURLY_KINDS),
            ("provider_usage_daily", "day", DAILY_KINDS),
        ):
            expected = {}
            for tenant in tenants:
                mine = [call for call in calls if call.tenant_id == tenant]
                for key_of, sums in expected_rollups(mine, unit, kinds).items():
                    expected[(tenant, *key_of)] = sums
            assert found[table] == expected, table
        assert forced is True
