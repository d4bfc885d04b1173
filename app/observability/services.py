"""Readiness checks of the service's dependencies, each bounded in time."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.observability.logging import get_logger
from app.observability.schemas import Readiness

CHECK_TIMEOUT_SECONDS = 2.0

logger = get_logger("lyss.readiness")


async def _check_postgres(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _check_redis(client: Redis) -> None:
    await client.ping()


async def _run_check(name: str, check: Coroutine[Any, Any, None]) -> str:
    try:
        await asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        logger.warning("readiness check timed out", dependency=name)
        return "timeout"
    except Exception as error:
        # Whatever the failure, the dependency is not ready; the reason goes to the log, not the client.
        logger.warning("readiness check failed", dependency=name, error=f"{type(error).__name__}: {error}")
        return "unreachable"
    return "ok"


async def check_readiness(engine: AsyncEngine, redis: Redis) -> Readiness:
    postgres, redis_status = await asyncio.gather(
        _run_check("postgres", _check_postgres(engine)), _run_check("redis", _check_redis(redis))
    )
    checks = {"postgres": postgres, "redis": redis_status}
    status: Literal["ok", "unavailable"] = "ok" if all(result == "ok" for result in checks.values()) else "unavailable"
    return Readiness(status=status, checks=checks)
