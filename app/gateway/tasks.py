"""The gateway's background work: channel tests and health checks, budget periods, usage reconciliation and exports."""

from __future__ import annotations

import csv
import datetime
import tempfile
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
from redis.asyncio import Redis
from sqlalchemy import ColumnElement, and_, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.services import ADMIN_ROLES
from app.gateway import stored_responses
from app.gateway.admin import (
    USAGE_EXPORT_COLUMNS,
    USAGE_EXPORT_KIND,
    ExportNames,
    UsageFilter,
    channel_names,
    export_name,
    key_names,
    test_channel,
    usage_export_row,
    usage_rows,
)
from app.gateway.caches import INVALIDATION_CHANNEL
from app.gateway.limits import GatewayLimits
from app.gateway.usage import UsageFlusher
from app.jobs.registry import JobContext, JobFailed, WorkerServices, job_kind, scheduled
from app.schemas import Input
from app.storage.base import StorageError
from app.tenants.money import DEFAULT_CURRENCY
from app.tenants.services import Actor, all_tenant_ids, audit_change, record_audit_event, user_emails
from app.tenants.webhooks import WatchedBudget, emit, fire_budget_thresholds
from db.auth import User
from db.provider import ApiToken, Channel, UsageLog
from db.session import tenant_session
from db.tenant import Budget, Organization, UserGroup


class ChannelTestPayload(Input):
    # None: every channel of the organization.
    channel_ids: list[UUID] | None = None


