"""What the portal's dashboard shows: usage over a window, its leaders, and the channels' health."""

from __future__ import annotations

import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.gateway.rollups import Sums, series_since, sums_since
from db.auth import User
from db.provider import Channel

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
    """Usage of the whole organization (RLS), or of one user when `user_id` is given, from the rollups: the
    window starts on a whole hour (24 h) or day, and takes every call after that start."""
    starts = _bucket_starts(now, window)
    unit = WINDOWS[window][1]
    buckets = {moment: Bucket(start=moment) for moment in starts}
    for moment, sums in (await series_since(session, starts[0], unit, user_id=user_id)).items():
        bucket = buckets.get(moment)
        if bucket is not None:
            bucket.requests, bucket.errors, bucket.tokens, bucket.cost = sums.calls, sums.errors, sums.tokens, sums.cost
    series = list(buckets.values())

    async def leaders(kind: str) -> list[tuple[Any, Sums]]:
        sums = await sums_since(session, starts[0], kind, user_id=user_id)
        return sorted(sums.items(), key=lambda entry: -entry[1].calls)[:5]

    top_models = [
        Leader(name=str(name or "—"), requests=sums.calls, tokens=sums.tokens, cost=sums.cost)
        for name, sums in await leaders("model" if user_id is None else "user_model")
    ]
    top_users: list[Leader] = []
    if user_id is None:
        leading = await leaders("user")
        owners = [owner for owner, _ in leading if owner is not None]
        emails = dict((await session.execute(select(User.id, User.email).where(User.id.in_(owners)))).tuples().all())
        top_users = [
            Leader(name=emails.get(owner) or "—", requests=sums.calls, tokens=sums.tokens, cost=sums.cost)
            for owner, sums in leading
        ]
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
