"""Runs the alembic migrations as the owner role, then the policies in `policies/`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.attributes["connection"] = connection
    return config


async def upgrade_to_head(owner_url: str) -> None:
    """Bring the schema to the newest revision in one transaction: all of it lands, or none."""
    engine = create_async_engine(owner_url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "head"))
    finally:
        await engine.dispose()


async def drop_expired_usage_partitions(owner_url: str, retention_months: int) -> list[str]:
    """Drop the usage log's monthly partitions older than `retention_months` whole months (0: none), as the
    owner role: dropping a partition is DDL, which the app role may not do."""
    if retention_months <= 0:
        return []
    engine = create_async_engine(owner_url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            dropped = await connection.execute(
                text("SELECT public.drop_usage_log_partitions(:months)"), {"months": retention_months}
            )
            return list(dropped.scalars())
    finally:
        await engine.dispose()
