"""The usage rollups: the sums of exactly the calls the flusher wrote, and the dashboard's figures read from them."""

from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

import msgspec
from redis.asyncio import Redis
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.gateway.admin import MonthlyUsage, UsageFilter, calls_per_key, usage_by_day, usage_this_month
from app.gateway.engine import UsageRecord
from app.gateway.limits import USAGE_TENANTS_KEY, usage_stream_key
from app.gateway.rollups import DAILY_KINDS, HOURLY_KINDS, sums_since
from app.gateway.usage import UsageFlusher
from app.portal.services import _bucket_starts, dashboard
from db.provider import UsageLog
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, chat_body, issue_key, set_price, token_id_of, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.rollups import expected_rollups, period_start, rollup_rows
from tests.support.tenants import TenantRows


def _record(tenant: TenantRows, user_id: UUID, token_id: UUID, model: str, at: datetime.datetime, **fields: Any) -> Any:
    values: dict[str, Any] = {
        "id": str(uuid7()), "tenant_id": str(tenant.id), "user_id": str(user_id), "token_id": str(token_id),
        "channel_id": None, "request_id": None, "endpoint": "chat", "model": model, "upstream_model": model,
        "prompt_tokens": 11, "completion_tokens": 7, "cost": 300, "latency_ms": 250, "upstream_latency_ms": 200,
        "status_code": 200, "outcome": "ok", "stream": False, "created_at": at,
    }  # fmt: skip
    return UsageRecord(**(values | fields))


async def _flush(redis_url: str, session_maker: async_sessionmaker[AsyncSession], records: list[Any]) -> None:
    redis = Redis.from_url(redis_url)
    try:
        tenants = set()
        for record in records:
            await redis.xadd(usage_stream_key(UUID(record.tenant_id)), {"record": msgspec.json.encode(record)})
            tenants.add(UUID(record.tenant_id).hex)
        await redis.sadd(USAGE_TENANTS_KEY, *tenants)
        await UsageFlusher(redis, session_maker).flush_once()
    finally:
        await redis.aclose()


def _past_calls(tenant: TenantRows, keys: dict[UUID, UUID], now: datetime.datetime) -> list[Any]:
    """Calls over the last 40 days, on hour and day edges and between them, of two users and keys, one failed."""
    (user, user_key), (admin, admin_key) = keys.items()
    ago = [
        datetime.timedelta(minutes=17), datetime.timedelta(hours=2, minutes=1),
        datetime.timedelta(hours=23, minutes=59), datetime.timedelta(hours=30), datetime.timedelta(days=3, minutes=17),
        datetime.timedelta(days=6, hours=23), datetime.timedelta(days=20), datetime.timedelta(days=29, hours=12),
        datetime.timedelta(days=40),
    ]  # fmt: skip
    records = []
    for number, back in enumerate(ago):
        owner, key = (user, user_key) if number % 2 else (admin, admin_key)
        records.append(_record(tenant, owner, key, f"past-{number % 3}", now - back, cost=100 + number))
    records.append(
        _record(tenant, user, user_key, "past-0", now - datetime.timedelta(days=2), status_code=502,
                outcome="upstream_error", cost=0, overshoot=9)
    )  # fmt: skip
    return records


def _window_figures(rows: list[UsageLog], since: datetime.datetime, key: Any) -> dict[Any, tuple[int, int, int, int]]:
    """Calls, errors, tokens and cost per `key(row)` of the rows since `since`, from the log's rows."""
    found: dict[Any, list[int]] = {}
    for row in rows:
        if row.created_at >= since:
            sums = found.setdefault(key(row), [0, 0, 0, 0])
            sums[0] += 1
            sums[1] += int(not 200 <= row.status_code <= 299)
            sums[2] += row.prompt_tokens + row.completion_tokens
            sums[3] += row.cost
    return {name: (calls, errors, tokens, cost) for name, (calls, errors, tokens, cost) in found.items()}


def _days(
    rows: list[UsageLog], since: datetime.datetime | None, until: datetime.datetime | None, kept: Any
) -> list[tuple[Any, ...]]:
    """Calls, errors, prompt and completion tokens and cost per UTC day of the rows in the window that `kept`."""
    found: dict[datetime.date, list[int]] = {}
    for row in rows:
        if (since is None or row.created_at >= since) and (until is None or row.created_at < until) and kept(row):
            sums = found.setdefault(row.created_at.astimezone(datetime.UTC).date(), [0] * 5)
            for index, figure in enumerate(
                (1, int(not 200 <= row.status_code <= 299), row.prompt_tokens, row.completion_tokens, row.cost)
            ):
                sums[index] += figure
    return sorted((day, *sums) for day, sums in found.items())


