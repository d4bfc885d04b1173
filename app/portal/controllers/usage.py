"""Portal pages for usage: the dashboard's charts and leaders, and the usage log with filters and keyset pages."""

from __future__ import annotations

import datetime
from typing import Any

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery
from litestar.response import Template
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidRequest
from app.gateway.services import UsageFilter, usage_page
from app.portal import services
from app.portal.charts import bar_chart
from app.portal.forms import FormInvalid, parse
from app.portal.web import PortalRequest, Viewer, page, provide_viewer
from db.auth import User
from db.provider import ApiToken, Channel

PAGE_SIZE = 50
FILTERS = ("since", "until", "user_id", "token_id", "channel_id", "model", "status_code")


def _bucket_label(moment: datetime.datetime, window: str) -> str:
    return moment.strftime("%H:%M") if window == "24h" else moment.strftime("%b %d")


class UsagePages(Controller):
    path = "/"
    dependencies = {"viewer": Provide(provide_viewer)}

    @get("/", summary="Dashboard")
    async def dashboard(
        self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession], window: FromQuery[str] = "24h"
    ) -> Template:
        if window not in services.WINDOWS:
            window = "24h"
        data = await services.dashboard(
            db_session,
            window,  # type: ignore[arg-type]
            user_id=None if viewer.is_admin else viewer.user.id,
            with_channels=viewer.is_admin,
            now=datetime.datetime.now(datetime.UTC),
        )
        labels = [_bucket_label(bucket.start, window) for bucket in data.buckets]
        charts = {
            "requests": bar_chart(
                list(zip(labels, [bucket.requests for bucket in data.buckets], strict=True)),
                label="Requests (errors in red)",
                highlight=[bucket.errors for bucket in data.buckets],
            ),
            "tokens": bar_chart(
                list(zip(labels, [bucket.tokens for bucket in data.buckets], strict=True)), label="Tokens"
            ),
            "cost": bar_chart(
                list(zip(labels, [bucket.cost for bucket in data.buckets], strict=True)),
                label="Cost (credits)",
                unit=" credits",
            ),
        }
        return page(viewer, "dashboard.html", data=data, charts=charts, windows=list(services.WINDOWS))

    @get("/usage", summary="Usage log")
    async def usage_log(
        self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession], request: PortalRequest
    ) -> Template:
        query = request.query_params
        values: dict[str, Any] = {name: query.get(name, "") for name in FILTERS}
        raw = {name: value for name, value in values.items() if value}
        for name in ("since", "until"):
            if name in raw:  # a date input: the whole day, in UTC
                raw[name] = f"{raw[name]}T00:00:00+00:00"
        errors: dict[str, str] = {}
        try:
            filters = parse(UsageFilter, raw)
        except FormInvalid as invalid:
            errors, filters = invalid.errors, UsageFilter()
        if filters.until is not None:
            filters = msgspec.structs.replace(filters, until=filters.until + datetime.timedelta(days=1))
        if not viewer.is_admin:
            filters = msgspec.structs.replace(filters, user_id=viewer.user.id)
        try:
            result = await usage_page(db_session, filters, cursor=query.get("cursor") or None, limit=PAGE_SIZE)
        except InvalidRequest as error:
            errors["form"] = error.detail
            result = await usage_page(db_session, filters, cursor=None, limit=PAGE_SIZE)
        users = {row.id: row.email for row in await db_session.execute(select(User.id, User.email))}
        tokens_query = select(ApiToken.id, ApiToken.name)
        if not viewer.is_admin:
            tokens_query = tokens_query.where(ApiToken.user_id == viewer.user.id)
        tokens = {row.id: row.name for row in await db_session.execute(tokens_query)}
        channels = (
            {row.id: row.name for row in await db_session.execute(select(Channel.id, Channel.name))}
            if viewer.is_admin
            else {}
        )
        next_query = None
        if result.next_cursor:
            next_query = {name: value for name, value in values.items() if value} | {"cursor": result.next_cursor}
        return page(
            viewer,
            "usage.html",
            status_code=400 if errors else 200,
            rows=result.items,
            values=values,
            errors=errors,
            users=users,
            tokens=tokens,
            channels=channels,
            next_query=next_query,
            first_page=not query.get("cursor"),
        )
