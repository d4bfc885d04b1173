"""What the portal's dashboard shows: usage over a window, its leaders, and the channels' health."""

from __future__ import annotations

import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.gateway.admin import CALL_FAILED
from db.auth import User
from db.provider import Channel, UsageLog

Window = Literal["24h", "7d", "30d"]
WINDOWS: dict[str, tuple[datetime.timedelta, str]] = {
    "24h": (datetime.timedelta(hours=24), "hour"),
    "7d": (datetime.timedelta(days=7), "day"),
    "30d": (datetime.timedelta(days=30), "day"),
}


class Bucket(msgspec.Struct):
    start: datetime.datetime
    requests: int = 0
    errors: int = 0
    tokens: int = 0
    cost: int = 0


class Leader(msgspec.Struct):
    name: str
    requests: int
    tokens: int
    cost: int


class ChannelHealth(msgspec.Struct):
    id: UUID
    name: str
    status: str
    status_reason: str | None
    last_test_at: datetime.datetime | None
    last_test_error: str | None
    last_test_latency_ms: int | None


class Dashboard(msgspec.Struct):
    window: str
    buckets: list[Bucket]
    requests: int
    errors: int
    tokens: int
    cost: int
    top_models: list[Leader]
    top_users: list[Leader]
    channels: list[ChannelHealth]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def _bucket_starts(now: datetime.datetime, window: Window) -> list[datetime.datetime]:
    span, unit = WINDOWS[window]
    step = datetime.timedelta(hours=1) if unit == "hour" else datetime.timedelta(days=1)
    last = now.replace(minute=0, second=0, microsecond=0)
    if unit == "day":
        last = last.replace(hour=0)
    count = int(span / step)
    return [last - step * offset for offset in range(count - 1, -1, -1)]


async def dashboard(
    session: AsyncSession, window: Window, *, user_id: UUID | None, with_channels: bool, now: datetime.datetime
) -> Dashboard:
    """Usage of the whole organization (RLS), or of one user when `user_id` is given."""
    starts = _bucket_starts(now, window)
    scope = [UsageLog.created_at >= starts[0]]
    if user_id is not None:
        scope.append(UsageLog.user_id == user_id)
    tokens = UsageLog.prompt_tokens + UsageLog.completion_tokens
    unit = WINDOWS[window][1]
    # Truncated in UTC, like the bucket starts computed above.
    start = func.date_trunc(unit, UsageLog.created_at, "UTC").label("start")
    buckets = {moment: Bucket(start=moment) for moment in starts}
    rows = await session.execute(
        select(
            start,
            func.count(),
            func.count().filter(CALL_FAILED),
            func.coalesce(func.sum(tokens), 0),
            func.coalesce(func.sum(UsageLog.cost), 0),
        )
        .where(*scope)
        .group_by(start)
    )
    for moment, requests, errors, token_count, cost in rows.all():
        bucket = buckets.get(moment.replace(tzinfo=datetime.UTC))
        if bucket is not None:
            bucket.requests, bucket.errors, bucket.tokens, bucket.cost = requests, errors, int(token_count), int(cost)
    series = list(buckets.values())

    async def leaders(column: Any) -> list[tuple[Any, int, int, int]]:
        result = await session.execute(
            select(column, func.count(), func.coalesce(func.sum(tokens), 0), func.coalesce(func.sum(UsageLog.cost), 0))
            .where(*scope)
            .group_by(column)
            .order_by(func.count().desc())
            .limit(5)
        )
        return [(name, n, int(t), int(c)) for name, n, t, c in result.all()]

    top_models = [
        Leader(name=str(name or "—"), requests=n, tokens=t, cost=c) for name, n, t, c in await leaders(UsageLog.model)
    ]
    top_users: list[Leader] = []
    if user_id is None:
        leading = await leaders(UsageLog.user_id)
        # The five leaders' emails afterwards: a subquery per call (a million lookups for a month) cost more
        # than the grouping itself.
        owners = [owner for owner, *_ in leading if owner is not None]
        emails = dict((await session.execute(select(User.id, User.email).where(User.id.in_(owners)))).tuples().all())
        top_users = [Leader(name=emails.get(owner) or "—", requests=n, tokens=t, cost=c) for owner, n, t, c in leading]
    channels: list[ChannelHealth] = []
    if with_channels:
        channels = [
            ChannelHealth(
                id=channel.id,
                name=channel.name,
                status=channel.status,
                status_reason=channel.status_reason,
                last_test_at=channel.last_test_at,
                last_test_error=channel.last_test_error,
                last_test_latency_ms=channel.last_test_latency_ms,
            )
            for channel in await session.scalars(select(Channel).order_by(Channel.priority.desc(), Channel.name))
        ]
    return Dashboard(
        window=window,
        buckets=series,
        requests=sum(bucket.requests for bucket in series),
        errors=sum(bucket.errors for bucket in series),
        tokens=sum(bucket.tokens for bucket in series),
        cost=sum(bucket.cost for bucket in series),
        top_models=top_models,
        top_users=top_users,
        channels=channels,
    )
