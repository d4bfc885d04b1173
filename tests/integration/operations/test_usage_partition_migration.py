"""Migration 0028 on a database that has calls: every row reaches its month's partition, under the log's RLS."""

from __future__ import annotations

import datetime
import os

import asyncpg
from uuid_utils.compat import uuid7

from db.bootstrap import plain_url
from db.migrations import upgrade_to_head
from tests.support.policies import database_at_revision


async def test_the_calls_of_an_existing_log_are_all_copied_into_their_months(postgres_superuser_url: str) -> None:
    name = f"lyss_migration_{os.getpid()}"
    async with database_at_revision(postgres_superuser_url, name, "0026") as urls:
        now = datetime.datetime.now(datetime.UTC)
        earlier = now - datetime.timedelta(days=70)
        tenant_id = uuid7()
        superuser = await asyncpg.connect(plain_url(postgres_superuser_url, name))
        try:
            await superuser.execute(
                "INSERT INTO tenant_organizations (id, slug, name) VALUES ($1, 'moved', 'Moved')", tenant_id
            )
            for moment in (now, earlier, earlier):
                await superuser.execute(
                    "INSERT INTO provider_usage_logs (id, tenant_id, endpoint, model, cost, created_at) "
                    "VALUES ($1, $2, 'chat', 'm', 7, $3)",
                    uuid7(),
                    tenant_id,
                    moment,
                )
            await upgrade_to_head(urls.owner_url)
            placed = await superuser.fetch(
                "SELECT tableoid::regclass::text AS partition, count(*) FROM provider_usage_logs GROUP BY 1"
            )
            kind = await superuser.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'provider_usage_logs'")
            forced = await superuser.fetchval(
                "SELECT relforcerowsecurity FROM pg_class WHERE relname = 'provider_usage_logs'"
            )
        finally:
            await superuser.close()
        assert kind == "p"
        assert forced is True
        assert dict(placed) == {f"provider_usage_logs_{now:%Y%m}": 1, f"provider_usage_logs_{earlier:%Y%m}": 2}