async def test_the_rollups_and_every_figure_read_from_them_equal_the_calls_of_the_log(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "primary", models=["gpt-a", "gpt-b"])
    await add_channel(client, admin, upstream, "broken", models=["gpt-c"])
    upstream.behave("broken", status=500)
    for model in ("gpt-a", "gpt-b", "gpt-c"):
        await set_price(client, admin, model, 1_000_000, 2_000_000)
    user_key, user_token = await issue_key(client, auth_headers(tenant_a.user))
    admin_key, admin_token = await issue_key(client, admin)
    statuses = []
    for key, model in (
        [(user_key, "gpt-a")] * 3
        + [(user_key, "gpt-b"), (admin_key, "gpt-a")]
        + [(admin_key, "gpt-c")] * 2
        + [(admin_key, "gpt-nowhere")]
    ):
        response = await client.post("/v1/chat/completions", json=chat_body(model), headers=bearer(key))
        statuses.append(response.status_code)
    assert statuses.count(200) == 5, statuses
    assert len([status for status in statuses if status >= 400]) == 3, statuses
    served = await usage_rows(session_maker, tenant_a, len(statuses))
    assert len(served) == len(statuses)
    now = datetime.datetime.now(datetime.UTC)
    keys = {tenant_a.user.id: token_id_of(user_token), tenant_a.admin.id: token_id_of(admin_token)}
    await _flush(redis_url, session_maker, _past_calls(tenant_a, keys, now))

    async with tenant_session(session_maker, tenant_a.id) as session:
        rows = list((await session.scalars(select(UsageLog))).all())
        assert len(rows) == len(statuses) + 10
        assert {row.status_code for row in rows} >= {200, 502}
        assert await rollup_rows(session, "provider_usage_hourly") == expected_rollups(rows, "hour", HOURLY_KINDS)
        assert await rollup_rows(session, "provider_usage_daily") == expected_rollups(rows, "day", DAILY_KINDS)

        for window in ("24h", "7d", "30d"):
            starts = _bucket_starts(now, window)
            unit = "hour" if window == "24h" else "day"
            for user_id in (None, tenant_a.user.id):
                mine = [row for row in rows if user_id is None or row.user_id == user_id]
                figures = await dashboard(session, window, user_id=user_id, with_channels=False, now=now)
                buckets = _window_figures(mine, starts[0], lambda row, unit=unit: period_start(row.created_at, unit))
                assert {
                    bucket.start: (bucket.requests, bucket.errors, bucket.tokens, bucket.cost)
                    for bucket in figures.buckets
                    if bucket.requests
                } == buckets, (window, user_id)
                totals = tuple(map(sum, zip(*buckets.values(), strict=True)))
                assert (figures.requests, figures.errors, figures.tokens, figures.cost) == totals
                by_model = _window_figures(mine, starts[0], lambda row: row.model)
                leaders = {leader.name: (leader.requests, leader.tokens, leader.cost) for leader in figures.top_models}
                assert len(leaders) == min(5, len(by_model)), (window, user_id)
                for name, (calls, _, tokens, cost) in by_model.items():
                    if name in leaders:
                        assert leaders[name] == (calls, tokens, cost), (window, user_id, name)
                    else:  # left out: no more calls than any leader (the five with the most)
                        assert calls <= min(requests for requests, _, _ in leaders.values())
            by_user = _window_figures(rows, starts[0], lambda row: row.user_id)
            emails = {tenant_a.user.id: tenant_a.user.email, tenant_a.admin.id: tenant_a.admin.email}
            admin_view = await dashboard(session, window, user_id=None, with_channels=False, now=now)
            assert {leader.name: leader.requests for leader in admin_view.top_users} == {
                emails[owner]: calls for owner, (calls, *_) in by_user.items()
            }

        # Windows that start anywhere: an edge hour from the log, the whole hours and days from the sums.
        for since in [row.created_at for row in rows] + [now - datetime.timedelta(hours=24), now]:
            for kind, grouped_by in (("model", lambda row: row.model), ("key", lambda row: row.token_id)):
                assert {
                    name: (sums.calls, sums.errors, sums.tokens, sums.cost)
                    for name, sums in (await sums_since(session, since, kind)).items()
                } == _window_figures(rows, since, grouped_by), (since, kind)
            per_key = _window_figures(rows, since, lambda row: row.token_id)
            assert {
                token: (counts.calls, counts.failed) for token, counts in (await calls_per_key(session, since)).items()
            } == {token: (calls, errors) for token, (calls, errors, *_) in per_key.items() if token is not None}
        month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        per_user = _window_figures(rows, month, lambda row: row.user_id)
        assert {
            owner: (usage.requests, usage.cost) for owner, usage in (await usage_this_month(session, now)).items()
        } == {owner: (calls, cost) for owner, (calls, _, _, cost) in per_user.items()}
        assert await usage_this_month(session, now, user_id=tenant_a.user.id) == {
            owner: usage for owner, usage in (await usage_this_month(session, now)).items() if owner == tenant_a.user.id
        }

        # Calls per day for any window and filter: whole days from the daily sums where they answer the filter,
        # the part-days and the other filters from the log.
        user_key_id = keys[tenant_a.user.id]
        user_model = (tenant_a.user.id, "past-0")
        filters: list[tuple[dict[str, Any], Any]] = [
            ({}, lambda row: True),
            ({"user_id": tenant_a.user.id}, lambda row: row.user_id == tenant_a.user.id),
            ({"token_id": user_key_id}, lambda row: row.token_id == user_key_id),
            ({"model": "gpt-a"}, lambda row: row.model == "gpt-a"),
            ({"user_id": tenant_a.user.id, "model": "past-0"}, lambda row: (row.user_id, row.model) == user_model),
            ({"user_id": tenant_a.user.id, "token_id": user_key_id}, lambda row: row.token_id == user_key_id),
            ({"outcome": "ok"}, lambda row: row.outcome == "ok"),
        ]  # fmt: skip
        edges = [None, now, now - datetime.timedelta(days=2, hours=5), *(row.created_at for row in rows[::3])]
        for start in edges:
            for end in (None, now - datetime.timedelta(days=1, hours=3), now + datetime.timedelta(minutes=1)):
                for given, kept in filters:
                    found = await usage_by_day(session, UsageFilter(since=start, until=end, **given))
                    assert [
                        (day.day, day.requests, day.errors, day.prompt_tokens, day.completion_tokens, day.cost)
                        for day in found
                    ] == _days(rows, start, end, kept), (start, end, given)