@job_kind("gateway.test_channels", startable_by="admin", payload_type=ChannelTestPayload, timeout_seconds=900)
async def test_channels(job: JobContext) -> dict[str, Any]:
    """Call each channel once with its test model; an auto-disabled channel that passes is enabled again."""
    payload = msgspec.convert(job.payload, ChannelTestPayload)
    statement = select(Channel).order_by(Channel.priority.desc(), Channel.name)
    if payload.channel_ids is not None:
        statement = statement.where(Channel.id.in_(payload.channel_ids))
    channels = list(await job.session.scalars(statement))
    results = []
    reenabled: list[dict[str, Any]] = []
    for done, channel in enumerate(channels):
        await job.checkpoint()
        was_disabled = channel.status == "auto_disabled"
        outcome = await test_channel(job.session, channel, job.services.secret_box, job.services.http)
        results.append({"channel_id": str(channel.id), "name": channel.name, **msgspec.to_builtins(outcome)})
        if was_disabled and outcome.status == "enabled":
            reenabled.append({"channel_id": str(channel.id), "name": channel.name})
            record_audit_event(
                job.session,
                actor="job",
                action="channel.reenabled",
                target_type="channel",
                target_id=channel.id,
                actor_user_id=job.actor_user_id,
                details={"job_id": str(job.job_id)},
            )
        await job.progress((done + 1) * 100 // len(channels), f"Tested {channel.name}.")
    if reenabled:
        tenant_id = job.tenant_id
        job.after_success(lambda: _announce_tenant(job.services, tenant_id))
        job.after_success(lambda: _announce_reenabled(job.services, tenant_id, reenabled))
    passed = sum(1 for result in results if result["ok"])
    return {"channels": results, "passed": passed, "reenabled": len(reenabled)}


async def _announce_reenabled(services: WorkerServices, tenant_id: UUID, channels: list[dict[str, Any]]) -> None:
    for channel in channels:
        await emit(services, tenant_id, "channel.reenabled", channel)


async def _announce_tenant(services: WorkerServices, tenant_id: UUID) -> None:
    await services.redis.publish(INVALIDATION_CHANNEL, f"tenant:{tenant_id}")


@scheduled("gateway.health_check", cron="*/5 * * * *")
async def health_check(services: WorkerServices) -> dict[str, Any]:
    """Probe every auto-disabled channel of every tenant; enable the ones that answer again."""
    tested = reenabled = 0
    for tenant_id in await _tenants(services):
        async with tenant_session(services.session_maker, tenant_id) as session:
            channel_ids = list(await session.scalars(select(Channel.id).where(Channel.status == "auto_disabled")))
        changed = False
        for channel_id in channel_ids:
            # One transaction per channel: a slow or failing probe holds no lock on the others.
            async with tenant_session(services.session_maker, tenant_id) as session:
                channel = await session.get(Channel, channel_id)
                if channel is None or channel.status != "auto_disabled":
                    continue
                outcome = await test_channel(session, channel, services.secret_box, services.http)
                tested += 1
                if outcome.status == "enabled":
                    record_audit_event(
                        session,
                        actor="scheduler",
                        action="channel.reenabled",
                        target_type="channel",
                        target_id=channel.id,
                        details={"latency_ms": outcome.latency_ms},
                    )
                    reenabled += 1
                    changed = True
                name = channel.name
                await session.commit()
            if outcome.status == "enabled":
                await emit(services, tenant_id, "channel.reenabled", {"channel_id": str(channel_id), "name": name})
        if changed:
            await _announce_tenant(services, tenant_id)
    return {"tested": tested, "reenabled": reenabled}


@scheduled("gateway.budgets", cron="* * * * *")
async def settle_budgets(services: WorkerServices) -> dict[str, Any]:
    """Write waiting usage, start new budget periods, and check Redis against PostgreSQL.

    One task, in this order, so that a reset and a reconciliation never interleave: a reconciliation that
    read a balance from before a reset could otherwise raise the Redis balance back to the old count.
    """
    flushed = await UsageFlusher(services.redis, services.session_maker).flush_once()
    limits = GatewayLimits(services.redis)
    reset = raised = alerts = 0
    now = datetime.datetime.now(datetime.UTC)
    for tenant_id in await _tenants(services):
        async with tenant_session(services.session_maker, tenant_id) as session:
            reset += await reset_budget_periods(session, limits, tenant_id, now)
        async with tenant_session(services.session_maker, tenant_id) as session:
            raised += await reconcile_balances(session, limits, tenant_id)
        async with tenant_session(services.session_maker, tenant_id) as session:
            budgets, currency = await watched_budgets(session, services.redis, tenant_id)
        alerts += await fire_budget_thresholds(services, tenant_id, budgets, currency=currency)
    return {"flushed": flushed, "reset": reset, "raised": raised, "alerts": alerts}


def period_starts(now: datetime.datetime) -> dict[str, datetime.datetime]:
    """When the current daily, weekly (from Monday) and monthly budget periods began (UTC)."""
    day = now.astimezone(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return {"daily": day, "weekly": day - datetime.timedelta(days=day.weekday()), "monthly": day.replace(day=1)}


def _period_over(table: type[ApiToken] | type[Budget], starts: dict[str, datetime.datetime]) -> ColumnElement[bool]:
    return or_(
        *(and_(table.budget_period == period, table.budget_reset_at < start) for period, start in starts.items())
    )


def budget_scope(user_id: UUID | None, group_id: UUID | None) -> str:
    """The gateway's name for a user's or group's budget counters."""
    return f"user:{user_id}" if user_id is not None else f"group:{group_id}"


async def reset_budget_periods(
    session: AsyncSession, limits: GatewayLimits, tenant_id: UUID, now: datetime.datetime
) -> int:
    """Zero the used quota of every key, user and group budget whose period began after its last reset.

    The rows are locked until the commit: the usage flusher's additions wait, so `used_quota` is exact, and
    a second run at the same moment finds them reset already (it re-reads them once the lock is free).
    """
    starts = period_starts(now)
    tokens = (
        await session.execute(
            select(ApiToken.id, ApiToken.used_quota).where(_period_over(ApiToken, starts)).with_for_update()
        )
    ).all()
    budgets = (
        await session.execute(
            select(Budget.id, Budget.user_id, Budget.group_id, Budget.used_quota)
            .where(Budget.kind != "new_user", _period_over(Budget, starts))
            .with_for_update()
        )
    ).all()
    for token_id, used in tokens:
        await limits.end_budget_period(tenant_id, f"token:{token_id}", used)
    for _, user_id, group_id, used in budgets:
        await limits.end_budget_period(tenant_id, budget_scope(user_id, group_id), used)
    if tokens:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.id.in_([token_id for token_id, _ in tokens]))
            .values(used_quota=0, budget_reset_at=now)
        )
    if budgets:
        await session.execute(
            update(Budget).where(Budget.id.in_([row[0] for row in budgets])).values(used_quota=0, budget_reset_at=now)
        )
    await session.commit()
    return len(tokens) + len(budgets)


