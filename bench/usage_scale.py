"""The usage log at scale: millions of calls in one tenant among ten, and the queries the portal runs on them.

`python -m bench.usage_scale`. Loopback only: an embedded PostgreSQL in a scratch directory, gone afterwards.
BENCH_USAGE_ROWS sets the big tenant's calls (10,000,000 by default: 8 minutes to load on 2 shared cores,
4.3 GB; 1-2 million for a quick run), BENCH_USAGE_RUNS the timed runs of each query (50),
BENCH_USAGE_EXPORT_ROWS the calls the export loop writes (1,000,000). Each query is timed as the app runs
it: the real service function, in a tenant session of the app role (RLS on).
"""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from app.embedded import EmbeddedPostgres
from app.gateway.admin import (
    ExportNames,
    UsageFilter,
    calls_per_key,
    usage_export_row,
    usage_rows,
    usage_this_month,
)
from app.gateway.rollups import insert_with_rollups
from app.portal.services import dashboard
from db.bootstrap import bootstrap_database, plain_url
from db.migrations import upgrade_to_head
from db.session import create_engine, create_session_maker, tenant_session

DATABASE = "lyss_usage_bench"
ROWS = int(os.environ.get("BENCH_USAGE_ROWS", "10000000"))
RUNS = int(os.environ.get("BENCH_USAGE_RUNS", "50"))
OTHER_TENANTS = 9
OTHER_ROWS = 20_000
DAYS = 90
USERS = 200
KEYS = 500
CHANNELS = 20
MODELS = 30
CHUNK = 500_000
EXPORT_ROWS = int(os.environ.get("BENCH_USAGE_EXPORT_ROWS", "1000000"))

# Rows spread evenly over the last DAYS days in insertion order (as a live log is written), users and keys
# skewed (a few heavy callers), models more so, 3 % failed upstream with an attempt recorded.
_LOAD = """
WITH keys AS (
    SELECT array_agg(id ORDER BY name) AS ids, array_agg(user_id ORDER BY name) AS users
    FROM provider_tokens WHERE tenant_id = $1
), channels AS (SELECT array_agg(id ORDER BY name) AS ids FROM provider_channels WHERE tenant_id = $1),
drawn AS (
    SELECT n,
           now() - make_interval(days => $5) * (1 - n::float8 / $3) + random() * interval '1 minute' AS at,
           1 + floor(power(random(), 2) * cardinality(keys.ids))::int AS key,
           1 + floor(random() * cardinality(channels.ids))::int AS channel,
           1 + floor(power(random(), 3) * $6)::int AS model,
           (50 + random() * 2000)::int AS prompt, (10 + random() * 800)::int AS completion,
           (200 + random() * 3000)::int AS latency, random() < 0.03 AS failed
    FROM generate_series($2::bigint, $4::bigint) AS n, keys, channels
)
INSERT INTO provider_usage_logs (id, tenant_id, user_id, token_id, channel_id, request_id, endpoint, model,
    upstream_model, prompt_tokens, completion_tokens, cached_tokens, cost, latency_ms, upstream_latency_ms,
    status_code, outcome, stream, details, created_at)
SELECT uuidv7(drawn.at - now()), $1, keys.users[drawn.key], keys.ids[drawn.key], channels.ids[drawn.channel],
       'req-' || n, CASE WHEN n % 20 = 0 THEN 'embeddings' ELSE 'chat/completions' END,
       'model-' || drawn.model, 'model-' || drawn.model, prompt, completion, prompt / 4,
       CASE WHEN failed THEN 0 ELSE prompt * 2 + completion * 8 END, latency, latency - 15,
       CASE WHEN failed THEN 502 ELSE 200 END, CASE WHEN failed THEN 'upstream_error' ELSE 'ok' END, n % 3 = 0,
       CASE WHEN failed THEN jsonb_build_object('error', 'upstream answered 502', 'attempts',
           jsonb_build_array(jsonb_build_object('channel_id', channels.ids[drawn.channel]::text, 'status', 502,
                                                'latency_ms', latency)))
            ELSE '{}'::jsonb END,
       drawn.at
FROM drawn, keys, channels
"""

_ROLL_UP = insert_with_rollups("SELECT * FROM provider_usage_logs WHERE tenant_id = $1", "count(*)")


async def _tenant(connection: asyncpg.Connection, slug: str, users: int, keys: int, channels: int) -> UUID:
    tenant_id = uuid7()
    await connection.execute("INSERT INTO tenant_organizations (id, slug, name) VALUES ($1, $2, $2)", tenant_id, slug)
    await connection.execute(
        "INSERT INTO auth_users (id, tenant_id, email) SELECT uuidv7(), $1, 'user' || n || '@' || $2 || '.example.com' "
        "FROM generate_series(1, $3) AS n",
        tenant_id,
        slug,
        users,
    )
    await connection.execute(
        "INSERT INTO provider_tokens (id, tenant_id, user_id, name, key_hash, key_prefix) "
        "SELECT uuidv7(), $1, (array_agg(id ORDER BY email))[1 + n % count(*)::int], 'key-' || lpad(n::text, 5, '0'), "
        "md5(random()::text) || md5(random()::text), 'sk-bench' "
        "FROM auth_users, generate_series(1, $2) AS n WHERE tenant_id = $1 GROUP BY n",
        tenant_id,
        keys,
    )
    await connection.execute(
        "INSERT INTO provider_channels (id, tenant_id, name, type_id, encrypted_keys) "
        "SELECT uuidv7(), $1, 'channel-' || lpad(n::text, 3, '0'), "
        "(SELECT id FROM provider_types WHERE name = 'openai-compatible'), 'unused' FROM generate_series(1, $2) AS n",
        tenant_id,
        channels,
    )
    return tenant_id


