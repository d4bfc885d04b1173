"""The usage log's way from Redis to PostgreSQL: per-tenant streams, read in batches, written idempotently.

The settle script appends each record to its tenant's stream in the same step that moves the counters, so
an API process that stops or crashes loses nothing: what was settled is in Redis (append-only file) until
a flusher has written it. The flusher runs in `lyss worker` (API processes only append): it reads with a
consumer group, writes a batch and the used-quota totals in one transaction per tenant (a record already
written is skipped by its id), then acknowledges it. Records a dead worker had read but not acknowledged
are claimed after a minute. Each pass refreshes a heartbeat key, by which the API and `lyss doctor` tell
that usage is being written at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import socket
from collections import Counter
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import bindparam, text, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.engine import UsageRecord
from app.gateway.limits import USAGE_TENANTS_KEY, usage_stream_key
from app.gateway.rollups import insert_with_rollups
from app.observability.logging import get_logger
from app.observability.metrics import USAGE_SET_ASIDE
from db.provider import ApiToken, Channel
from db.session import tenant_session
from db.tenant import Organization

GROUP = "flushers"
BATCH_SIZE = 500
CLAIM_IDLE_MS = 60_000
# Set by every flusher pass, expiring after HEARTBEAT_SECONDS: its absence means no worker writes usage.
HEARTBEAT_KEY = "lyss:gw:usage-flusher"
HEARTBEAT_SECONDS = 30
logger = get_logger("lyss.gateway.usage")
_decode_record = msgspec.json.Decoder(UsageRecord)
_encode_record = msgspec.json.Encoder().encode
# The database refusing what a record holds (a constraint, a value): the same record would fail again.
_REFUSED_BY_DATABASE = (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError, IntegrityError, DataError)
# Records set aside per tenant, at most (the oldest go first): enough to investigate, bounded in Redis.
SET_ASIDE_LIMIT = 10_000
_encode_details = msgspec.json.Encoder().encode
_STAGING = "usage_staging"
_CREATE_STAGING = "CREATE TEMPORARY TABLE IF NOT EXISTS usage_staging (LIKE provider_usage_logs) ON COMMIT DELETE ROWS"
_INSERT_FROM_STAGING = """
INSERT INTO provider_usage_logs (id, tenant_id, user_id, token_id, channel_id, request_id, endpoint, model,
    upstream_model, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, cost, overshoot,
    latency_ms, upstream_latency_ms, status_code, outcome, stream, details, created_at)
SELECT id, tenant_id, user_id, token_id, channel_id, request_id, endpoint, model,
    upstream_model, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, cost, overshoot,
    latency_ms, upstream_latency_ms, status_code, outcome, stream, details, created_at
