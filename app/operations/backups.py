"""The scheduled backup: `lyss backup` on the worker's cron (LYSS_BACKUP_CRON), the last LYSS_BACKUP_KEEP kept."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from app.backup import BACKUP_PREFIX, BackupError, backup
from app.jobs.registry import WorkerServices, scheduled
from app.observability.logging import get_logger
from app.settings import Settings
from app.storage import ObjectStore, StorageError

logger = get_logger("lyss.backup")

# Apart from `lyss backup`'s own archives, which retention never touches.
SCHEDULED_PREFIX = f"{BACKUP_PREFIX}scheduled/"
# The last success and the failure count, in Redis so that /metrics of any API process can show them.
STATUS_KEY = "lyss:backup:status"
BACKUP_TIMEOUT_SECONDS = 6 * 3600


def backup_schedule(settings: Settings) -> str | None:
    # Without a role that can read every row there is nothing pg_dump could do: not scheduled at all.
    return settings.backup_cron if settings.backup_database_url else None


@scheduled("platform.backup", cron=backup_schedule, timeout_seconds=BACKUP_TIMEOUT_SECONDS)
async def scheduled_backup(services: WorkerServices) -> dict[str, Any]:
    return await run_scheduled_backup(services.objects, services.redis, services.settings)


async def run_scheduled_backup(store: ObjectStore, redis: Redis, settings: Settings) -> dict[str, Any]:
    """Back up into the store, delete all but the newest `backup_keep` scheduled archives, record the result."""
    started = time.monotonic()
    try:
        if not settings.backup_database_url:
            raise BackupError("LYSS_BACKUP_DATABASE_URL is not set.")
        archive = await backup(store, settings.backup_database_url, prefix=SCHEDULED_PREFIX)
        removed = await keep_newest(store, settings.backup_keep)
    # Whatever went wrong must be counted and logged, not lost in the queue; only our own messages are shown,
    # since another exception's text could quote the database URL and its password.
    except Exception as error:
        reason = str(error) if isinstance(error, (BackupError, StorageError)) else type(error).__name__
        await redis.hincrby(STATUS_KEY, "failures", 1)
        logger.error("scheduled backup failed", reason=reason)
        return {"ok": False, "error": reason}
    duration = round(time.monotonic() - started, 3)
    await redis.hset(
        STATUS_KEY,
        mapping={"last_success": time.time(), "name": archive.name, "size": archive.size, "duration": duration},
    )
    logger.info("scheduled backup stored", name=archive.name, size=archive.size, duration_seconds=duration)
    return {"ok": True, "name": archive.name, "size": archive.size, "duration_seconds": duration, "removed": removed}


async def keep_newest(store: ObjectStore, keep: int) -> list[str]:
    """Delete the scheduled archives older than the newest `keep` (names sort by time); return their names."""
    names = await store.names(None, SCHEDULED_PREFIX)
    stale = names[:-keep]
    for name in stale:
        await store.delete(None, name)
    return stale


async def backup_status(redis: Redis) -> dict[str, str]:
    status = await redis.hgetall(STATUS_KEY)
    return {
        (key.decode() if isinstance(key, bytes) else key): (value.decode() if isinstance(value, bytes) else value)
        for key, value in status.items()
    }