async def reconcile_balances(session: AsyncSession, limits: GatewayLimits, tenant_id: UUID) -> int:
    """Raise Redis balances that fell below PostgreSQL's counts (lost Redis writes); returns how many."""
    counts: dict[str, int] = {}
    for token_id, used in await session.execute(select(ApiToken.id, ApiToken.used_quota)):
        counts[limits.token_used_key(tenant_id, token_id)] = used
    for channel_id, used in await session.execute(select(Channel.id, Channel.used_quota)):
        counts[limits.channel_used_key(tenant_id, channel_id)] = used
    budgets = select(Budget.user_id, Budget.group_id, Budget.used_quota).where(Budget.kind != "new_user")
    for user_id, group_id, used in await session.execute(budgets):
        counts[limits.used_key(tenant_id, budget_scope(user_id, group_id))] = used
    tenant_used = await session.scalar(select(Organization.used_quota))
    if tenant_used is not None:
        counts[limits.tenant_used_key(tenant_id)] = tenant_used
    await session.rollback()
    return await limits.raise_balances(counts)


async def watched_budgets(session: AsyncSession, redis: Redis, tenant_id: UUID) -> tuple[list[WatchedBudget], str]:
    """The tenant's limited budgets (keys, users, groups and the organization) with what Redis counts as used,
    and its currency.

    Redis holds the live balance (PostgreSQL's count trails it by the usage not yet flushed); the larger of the
    two is the one a call would be refused on.
    """
    tokens = (
        await session.execute(
            select(
                ApiToken.id,
                ApiToken.name,
                ApiToken.quota,
                ApiToken.used_quota,
                ApiToken.budget_period,
                ApiToken.budget_reset_at,
            ).where(ApiToken.quota > 0, ApiToken.status == "active")
        )
    ).all()
    people = (
        await session.execute(
            select(
                Budget.user_id,
                Budget.group_id,
                func.coalesce(User.email, UserGroup.name),
                Budget.quota,
                Budget.used_quota,
                Budget.budget_period,
                Budget.budget_reset_at,
            )
            .outerjoin(User, User.id == Budget.user_id)
            .outerjoin(UserGroup, UserGroup.id == Budget.group_id)
            .where(Budget.quota > 0, Budget.kind != "new_user")
        )
    ).all()
    organization = (
        await session.execute(
            select(
                Organization.id, Organization.name, Organization.quota, Organization.used_quota, Organization.currency
            )
        )
    ).one()
    await session.rollback()
    # (scope, id, name, quota, counted in PostgreSQL, period, reset at, the Redis balance's scope)
    watched = [
        ("key", token.id, token.name, token.quota, token.used_quota, token.budget_period, token.budget_reset_at,
         f"token:{token.id}")
        for token in tokens
    ]  # fmt: skip
    watched += [
        ("user" if user_id else "group", user_id or group_id, name, quota, used, period, reset_at,
         budget_scope(user_id, group_id))
        for user_id, group_id, name, quota, used, period, reset_at in people
    ]  # fmt: skip
    if organization.quota > 0:
        watched.append(
            ("organization", organization.id, organization.name, organization.quota, organization.used_quota,
             "none", None, "tenant")
        )  # fmt: skip
    balances = await redis.mget([GatewayLimits.used_key(tenant_id, entry[7]) for entry in watched]) if watched else []
    budgets = [
        WatchedBudget(
            scope=scope,
            id=subject_id,
            name=name,
            used=max(int(balance or 0), counted),
            quota=quota,
            period=period,
            period_start=reset_at if period != "none" else None,
        )
        for (scope, subject_id, name, quota, counted, period, reset_at, _), balance in zip(
            watched, balances, strict=True
        )
    ]
    return budgets, organization.currency