async def _load(superuser_url: str, rows: int, say: Callable[[str], None]) -> tuple[UUID, UUID, str]:
    """The ten tenants and their calls, inserted as the superuser; returns the big tenant, its heaviest user, and
    a line on how long it took."""
    connection = await asyncpg.connect(plain_url(superuser_url, DATABASE))
    try:
        started = time.perf_counter()
        tenant_id = await _tenant(connection, "big", USERS, KEYS, CHANNELS)
        for start in range(1, rows + 1, CHUNK):
            await connection.execute(_LOAD, tenant_id, start, rows, min(start + CHUNK - 1, rows), DAYS, MODELS)
            say(f"  loaded {min(start + CHUNK - 1, rows):,} rows, {time.perf_counter() - started:.0f} s")
        for number in range(OTHER_TENANTS):
            other = await _tenant(connection, f"other-{number}", 20, 40, 3)
            await connection.execute(_LOAD, other, 1, OTHER_ROWS, OTHER_ROWS, DAYS, MODELS)
        loaded = time.perf_counter() - started
        # The hourly and daily sums, by the flusher's own statement over each tenant's calls at once.
        started = time.perf_counter()
        for tenant in await connection.fetch("SELECT id FROM tenant_organizations"):
            await connection.execute(_ROLL_UP, tenant["id"])
        rolled = time.perf_counter() - started
        await connection.execute("VACUUM ANALYZE")
        heaviest = await connection.fetchval(
            "SELECT user_id FROM provider_usage_logs WHERE tenant_id = $1 GROUP BY user_id ORDER BY count(*) DESC "
            "LIMIT 1",
            tenant_id,
        )
        size = await connection.fetchval(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(relid))) FROM pg_partition_tree('provider_usage_logs')"
        )
        rollups = await connection.fetchval(
            "SELECT string_agg(format('%s %s rows, %s', name, to_char(rows, 'FM999,999,999'), "
            "pg_size_pretty(pg_total_relation_size(name))), '; ') FROM (VALUES "
            "('provider_usage_hourly', (SELECT count(*) FROM provider_usage_hourly)), "
            "('provider_usage_daily', (SELECT count(*) FROM provider_usage_daily))) AS sizes (name, rows)"
        )
    finally:
        await connection.close()
    total = rows + OTHER_TENANTS * OTHER_ROWS
    return (
        tenant_id,
        heaviest,
        f"{total:,} rows in {OTHER_TENANTS + 1} tenants, loaded in {loaded:.0f} s ({size}); rolled up in "
        f"{rolled:.0f} s: {rollups}",
    )


def _latency(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]
    return f"p50 {statistics.median(ordered):.1f} ms, p95 {p95:.1f} ms"


