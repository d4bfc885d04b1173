"""Who writes the usage log: `lyss worker` runs the flusher; an API process only says when none does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
from redis.asyncio import Redis

from app.gateway import usage
from app.gateway.usage import HEARTBEAT_KEY, HEARTBEAT_SECONDS, warn_without_usage_writer
from app.settings import Settings
from tests.support.clients import app_client
from tests.support.jobs import running_worker


@pytest.fixture
async def quiet_redis(redis_url: str) -> AsyncIterator[Redis]:
    """A database of the suite's Redis that no flusher heartbeats in (the suite's own flusher uses database 0)."""
    client = Redis.from_url(f"{redis_url}?db=7")
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


class Recorder:
    """Stands in for the module's logger: which levels and events the watcher under test logged, in order.

    The process's shared app runs a watcher of its own, which logs through the same module logger: only what
    is logged from the task under test counts."""

    def __init__(self) -> None:
        self.logged: list[tuple[asyncio.Task[object] | None, str, str]] = []
        self.task: asyncio.Task[None] | None = None

    @property
    def entries(self) -> list[tuple[str, str]]:
        return [(level, event) for task, level, event in self.logged if task is self.task]

    def warning(self, event: str, **_: object) -> None:
        self.logged.append((asyncio.current_task(), "warning", event))

    def info(self, event: str, **_: object) -> None:
        self.logged.append((asyncio.current_task(), "info", event))


async def test_an_api_process_warns_while_no_worker_writes_usage_and_says_when_one_does(
    quiet_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = Recorder()
    monkeypatch.setattr(usage, "logger", logged)
    stop = asyncio.Event()
    watch = logged.task = asyncio.create_task(
        warn_without_usage_writer(quiet_redis, stop, grace_seconds=0.05, every_seconds=0.1)
    )
    await asyncio.sleep(0.35)  # the first look and two more: one warning, not one per look
    assert [level for level, _ in logged.entries] == ["warning"]
    assert logged.entries[0][1].startswith("usage is not being written: no lyss worker runs the usage flusher")
    await quiet_redis.set(HEARTBEAT_KEY, "worker-1", ex=HEARTBEAT_SECONDS)
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(watch, 1)
    assert logged.entries[1:] == [("info", "usage is being written again: a lyss worker runs the usage flusher")]


async def test_a_heartbeat_missed_at_one_look_only_is_no_alarm(
    quiet_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = Recorder()
    monkeypatch.setattr(usage, "logger", logged)
    stop = asyncio.Event()
    watch = logged.task = asyncio.create_task(
        warn_without_usage_writer(quiet_redis, stop, grace_seconds=0.05, every_seconds=0.2)
    )
    await asyncio.sleep(0.15)  # the first look found no heartbeat; a worker (re)starting sets it before the next
    await quiet_redis.set(HEARTBEAT_KEY, "worker-1", ex=HEARTBEAT_SECONDS)
    await asyncio.sleep(0.4)
    stop.set()
    await asyncio.wait_for(watch, 1)
    assert logged.entries == []


async def test_the_job_worker_runs_the_usage_flusher_and_an_api_process_does_not(
    settings: Settings, quiet_redis: Redis
) -> None:
    # The app and the worker on the quiet database, where only they could leave a heartbeat.
    on_quiet = msgspec.structs.replace(settings, redis_url=f"{settings.redis_url}?db=7")
    async with app_client(on_quiet) as client:
        assert (await client.get("/readyz")).status_code == 200
        await asyncio.sleep(0.6)  # a flusher pass, had the API one
        assert not await quiet_redis.exists(HEARTBEAT_KEY)
        async with running_worker(on_quiet):
            for _ in range(50):
                if await quiet_redis.exists(HEARTBEAT_KEY):
                    break
                await asyncio.sleep(0.1)
            assert await quiet_redis.exists(HEARTBEAT_KEY)
