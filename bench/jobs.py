"""Jobs benchmark: how fast jobs are recorded and queued, and how many a `lyss worker` finishes per second.

Run with `make bench`. Everything is local (embedded PostgreSQL and Redis in a temporary directory, one
`lyss worker` process); the job kind does nothing, so the figures are Lyss's own cost per job: the record,
the queue round trip, the attempt's transactions and events.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, select
from uuid_utils.compat import uuid7

from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.jobs.registry import JobContext, job_kind
from app.jobs.services import create_queue, submit_job
from app.settings import Settings, new_key_entry, settings_environment
from db.bootstrap import bootstrap_database
from db.migrations import upgrade_to_head
from db.session import create_engine, create_session_maker, tenant_session
from db.tenant import Job, Organization

BURST_JOBS = 1000
SEQUENTIAL_JOBS = 100


@job_kind("bench.noop")
async def noop(job: JobContext) -> dict[str, Any]:
    return {}


def _percentile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100)[percent - 1]


async def _measure(settings: Settings) -> dict[str, Any]:
    assert settings.database_url is not None
    assert settings.redis_url is not None
    engine = create_engine(settings.database_url, pool_size=2)
    session_maker = create_session_maker(engine)
    redis = Redis.from_url(settings.redis_url)
    queue = create_queue(redis)
    tenant_id = uuid7()
    async with tenant_session(session_maker, tenant_id) as session:
        session.add(Organization(id=tenant_id, slug="bench", name="Bench"))
        await session.commit()

    async def submit() -> Job:
        async with tenant_session(session_maker, tenant_id) as session:
            job, _ = await submit_job(session, queue, settings, tenant_id=tenant_id, kind="bench.noop")
        return job

    async def finished(count: int) -> int:
        async with tenant_session(session_maker, tenant_id) as session:
            done = await session.scalar(select(func.count()).where(Job.status == "succeeded"))
        return int(done or 0) - count

    # One at a time: submit, then wait (polling every 2 ms) until the worker has finished it.
    single: list[float] = []
    for _ in range(SEQUENTIAL_JOBS):
        started = time.perf_counter()
        job = await submit()
        while True:
            async with tenant_session(session_maker, tenant_id) as session:
                if await session.scalar(select(Job.status).where(Job.id == job.id)) == "succeeded":
                    break
            await asyncio.sleep(0.002)
        single.append((time.perf_counter() - started) * 1000)

    # A burst: record and queue BURST_JOBS as fast as one client can, while the worker drains them.
    submit_ms: list[float] = []
    burst_started = time.perf_counter()
    for _ in range(BURST_JOBS):
        started = time.perf_counter()
        await submit()
        submit_ms.append((time.perf_counter() - started) * 1000)
    submitted_in = time.perf_counter() - burst_started
    deadline = time.monotonic() + 120
    while await finished(SEQUENTIAL_JOBS) < BURST_JOBS:
        if time.monotonic() > deadline:
            raise SystemExit("the worker did not finish the burst within 120 s")
        await asyncio.sleep(0.05)
    drained_in = time.perf_counter() - burst_started
    async with tenant_session(session_maker, tenant_id) as session:
        queue_wait = [
            float(seconds) * 1000
            for seconds in await session.scalars(
                select(func.extract("epoch", Job.finished_at - Job.created_at)).order_by(Job.created_at)
            )
        ][SEQUENTIAL_JOBS:]
    await redis.aclose()
    await engine.dispose()
    return {
        "single_p50": statistics.median(single),
        "single_p95": _percentile(single, 95),
        "submit_rate": BURST_JOBS / submitted_in,
        "submit_p50": statistics.median(submit_ms),
        "submit_p95": _percentile(submit_ms, 95),
        "throughput": BURST_JOBS / drained_in,
        "wait_p50": statistics.median(queue_wait),
        "wait_p95": _percentile(queue_wait, 95),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="lyss-jobs-bench-") as scratch:
        postgres = EmbeddedPostgres(Path(scratch) / "postgres")
        redis_server = EmbeddedRedis(Path(scratch) / "redis")
        superuser_url = postgres.start()
        redis_url = redis_server.start()
        try:
            urls = asyncio.run(bootstrap_database(superuser_url, "lyss_jobs_bench"))
            asyncio.run(upgrade_to_head(urls.owner_url))
            settings = Settings(
                database_url=urls.app_url,
                redis_url=redis_url,
                encryption_keys=new_key_entry(),
                jwt_keys=new_key_entry(),
                job_modules="bench.jobs",
                log_level="warning",
            )
            worker = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker"],
                env={**os.environ, **settings_environment(settings)},
                stdout=subprocess.DEVNULL,
            )
            try:
                figures = asyncio.run(_measure(settings))
            finally:
                worker.terminate()
                worker.wait(30)
        finally:
            redis_server.stop()
            postgres.stop()
    print(f"one `lyss worker` process, concurrency {settings.worker_concurrency}; a job kind that does nothing")
    print(
        f"one job at a time, submit -> succeeded seen ({SEQUENTIAL_JOBS} jobs): "
        f"p50 {figures['single_p50']:.1f} ms, p95 {figures['single_p95']:.1f} ms"
    )
    print(
        f"burst of {BURST_JOBS}: recorded and queued at {figures['submit_rate']:.0f}/s "
        f"(p50 {figures['submit_p50']:.2f} ms, p95 {figures['submit_p95']:.2f} ms each); "
        f"finished at {figures['throughput']:.0f} jobs/s; created -> finished p50 {figures['wait_p50']:.0f} ms, "
        f"p95 {figures['wait_p95']:.0f} ms"
    )


if __name__ == "__main__":
    main()
