"""Emptying the tenant tables between tests, as a superuser (the one role that sees every tenant's rows)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from db.models import Base

# Tenant data only, children first: platform tables (provider_types) hold the migrations' seed rows.
TENANT_TABLES = [
    table.name
    for table in reversed(Base.metadata.sorted_tables)
    if "tenant_id" in table.c or table.name == "tenant_organizations"
]
_DELETE_EVERY_TENANT_ROW = f"LOCK TABLE {', '.join(TENANT_TABLES)} IN EXCLUSIVE MODE NOWAIT; " + "; ".join(
    f"DELETE FROM {table}" for table in TENANT_TABLES
)


async def delete_tenant_rows(superuser_connection: Any) -> None:
    """Delete every tenant's rows, once no write is under way.

    A test writes a handful of rows: deleting them costs a tenth of what truncating every table does. The
    lock holds off background writes (the test process's usage flusher) until the tables are empty; it is
    taken without waiting, and tried again, so that it never deadlocks with a write half done.
    """
    for _ in range(500):
        try:
            async with superuser_connection.transaction():
                await superuser_connection.execute(_DELETE_EVERY_TENANT_ROW)
            return
        except asyncpg.LockNotAvailableError:
            await asyncio.sleep(0.01)
    raise AssertionError("the tenant tables stayed locked for 5 s: a test left a transaction open")