async def _tenants(services: WorkerServices) -> list[UUID]:
    async with services.session_maker() as session:
        return await all_tenant_ids(session)


EXPORT_BATCH_ROWS = 5000


@job_kind(USAGE_EXPORT_KIND, startable_by="user", payload_type=UsageFilter, timeout_seconds=3600)
async def export_usage(job: JobContext) -> dict[str, Any]:
    """The usage log, as filtered, into a CSV file: a user's own calls, or the organization's for admins."""
    filters = msgspec.convert(job.payload, UsageFilter)
    actor = await job.session.get(User, job.actor_user_id) if job.actor_user_id else None
    if actor is None:
        raise JobFailed("An export is started by a user; this job has none.")
    if actor.role not in ADMIN_ROLES:
        filters = msgspec.structs.replace(filters, user_id=actor.id)
    total = await job.session.scalar(select(func.count()).select_from(UsageLog).where(*filters.conditions())) or 0
    names = ExportNames(
        users=await user_emails(job.session),
        keys=await key_names(job.session, None),
        channels=await channel_names(job.session),
        currency=await job.session.scalar(select(Organization.currency)) or DEFAULT_CURRENCY,
    )
    written = 0
    cursor: str | None = None
    with tempfile.TemporaryDirectory(prefix="lyss-export-") as scratch:
        path = Path(scratch) / "usage.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(USAGE_EXPORT_COLUMNS)
            while True:
                await job.checkpoint()
                rows, cursor = await usage_rows(job.session, filters, cursor=cursor, limit=EXPORT_BATCH_ROWS)
                writer.writerows(usage_export_row(row, names) for row in rows)
                written += len(rows)
                await job.progress(min(99, written * 100 // max(total, 1)), f"{written} of {total} rows")
                if cursor is None:
                    break
        try:
            size = await job.services.objects.put(
                job.tenant_id, export_name(job.job_id), path, content_type="text/csv; charset=utf-8"
            )
        except StorageError as error:
            raise JobFailed(error.detail) from None
    audit_change(
        job.session,
        Actor(name=actor.email, user_id=actor.id),
        "usage.exported",
        "job",
        job.job_id,
        rows=written,
        filters=msgspec.to_builtins(filters),
    )
    return {"rows": written, "bytes": size}


@scheduled("usage.prune_exports", cron="17 * * * *")
async def prune_exports(services: WorkerServices) -> dict[str, Any]:
    """Delete exports older than LYSS_EXPORT_TTL_HOURS from the object store."""
    cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=services.settings.export_ttl_hours)
    return {"removed": await services.objects.delete_older_than(cutoff, name_prefix="exports/")}


USAGE_PARTITIONS_AHEAD = 3


@scheduled("usage.partitions_ahead", cron="23 4 * * *")
async def make_usage_partitions(services: WorkerServices) -> dict[str, Any]:
    """Make the usage log's monthly partitions up to USAGE_PARTITIONS_AHEAD months ahead (a no-op on most
    days), so that calls land in their month rather than in the default partition."""
    async with services.session_maker() as session:
        made = await session.scalar(
            text("SELECT public.usage_log_partitions_ahead(:months)"), {"months": USAGE_PARTITIONS_AHEAD}
        )
        await session.commit()
    return {"made": made or 0}


@scheduled("gateway.prune_responses", cron="*/15 * * * *")
async def prune_responses(services: WorkerServices) -> dict[str, Any]:
    """Delete every tenant's expired stored responses (already out of every read), one tenant at a time under
    its row-level security."""
    pruned = 0
    for tenant_id in await _tenants(services):
        async with tenant_session(services.session_maker, tenant_id) as session:
            pruned += await stored_responses.prune_expired(session)
            await session.commit()
    return {"pruned": pruned}