async def test_a_redelivered_call_is_summed_once_and_another_tenant_sees_no_sums(
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    session_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    key = uuid7()
    first = [_record(tenant_a, tenant_a.user.id, key, "m", now - datetime.timedelta(hours=hours)) for hours in (0, 5)]
    await _flush(redis_url, session_maker, first)
    async with tenant_session(session_maker, tenant_a.id) as session:
        before = await rollup_rows(session, "provider_usage_daily")
    # A flusher that died after its commit, before acknowledging: the same records again, with a new one.
    fresh = _record(tenant_a, tenant_a.user.id, key, "m", now - datetime.timedelta(minutes=1), cost=5)
    await _flush(redis_url, session_maker, [*first, fresh])
    async with tenant_session(session_maker, tenant_a.id) as session:
        rows = list((await session.scalars(select(UsageLog))).all())
        assert len(rows) == 3
        assert before != await rollup_rows(session, "provider_usage_daily")
        assert await rollup_rows(session, "provider_usage_daily") == expected_rollups(rows, "day", DAILY_KINDS)
        assert await rollup_rows(session, "provider_usage_hourly") == expected_rollups(rows, "hour", HOURLY_KINDS)
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        this_month = [row for row in rows if row.created_at >= month_start]
        assert (await usage_this_month(session, now)).get(tenant_a.user.id) == (
            MonthlyUsage(requests=len(this_month), cost=sum(row.cost for row in this_month)) if this_month else None
        )
    async with tenant_session(session_maker, tenant_b.id) as session:
        for table in ("provider_usage_hourly", "provider_usage_daily"):
            assert await session.scalar(text(f"SELECT count(*) FROM {table}")) == 0
        assert (await dashboard(session, "30d", user_id=None, with_channels=False, now=now)).requests == 0
        assert await session.scalar(select(func.count()).select_from(UsageLog)) == 0