FROM usage_staging
ON CONFLICT (tenant_id, created_at, id) DO NOTHING
RETURNING *
"""
# With the hourly and daily sums of the rows inserted, in the same statement.
_INSERT_WITH_ROLLUPS = insert_with_rollups(_INSERT_FROM_STAGING, "id, token_id, channel_id, cost")
# A user's or group's spend, on its budget row (made by the first call it pays for). A subject deleted
# since the call selects nothing, so its spend is dropped rather than failing the batch.
_ADD_TO_BUDGETS = {
    "user": text(
        """
        INSERT INTO tenant_budgets (tenant_id, kind, user_id, used_quota)
        SELECT subject.tenant_id, 'user', subject.id, :amount FROM auth_users AS subject WHERE subject.id = :subject
        ON CONFLICT (tenant_id, user_id) DO UPDATE SET used_quota = tenant_budgets.used_quota + excluded.used_quota
        """
    ),
    "group": text(
        """
        INSERT INTO tenant_budgets (tenant_id, kind, group_id, used_quota)
        SELECT subject.tenant_id, 'group', subject.id, :amount FROM tenant_user_groups AS subject
        WHERE subject.id = :subject
        ON CONFLICT (tenant_id, group_id) DO UPDATE SET used_quota = tenant_budgets.used_quota + excluded.used_quota
        """
    ),
}
# The order of the values in each row `_write` copies.
_COLUMNS = [
    "id", "tenant_id", "user_id", "token_id", "channel_id", "request_id", "endpoint", "model", "upstream_model",
    "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "cost", "overshoot", "latency_ms",
    "upstream_latency_ms", "status_code", "outcome", "stream", "details", "created_at",
]  # fmt: skip
_tokens = ApiToken.metadata.tables[ApiToken.__tablename__]
_ADD_TO_TOKENS = (
    update(_tokens)
    .where(_tokens.c.id == bindparam("row_id"))
    .values(used_quota=_tokens.c.used_quota + bindparam("amount"), last_used_at=bindparam("now"))
)
_channels = Channel.metadata.tables[Channel.__tablename__]
_ADD_TO_CHANNELS = (
    update(_channels)
    .where(_channels.c.id == bindparam("row_id"))
    .values(used_quota=_channels.c.used_quota + bindparam("amount"))
)


class UsageFlusher:
    def __init__(self, redis: Redis, session_maker: async_sessionmaker[AsyncSession]) -> None:
        self.redis = redis
        self.session_maker = session_maker
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._groups_ready: set[str] = set()

    async def _ensure_group(self, key: str) -> None:
        if key in self._groups_ready:
            return
        try:
            await self.redis.xgroup_create(key, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._groups_ready.add(key)

    async def flush_once(self) -> int:
        """Write what is waiting, for every tenant with records; returns how many records were written.

        A tenant whose records cannot be written now (its database rows locked, a failure) waits for the next
        pass without holding up the others'; the error is raised once every tenant had its turn."""
        written = 0
        failure: Exception | None = None
        for member in await self.redis.smembers(USAGE_TENANTS_KEY):
            tenant_id = UUID(hex=member.decode() if isinstance(member, bytes) else str(member))
            try:
                written += await self._flush_tenant(tenant_id)
            except Exception as error:
                logger.warning(
                    "usage flush failed for a tenant",
                    tenant_id=str(tenant_id),
                    error=f"{type(error).__name__}: {error}",
                )
                failure = error
        if failure is not None:
            raise failure
        return written

    async def _flush_tenant(self, tenant_id: UUID) -> int:
        key = usage_stream_key(tenant_id)
        try:
            return await self._flush_stream(tenant_id, key)
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            # The stream was deleted (e.g. Redis flushed) since the group was made: make it again.
            self._groups_ready.discard(key)
            return await self._flush_stream(tenant_id, key)

    async def _flush_stream(self, tenant_id: UUID, key: str) -> int:
        await self._ensure_group(key)
        written = 0
        while True:
            claim: Any = await self.redis.xautoclaim(key, GROUP, self.consumer, CLAIM_IDLE_MS, "0-0", count=BATCH_SIZE)
            fresh: Any = await self.redis.xreadgroup(GROUP, self.consumer, {key: ">"}, count=BATCH_SIZE)
            entries = list(claim[1]) + [entry for _, stream_entries in fresh or [] for entry in stream_entries]
            if not entries:
                break
            records: list[UsageRecord] = []
            for entry_id, fields in entries:
                try:
                    records.append(_decode_record.decode(fields[b"record"]))
                except (KeyError, msgspec.DecodeError) as error:
                    await self._set_aside(key, fields.get(b"record", b""), f"unreadable record {entry_id!r}: {error}")
            await self._write_or_set_aside(tenant_id, key, records)
            ids = [entry_id for entry_id, _ in entries]
            await self.redis.xack(key, GROUP, *ids)
            await self.redis.xdel(key, *ids)
            written += len(entries)
        if await self.redis.xlen(key) == 0:
            await self.redis.srem(USAGE_TENANTS_KEY, tenant_id.hex)
            if await self.redis.xlen(key) > 0:  # a record arrived meanwhile: keep the tenant listed
                await self.redis.sadd(USAGE_TENANTS_KEY, tenant_id.hex)
        return written

    async def _write_or_set_aside(self, tenant_id: UUID, key: str, records: list[UsageRecord]) -> None:
        """Write the batch; if the database refuses it (a record it cannot store), write its halves, down to the
        one record refused, which is set aside: one bad record must not hold up the tenant's usage forever."""
        if not records:
            return
        try:
            await self._write(tenant_id, records)
        except _REFUSED_BY_DATABASE as error:
            if len(records) == 1:
                await self._set_aside(key, _encode_record(records[0]), f"{type(error).__name__}: {error}")
                return
            middle = len(records) // 2
            await self._write_or_set_aside(tenant_id, key, records[:middle])
            await self._write_or_set_aside(tenant_id, key, records[middle:])

    async def _set_aside(self, key: str, record: bytes, reason: str) -> None:
        """Keep a record the database refused, or could not be read, in the tenant's dead-letter stream (capped),
        as it was, with the reason, for an operator."""
        await self.redis.xadd(
            f"{key}:set-aside", {"record": record, "reason": reason[:1000]}, maxlen=SET_ASIDE_LIMIT, approximate=True
        )
        USAGE_SET_ASIDE.inc()
        logger.error("usage record set aside", stream=f"{key}:set-aside", reason=reason[:300])

    async def _write(self, tenant_id: UUID, records: list[UsageRecord]) -> None:
        rows = [
            (
                record.id,
                tenant_id,
                record.user_id,
                record.token_id,
                record.channel_id,
                record.request_id,
                record.endpoint,
                record.model,
                record.upstream_model,
                record.prompt_tokens,
                record.completion_tokens,
                record.cached_tokens,
                record.cache_write_tokens,
                record.cost,
                record.overshoot,
                record.latency_ms,
                record.upstream_latency_ms,
                record.status_code,
                record.outcome,
                record.stream,
                _encode_details(record.details).decode(),
                record.created_at,
            )
            for record in records
        ]
        async with tenant_session(self.session_maker, tenant_id) as session:
            connection = await (await session.connection()).get_raw_connection()
            driver = connection.driver_connection
            assert driver is not None
            # COPY into a per-connection scratch table, then one INSERT … ON CONFLICT: a record already
            # written (redelivered after a crash) is skipped, and RLS checks every row as it goes in; the
            # rollups add up only the rows it inserted.
            await driver.execute(_CREATE_STAGING)
            await driver.copy_records_to_table(_STAGING, records=rows, columns=_COLUMNS)
            inserted = await driver.fetch(_INSERT_WITH_ROLLUPS)
            # Only the rows written now count: a record seen twice is skipped above.
            by_token: Counter[UUID] = Counter()
            by_channel: Counter[UUID] = Counter()
            by_budget: Counter[str] = Counter()
            budgets_of = {record.id: record.budgets for record in records if record.cost and record.budgets}
            for record_id, token_id, channel_id, cost in inserted:
                if token_id is not None:
                    by_token[token_id] += cost
                if channel_id is not None:
                    by_channel[channel_id] += cost
                for scope in budgets_of.get(str(record_id), ()):
                    by_budget[scope] += cost
            now = datetime.datetime.now(datetime.UTC)
            if by_token:
                await session.execute(
                    _ADD_TO_TOKENS, [{"row_id": key, "amount": value, "now": now} for key, value in by_token.items()]
                )
            if by_channel:
                await session.execute(
                    _ADD_TO_CHANNELS, [{"row_id": key, "amount": value} for key, value in by_channel.items()]
                )
            for kind, statement in _ADD_TO_BUDGETS.items():
                amounts = [
                    {"subject": UUID(scope.partition(":")[2]), "amount": amount}
                    for scope, amount in by_budget.items()
                    if scope.startswith(f"{kind}:") and amount
                ]
                if amounts:
                    await session.execute(statement, amounts)
            total = sum(by_token.values())
            if total:
                await session.execute(update(Organization).values(used_quota=Organization.used_quota + total))
            await session.commit()

    async def run(self, stop: asyncio.Event, interval_seconds: float = 0.5) -> None:
        """Flush continuously until `stop` is set."""
        while not stop.is_set():
            try:
                await self.redis.set(HEARTBEAT_KEY, self.consumer, ex=HEARTBEAT_SECONDS)
                await self.flush_once()
            except Exception as error:
                # A failed batch stays in Redis, unacknowledged, and is retried: never lost, never fatal.
                logger.warning("usage flush failed; will retry", error=f"{type(error).__name__}: {error}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_seconds)

    async def drain(self, timeout_seconds: float = 10.0) -> None:
        """On shutdown: write everything still waiting, within a bound."""
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while asyncio.get_running_loop().time() < deadline:
            try:
                if await self.flush_once() == 0:
                    return
            except Exception as error:
                # Redis or PostgreSQL is gone: the records stay in Redis for the next worker to write.
                logger.warning("usage not drained at shutdown", error=f"{type(error).__name__}: {error}")
                return


async def usage_writer_seen(redis: Redis) -> bool:
    """Whether a flusher (a `lyss worker`) has run a pass within the last HEARTBEAT_SECONDS."""
    return bool(await redis.exists(HEARTBEAT_KEY))


async def warn_without_usage_writer(
    redis: Redis,
    stop: asyncio.Event,
    grace_seconds: float = HEARTBEAT_SECONDS,
    every_seconds: float = HEARTBEAT_SECONDS,
) -> None:
    """For an API process: log a warning while no worker writes usage (once when it stops, once when it is back).

    The first look waits `grace_seconds`, so that a worker started with the API (the embedded one) has run; the
    warning comes after two looks in a row without a heartbeat, so that a worker restarting (or a heartbeat
    missed once) is no alarm. Calls are still served and their records kept in Redis: the warning is all an
    API process can do.
    """
    seen = True
    missed = 0
    delay = grace_seconds
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return
        delay = every_seconds
        try:
            now_seen = await usage_writer_seen(redis)
        except RedisError:
            continue  # Redis is down: /readyz says so, and calls fail before usage matters
        missed = 0 if now_seen else missed + 1
        if seen and missed == 2:
            logger.warning(
                "usage is not being written: no lyss worker runs the usage flusher; calls wait in Redis until one does",
                heartbeat_seconds=HEARTBEAT_SECONDS,
            )
            seen = False
        elif now_seen and not seen:
            logger.info("usage is being written again: a lyss worker runs the usage flusher")
            seen = True
