"""The usage log's hourly and daily sums: how the flusher keeps them, and how a window's figures are read from them."""

from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import func, not_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.provider import NO_ID, UsageDaily, UsageHourly, UsageLog

# A call counts as failed when its client got anything but a 2xx answer: refused by Lyss, or failed upstream.
CALL_FAILED = not_(UsageLog.status_code.between(200, 299))

# The breakdowns each table keeps. One user's calls of one model only per day: per hour that is nearly a row
# per call; a window's edge hours of it are read from the log, by the (tenant, user, created_at) index.
HOURLY_KINDS = ("model", "user", "key")
DAILY_KINDS = ("model", "user", "key", "user_model")
_GROUPS = {"model": "(model)", "user": "(user_id)", "key": "(token_id)", "user_model": "(user_id, model)"}
_SUMMED = (
    "calls", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "cost", "overshoot", "latency_ms_sum",
)  # fmt: skip


def _upsert(table: str, unit: str, kinds: tuple[str, ...]) -> str:
    """One INSERT summing the calls of `inserted` into `table` per `unit` and breakdown, added to the rows there.

    The rows are written in key order, so that two flushers of one tenant take their row locks in the same
    order rather than deadlock. Every name in it is a constant of this module."""
    sets = ", ".join(_GROUPS[kind] for kind in kinds)
    added = ", ".join(f"{column} = {table}.{column} + excluded.{column}" for column in _SUMMED)
    return f"""
    {table}_rows AS (
        INSERT INTO {table} (tenant_id, kind, start, user_id, token_id, model, {", ".join(_SUMMED)})
        SELECT tenant_id,
               CASE GROUPING(user_id, token_id, model) WHEN 6 THEN 'model' WHEN 3 THEN 'user' WHEN 5 THEN 'key'
                    ELSE 'user_model' END AS kind,
               start, coalesce(user_id, '{NO_ID}'), coalesce(token_id, '{NO_ID}'), coalesce(model, ''),
               count(*), count(*) FILTER (WHERE status_code NOT BETWEEN 200 AND 299), sum(prompt_tokens),
               sum(completion_tokens), sum(cached_tokens), sum(cost), sum(overshoot), sum(latency_ms)
        FROM (SELECT *, date_trunc('{unit}', created_at, 'UTC') AS start FROM inserted) AS calls
        GROUP BY tenant_id, start, GROUPING SETS ({sets})
        ORDER BY 2, 3, 4, 5, 6
        ON CONFLICT (tenant_id, kind, start, user_id, token_id, model) DO UPDATE SET {added}
    )"""  # noqa: S608


def insert_with_rollups(insert_returning_everything: str, returned: str) -> str:
    """The flusher's INSERT of the calls (which must return every column the sums need), the hourly and daily
    sums of the rows it actually inserted (a redelivered call, skipped by ON CONFLICT, counts once), and the
    `returned` columns of the calls: one statement, in the flusher's transaction."""
    return (
        f"WITH inserted AS ({insert_returning_everything}),"
        f"{_upsert('provider_usage_hourly', 'hour', HOURLY_KINDS)},"
        f"{_upsert('provider_usage_daily', 'day', DAILY_KINDS)}\n"
        f"SELECT {returned} FROM inserted"
    )


class Sums(msgspec.Struct):
    calls: int = 0
    errors: int = 0
    tokens: int = 0
    cost: int = 0

    def add(self, calls: int, errors: int, tokens: int, cost: int) -> None:
        # sum() of bigint columns comes back as a Decimal.
        self.calls += int(calls)
        self.errors += int(errors)
        self.tokens += int(tokens)
        self.cost += int(cost)


def _next(moment: datetime.datetime, unit: str) -> datetime.datetime:
    """The first whole hour or day (UTC) at or after `moment`."""
    moment = moment.astimezone(datetime.UTC)
    floor = moment.replace(minute=0, second=0, microsecond=0)
    step = datetime.timedelta(hours=1)
    if unit == "day":
        floor, step = floor.replace(hour=0), datetime.timedelta(days=1)
    return floor if floor == moment else floor + step


def _raw_column(kind: str) -> Any:
    return {"model": UsageLog.model, "user": UsageLog.user_id, "key": UsageLog.token_id, "user_model": UsageLog.model}[
        kind
    ]


def _rollup_column(table: type[UsageHourly | UsageDaily], kind: str) -> Any:
    return {"model": table.model, "user": table.user_id, "key": table.token_id, "user_model": table.model}[kind]


