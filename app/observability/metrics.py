"""Prometheus metrics, gathered when scraped: the job queue's depth and the jobs' states and durations."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from saq.queue.redis import RedisQueue
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Snapshot(Collector):
    """Hands prometheus_client metrics already read (its collectors are synchronous; our sources are not)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


async def render_metrics(engine: AsyncEngine, queue: RedisQueue) -> bytes:
    depth = GaugeMetricFamily("lyss_job_queue_depth", "Jobs in the queue (SAQ), by state", labels=["state"])
    for state, count_kind in (("waiting", "queued"), ("running", "active"), ("incomplete", "incomplete")):
        depth.add_metric([state], await queue.count(count_kind))  # type: ignore[arg-type]
    jobs = GaugeMetricFamily("lyss_jobs", "Job records by kind and status (all tenants)", labels=["kind", "status"])
    stuck = GaugeMetricFamily("lyss_jobs_stuck", "Running jobs past their timeout", labels=["kind"])
    duration = GaugeMetricFamily(
        "lyss_job_duration_seconds",
        "Run time of jobs finished in the last hour, by kind and status",
        labels=["kind", "status", "quantile"],
    )
    stuck_by_kind: dict[str, int] = {}
    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM platform_job_stats()"))).all()
    for kind, status, count, stuck_count, p50, p95 in rows:
        jobs.add_metric([kind, status], count)
        stuck_by_kind[kind] = stuck_by_kind.get(kind, 0) + stuck_count
        if p50 is not None:
            duration.add_metric([kind, status, "0.5"], p50)
            duration.add_metric([kind, status, "0.95"], p95)
    for kind, count in stuck_by_kind.items():
        stuck.add_metric([kind], count)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot([depth, jobs, stuck, duration]))
    return generate_latest(registry)
