"""The usage flusher `lyss worker` runs, in a thread of the test process: the suite's `lyss worker` for usage."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from app.gateway.usage import UsageFlusher
from app.redis_client import close_redis, create_redis
from db.session import create_engine, create_session_maker


@contextmanager
def usage_writer(database_url: str, redis_url: str) -> Iterator[None]:
    """Write the usage log from the Redis streams until the block ends, in a loop of its own.

    A thread rather than a task of the session's loop: a synchronous test (a browser's) runs no loop, and
    the usage of the calls it makes on `lyss serve` must still be written.
    """
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    async def run() -> None:
        engine = create_engine(database_url, pool_size=2)
        redis = create_redis(redis_url, max_connections=8, wait_seconds=10)  # a plain Redis or a cluster
        ready.set()
        try:
            await UsageFlusher(redis, create_session_maker(engine)).run(stop)
        finally:
            await close_redis(redis)
            await engine.dispose()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), name="usage-writer", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