async def sums_since(
    session: AsyncSession, since: datetime.datetime, kind: str, *, user_id: UUID | None = None
) -> dict[Any, Sums]:
    """The calls since `since` (none excluded after it) per model, user or key (`kind`; "user_model": one user's,
    per model), as the log's GROUP BY would give them: the whole days from the daily sums, the whole hours
    before them from the hourly ones, the minutes before those from the log itself. A call without a user or
    key is under None."""
    hours_from = _next(since, "hour")
    days_from = _next(hours_from, "day")
    if kind not in HOURLY_KINDS:
        hours_from = days_from
    if kind == "user_model" and user_id is None:
        raise ValueError("the user_model sums are one user's")
    found: dict[Any, Sums] = {}

    def add(rows: Any) -> None:
        for key, calls, errors, tokens, cost in rows:
            found.setdefault(None if key == NO_ID else key, Sums()).add(calls, errors, tokens, cost)

    if since < hours_from:
        column = _raw_column(kind)
        scope = [UsageLog.created_at >= since, UsageLog.created_at < hours_from]
        if user_id is not None:
            scope.append(UsageLog.user_id == user_id)
        tokens = UsageLog.prompt_tokens + UsageLog.completion_tokens
        add(
            await session.execute(
                select(
                    column,
                    func.count(),
                    func.count().filter(CALL_FAILED),
                    func.coalesce(func.sum(tokens), 0),
                    func.coalesce(func.sum(UsageLog.cost), 0),
                )
                .where(*scope)
                .group_by(column)
            )
        )
    for table, start, end in ((UsageHourly, hours_from, days_from), (UsageDaily, days_from, None)):
        if end is not None and start >= end:
            continue
        column = _rollup_column(table, kind)
        scope = [table.kind == kind, table.start >= start]
        if end is not None:
            scope.append(table.start < end)
        if user_id is not None:
            scope.append(table.user_id == user_id)
        add(
            await session.execute(
                select(
                    column,
                    func.sum(table.calls),
                    func.sum(table.errors),
                    func.sum(table.prompt_tokens + table.completion_tokens),
                    func.sum(table.cost),
                )
                .where(*scope)
                .group_by(column)
            )
        )
    return found


async def series_since(
    session: AsyncSession, since: datetime.datetime, unit: str, *, user_id: UUID | None = None
) -> dict[datetime.datetime, Sums]:
    """The calls since `since` per hour or day (`unit`, UTC), `since` being a whole one: the organization's from
    the hourly or daily sums, one user's per day from the daily ones and per hour from the log."""
    if _next(since, unit) != since:
        raise ValueError(f"{since} is not a whole {unit}")
    found: dict[datetime.datetime, Sums] = {}
    if unit == "hour" and user_id is not None:
        start = func.date_trunc("hour", UsageLog.created_at, "UTC")
        rows: Any = await session.execute(
            select(
                start,
                func.count(),
                func.count().filter(CALL_FAILED),
                func.coalesce(func.sum(UsageLog.prompt_tokens + UsageLog.completion_tokens), 0),
                func.coalesce(func.sum(UsageLog.cost), 0),
            )
            .where(UsageLog.created_at >= since, UsageLog.user_id == user_id)
            .group_by(start)
        )
    else:
        table = UsageHourly if unit == "hour" else UsageDaily
        scope = [table.start >= since]
        if user_id is None:
            scope.append(table.kind == "model")
        else:
            scope += [table.kind == "user_model", table.user_id == user_id]
        rows = await session.execute(
            select(
                table.start,
                func.sum(table.calls),
                func.sum(table.errors),
                func.sum(table.prompt_tokens + table.completion_tokens),
                func.sum(table.cost),
            )
            .where(*scope)
            .group_by(table.start)
        )
    for moment, calls, errors, tokens, cost in rows.all():
        found.setdefault(moment.astimezone(datetime.UTC), Sums()).add(calls, errors, tokens, cost)
    return found


def day_start(moment: datetime.datetime, *, ceiling: bool = False) -> datetime.datetime:
    """The UTC day `moment` is in (`ceiling`: the first whole one at or after it)."""
    if ceiling:
        return _next(moment, "day")
    return moment.astimezone(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def daily_sums(
    session: AsyncSession,
    breakdown: str,
    since: datetime.datetime | None,
    until: datetime.datetime | None,
    *,
    user_id: UUID | None = None,
    token_id: UUID | None = None,
    model: str | None = None,
) -> list[tuple[datetime.date, list[int]]]:
    """Calls, errors, prompt and completion tokens and cost per whole UTC day in [since, until) (either open),
    from the daily sums of `breakdown`, restricted to the user, key and model given."""
    scope = [UsageDaily.kind == breakdown]
    if since is not None:
        scope.append(UsageDaily.start >= since)
    if until is not None:
        scope.append(UsageDaily.start < until)
    for column, value in ((UsageDaily.user_id, user_id), (UsageDaily.token_id, token_id), (UsageDaily.model, model)):
        if value is not None:
            scope.append(column == value)
    rows = await session.execute(
        select(
            UsageDaily.start,
            func.sum(UsageDaily.calls),
            func.sum(UsageDaily.errors),
            func.sum(UsageDaily.prompt_tokens),
            func.sum(UsageDaily.completion_tokens),
            func.sum(UsageDaily.cost),
        )
        .where(*scope)
        .group_by(UsageDaily.start)
    )
    return [(row[0].astimezone(datetime.UTC).date(), [int(figure) for figure in row[1:]]) for row in rows.all()]