class _Capture:
    """The statements a service function sends, so that the slowest can be explained as it ran."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []
        self.on = False

    def __call__(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if self.on:
            self.statements.append((statement, parameters))


async def _measure(app_url: str, tenant_id: UUID, user_id: UUID, say: Callable[[str], None]) -> list[str]:
    engine = create_engine(app_url, pool_size=2)
    capture = _Capture()
    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    maker = create_session_maker(engine)
    now = datetime.datetime.now(datetime.UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    async with tenant_session(maker, tenant_id) as session:
        # A deep page: the cursor of the row a million rows (or half the log) back from the newest.
        depth = min(1_000_000, ROWS // 2)
        deep = (await session.execute(_deep_cursor(), {"depth": depth})).one()
        await session.rollback()
    deep_cursor = f"{deep[0].isoformat()}|{deep[1]}"
    queries: dict[str, Callable[[AsyncSession], Awaitable[object]]] = {
        "dashboard 24 h (admin)": lambda s: dashboard(s, "24h", user_id=None, with_channels=True, now=now),
        "dashboard 7 d (admin)": lambda s: dashboard(s, "7d", user_id=None, with_channels=True, now=now),
        "dashboard 30 d (admin)": lambda s: dashboard(s, "30d", user_id=None, with_channels=True, now=now),
        "dashboard 30 d (one user)": lambda s: dashboard(s, "30d", user_id=user_id, with_channels=False, now=now),
        "usage list, first page": lambda s: usage_rows(s, UsageFilter(), cursor=None, limit=50),
        f"usage list, page at row {depth:,}": lambda s: usage_rows(s, UsageFilter(), cursor=deep_cursor, limit=50),
        "usage list, one user, first page": lambda s: usage_rows(
            s, UsageFilter(user_id=user_id), cursor=None, limit=50
        ),
        "month totals per user": lambda s: usage_this_month(s, now),
        "month total of one user": lambda s: usage_this_month(s, now, user_id=user_id),
        "month calls per key": lambda s: calls_per_key(s, month),
        "24 h calls per key (keys page)": lambda s: calls_per_key(s, now - datetime.timedelta(hours=24)),
    }
    lines = [f"  {RUNS} timed runs each after 3 warm-up, one at a time, app role under RLS:"]
    slowest: list[tuple[float, str, list[tuple[str, Any]]]] = []
    for name, query in queries.items():
        samples = []
        for run in range(RUNS + 3):
            async with tenant_session(maker, tenant_id) as session:
                capture.statements, capture.on = [], run == 0
                started = time.perf_counter()
                await query(session)
                elapsed = (time.perf_counter() - started) * 1000
                capture.on = False
                if run == 0:
                    slowest.append((0.0, name, capture.statements))
                if run >= 3:
                    samples.append(elapsed)
                await session.rollback()
        line = f"  {name}: {_latency(samples)}"
        say(line)
        lines.append(line)
        slowest[-1] = (sorted(samples)[round(0.95 * len(samples)) - 1], name, slowest[-1][2])
    lines.append(await _export(maker, tenant_id))
    for p95, name, statements in sorted(slowest, key=lambda entry: -entry[0])[:3]:
        lines.append(f"\n### Plan of {name} (p95 {p95:.1f} ms), its slowest statement")
        lines += await _explain_slowest(maker, tenant_id, statements)
    await engine.dispose()
    return lines


def _deep_cursor() -> Any:
    return text(
        "SELECT created_at, id FROM provider_usage_logs ORDER BY created_at DESC, id DESC OFFSET :depth LIMIT 1"
    )


async def _explain_slowest(maker: Any, tenant_id: UUID, statements: list[tuple[str, Any]]) -> list[str]:
    worst: tuple[float, list[str]] = (-1.0, [])
    for statement, parameters in statements:
        async with tenant_session(maker, tenant_id) as session:
            connection = await (await session.connection()).get_raw_connection()
            driver = connection.driver_connection
            assert driver is not None
            # The SQLAlchemy asyncpg dialect sends $n placeholders with positional parameters, as captured.
            plan = [row[0] for row in await driver.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", *parameters)]
            await session.rollback()
        took = float(plan[-1].split(":")[1].split()[0]) if plan and plan[-1].startswith("Execution Time") else 0.0
        if took > worst[0]:
            worst = (took, plan)
    return ["    " + line for line in worst[1]]


async def _export(maker: Any, tenant_id: UUID) -> str:
    """The export job's loop (keyset batches of the usage list into CSV rows) over the newest EXPORT_ROWS calls:
    its time and the Python heap's peak, which must not grow with the row count."""
    peaks = []
    took = 0.0
    for rows in (EXPORT_ROWS // 10, EXPORT_ROWS):
        async with tenant_session(maker, tenant_id) as session:
            names = ExportNames(users={}, keys={}, channels={}, currency="USD")
            tracemalloc.start()
            started = time.perf_counter()
            written, cursor = 0, None
            sink = io.StringIO()
            writer = csv.writer(sink)
            while written < rows:
                batch, cursor = await usage_rows(session, UsageFilter(), cursor=cursor, limit=5000)
                writer.writerows(usage_export_row(row, names) for row in batch)
                written += len(batch)
                sink.seek(0)
                sink.truncate()
                if cursor is None:
                    break
            took = time.perf_counter() - started
            peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
            tracemalloc.stop()
            await session.rollback()
    return (
        f"  CSV export loop (keyset batches of 5,000): {EXPORT_ROWS:,} rows in {took:.1f} s; Python heap peak "
        f"{peaks[0]:.1f} MiB at {EXPORT_ROWS // 10:,} rows, "
        f"{peaks[1]:.1f} MiB at {EXPORT_ROWS:,} rows (under tracemalloc)"
    )


def main() -> None:
    load_before = os.getloadavg()

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="lyss-usage-bench-") as scratch:
        postgres = EmbeddedPostgres(Path(scratch) / "postgres")
        superuser_url = postgres.start()
        try:
            urls = asyncio.run(bootstrap_database(superuser_url, DATABASE))
            asyncio.run(upgrade_to_head(urls.owner_url))
            tenant_id, user_id, loaded = asyncio.run(_load(superuser_url, ROWS, say))
            say(loaded)
            lines = [f"## Usage log at scale: {loaded}", *asyncio.run(_measure(urls.app_url, tenant_id, user_id, say))]
        finally:
            postgres.stop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} CPUs · Lyss {commit} (embedded "
        f"PostgreSQL) · load average before {' '.join(f'{value:.2f}' for value in load_before)}, after "
        f"{' '.join(f'{value:.2f}' for value in os.getloadavg())} · Python {sys.version.split()[0]}"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
