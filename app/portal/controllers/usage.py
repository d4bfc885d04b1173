"""Portal pages for usage: the dashboard's charts and leaders, and the usage log with filters and keyset pages."""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Response, Template
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidRequest, NotFound
from app.gateway.admin import (
    USAGE_EXPORT_KIND,
    UsageFilter,
    channel_names,
    export_download_url,
    key_names,
    usage_detail,
    usage_page,
)
from app.gateway.schemas import USAGE_OUTCOMES
from app.jobs.services import submit_job, visible_job
from app.portal import services
from app.portal.charts import bar_chart
from app.portal.forms import FormInvalid, parse
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_viewer, see_other, viewer_actor
from app.settings import Settings
from app.storage.base import ObjectStore
from app.tenants.money import format_money
from app.tenants.services import user_emails

PAGE_SIZE = 50
FILTERS = ("since", "until", "user_id", "token_id", "channel_id", "model", "outcome", "status_code")
OUTCOME_TEXT = {
    "ok": "Answered",
    "cache_hit": "Answered from the response cache, without a provider",
    "client_disconnected": "The client hung up before the answer was complete",
    "upstream_cut": "The provider cut the answer off",
    "upstream_error": "Every channel tried failed",
    "refused": "Refused by Lyss before any provider was called",
}
REASON_TEXT = {
    "rpm": "too many requests per minute",
    "tpm": "too many tokens per minute",
    "budget": "the budget is used up",
    "model_not_allowed": "the key may not use this model",
    "ip_not_allowed": "the key may not be used from this address",
    "key_disabled": "the key is disabled",
    "key_expired": "the key has expired",
    "no_channel": "no enabled channel serves this model",
}
SCOPE_TEXT = {"key": "the key", "user": "the user", "group": "the group", "organization": "the organization"}


def reason_in_words(reason: str | None, scope: str | None, scope_name: str | None) -> str | None:
    """`budget` of a group named Research: "The budget is used up (the limit set on the group Research)"."""
    if reason is None:
        return None
    words = REASON_TEXT.get(reason, reason.replace("_", " "))
    if scope is not None:
        whose = SCOPE_TEXT.get(scope, scope) + (f" {scope_name}" if scope_name else "")
        words += f" (the limit set on {whose})"
    return words[:1].upper() + words[1:]


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
                label=f"Cost ({viewer.organization.currency})",
                shown=lambda credits: format_money(round(credits), viewer.organization.currency),
            ),
        }
        # A window without calls shows where to start instead, naming the keys (the demo's, on a first start).
        keys = await key_names(db_session, None if viewer.is_admin else viewer.user.id) if not data.requests else {}
        return page(
            viewer, "dashboard.html", data=data, charts=charts, windows=list(services.WINDOWS), keys=list(keys.values())
        )

    @get("/usage", summary="Usage log")
    async def usage_log(
        self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession], request: PortalRequest
    ) -> Template:
        query = request.query_params
        values: dict[str, Any] = {name: query.get(name, "") for name in FILTERS}
        filters, errors = _filters(values, viewer)
        export = None
        if export_id := query.get("export"):
            try:
                export = await visible_job(
                    db_session, UUID(export_id), user_id=viewer.user.id, is_admin=viewer.is_admin
                )
            except (ValueError, NotFound):
                errors["form"] = "No such export."
        try:
            result = await usage_page(db_session, filters, cursor=query.get("cursor") or None, limit=PAGE_SIZE)
        except InvalidRequest as error:
            errors["form"] = error.detail
            result = await usage_page(db_session, filters, cursor=None, limit=PAGE_SIZE)
        users = await user_emails(db_session)
        tokens = await key_names(db_session, None if viewer.is_admin else viewer.user.id)
        channels = await channel_names(db_session) if viewer.is_admin else {}
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
            export=export,
            outcomes=[(outcome, outcome.replace("_", " ")) for outcome in USAGE_OUTCOMES],
        )

    @get("/usage/{usage_id:uuid}", summary="One call of the usage log")
    async def usage_call(
        self, usage_id: FromPath[UUID], viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        call = await usage_detail(db_session, viewer.principal, usage_id)
        return page(
            viewer,
            "usage_detail.html",
            call=call,
            outcome=OUTCOME_TEXT.get(call.outcome, call.outcome.replace("_", " ")),
            # A reason that only repeats the outcome (`upstream_error`) adds nothing to it.
            reason=reason_in_words(call.reason, call.scope, call.scope_name) if call.reason != call.outcome else None,
        )

    @post("/usage/export", summary="Export the usage log as CSV (a job)")
    async def export_usage(
        self,
        job_queue: NamedDependency[RedisQueue],
        settings: NamedDependency[Settings],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Response[None]:
        form = await request.form()
        values = {name: str(form.get(name) or "") for name in FILTERS}
        filters, errors = _filters(values, viewer)
        if errors:
            raise InvalidRequest("Fix the filters before exporting: " + "; ".join(errors.values()))
        job, _ = await submit_job(
            db_session,
            job_queue,
            settings,
            tenant_id=viewer.principal.tenant_id,
            kind=USAGE_EXPORT_KIND,
            payload=msgspec.to_builtins(filters),
            created_by=viewer.user.id,
        )
        shown = {name: value for name, value in values.items() if value} | {"export": str(job.id)}
        return see_other(f"{PORTAL}/usage?{urlencode(shown)}")

    @get("/usage/exports/{job_id:uuid}", summary="Download a usage export")
    async def download_export(
        self,
        object_store: NamedDependency[ObjectStore],
        job_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Response[None]:
        url = await export_download_url(
            db_session, object_store, viewer.principal, job_id, actor=viewer_actor(viewer, request)
        )
        await db_session.commit()  # the download is audited
        return see_other(url)


def _filters(values: dict[str, Any], viewer: Viewer) -> tuple[UsageFilter, dict[str, str]]:
    """The usage filters of the page's form (dates as whole UTC days); users are held to their own calls."""
    raw = {name: value for name, value in values.items() if value}
    for name in ("since", "until"):
        if name in raw:
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
    return filters, errors
