"""Prometheus metrics: HTTP and gateway timings counted as they happen; queue, jobs and pool read when scraped."""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from saq.queue.redis import RedisQueue
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.operations.backups import backup_status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; the gateway's own overhead is milliseconds, provider calls up to minutes.
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

HTTP_DURATION = Histogram(
    "lyss_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of the body), by route template",
    ["method", "route", "status"],
    buckets=_FAST_BUCKETS + _SLOW_BUCKETS[4:],
)
GATEWAY_OVERHEAD = Histogram(
    "lyss_gateway_overhead_seconds",
    "Time Lyss adds to a gateway call: the whole call minus the provider's part",
    ["endpoint"],
    buckets=_FAST_BUCKETS,
)
UPSTREAM_DURATION = Histogram(
    "lyss_upstream_duration_seconds",
    "Provider time of gateway calls, by channel and outcome",
    ["channel_id", "outcome"],
    buckets=_SLOW_BUCKETS,
)
GATEWAY_REJECTIONS = Counter(
    "lyss_gateway_rejections_total",
    "Gateway calls refused before reaching a provider, by reason (rpm, tpm, quota, no_channel)",
    ["reason"],
)
GATEWAY_OVERSHOOT = Counter(
    "lyss_gateway_overshoot_credits_total",
    "Credits of provider-reported usage beyond a call's reservation: recorded in the usage log, not charged",
    ["endpoint"],
)
GATEWAY_OVERSHOT_CALLS = Counter(
    "lyss_gateway_overshot_calls_total",
    "Calls whose provider-reported usage cost more than their reservation",
    ["endpoint"],
)
USAGE_SET_ASIDE = Counter(
    "lyss_usage_records_set_aside_total",
    "Usage records the database refused (kept in their tenant's dead-letter stream, not written)",
)


class _Snapshot(Collector):
    """Hands prometheus_client metrics already read (its collectors are synchronous; our sources are not)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def _pool_usage(engine: AsyncEngine) -> GaugeMetricFamily:
    pool = engine.sync_engine.pool
    usage = GaugeMetricFamily(
        "lyss_db_pool_connections", "This process's database connections, by state", labels=["state"]
    )
    usage.add_metric(["checked_out"], pool.checkedout())  # type: ignore[attr-defined]
    usage.add_metric(["idle"], pool.checkedin())  # type: ignore[attr-defined]
    usage.add_metric(["overflow"], max(pool.overflow(), 0))  # type: ignore[attr-defined]
    return usage


def _counted() -> bytes:
    """The metrics counted as requests happen. With several granian workers (processes), set
    PROMETHEUS_MULTIPROC_DIR so that every process's counts are summed, not just the scraped one's."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def _backups(status: dict[str, str]) -> list[Metric]:
    """The scheduled backup as its worker recorded it (see app.operations.backups)."""
    failures = CounterMetricFamily(
        "lyss_backup_failures", "Scheduled backups that failed (each also logged as 'scheduled backup failed')"
    )
    failures.add_metric([], int(status.get("failures", 0)))
    metrics: list[Metric] = [failures]
    if "last_success" in status:
        for name, documentation, value in (
            (
                "lyss_backup_last_success_timestamp_seconds",
                "When the last scheduled backup succeeded (Unix time)",
                status["last_success"],
            ),
            ("lyss_backup_last_size_bytes", "Size of the last successful scheduled backup", status["size"]),
            (
                "lyss_backup_last_duration_seconds",
                "Run time of the last successful scheduled backup",
                status["duration"],
            ),
        ):
            metrics.append(GaugeMetricFamily(name, documentation, value=float(value)))
    return metrics


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
    registry.register(
        _Snapshot([depth, jobs, stuck, duration, _pool_usage(engine), *_backups(await backup_status(queue.redis))])
    )
    return _counted() + generate_latest(registry)
