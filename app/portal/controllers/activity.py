"""Portal pages for what happened: the audit log (admins) and background jobs with their events, cancel and retry."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Response, Template
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncSession

from app.gateway.admin import USAGE_EXPORT_KIND, names_of_channels, names_of_keys
from app.jobs import services as jobs
from app.jobs.registry import JOB_KINDS
from app.jobs.schemas import JOB_STATUSES, JOB_TERMINAL_STATUSES, JobRead, JobStatus, job_read
from app.keyset import Keyset
from app.portal.forms import FormSubmission
from app.portal.lists import PAGE_SIZE, filters_from, next_page_query, page_cursor
from app.portal.web import (
    PORTAL,
    PortalRequest,
    Viewer,
    ViewerOrganization,
    page,
    provide_admin_viewer,
    provide_viewer,
    see_other,
)
from app.redis_client import RedisDependency
from app.settings import Settings
from app.tenants.audit import AuditFilter, audit_event_read, audit_page, readable_details
from app.tenants.schemas import AuditEventRead
from app.tenants.services import names_of_groups, user_email, user_emails

REFRESH_SECONDS = 3
CANCELABLE_STATUSES = ("queued", "running")
DATE_MESSAGE = "Enter a date as YYYY-MM-DD."
# Where a succeeded job's file is downloaded (a 303 to a short-lived link), by the job's kind.
DOWNLOADS = {USAGE_EXPORT_KIND: "/api/usage/exports/{}"}


# --- audit log -----------------------------------------------------------------------------------


AUDIT_FILTERS = ("since", "until", "action", "user_id", "actor", "target_type")
TARGET_LABELS = {"api_token": "API key", "tenant": "organization"}
# How a target's id becomes its name: one query per kind for all the rows of a page.
NAMERS: dict[str, Callable[[AsyncSession, list[UUID]], Awaitable[dict[UUID, str]]]] = {
    "channel": names_of_channels,
    "api_token": names_of_keys,
    "group": names_of_groups,
    "job": jobs.kinds_of_jobs,
}


class AuditRow(msgspec.Struct, frozen=True):
    """One event as the page shows it: names, not ids, and its details as lines."""

    event: AuditEventRead
    actor: str
    target_kind: str | None
    target: str | None
    target_gone: bool
    details: list[str]


def _uuid(text: str | None) -> UUID | None:
    try:
        return UUID(text) if text else None
    except ValueError:
        return None


async def _audit_rows(
    db_session: AsyncSession, events: list[AuditEventRead], emails: Mapping[str, str], organization: ViewerOrganization
) -> list[AuditRow]:
    wanted: dict[str, set[UUID]] = {}
    for event in events:
        if event.target_type in NAMERS and (target_uuid := _uuid(event.target_id)) is not None:
            wanted.setdefault(event.target_type, set()).add(target_uuid)
    names: dict[tuple[str, str], str] = {
        (kind, str(found)): name
        for kind, ids in wanted.items()
        for found, name in (await NAMERS[kind](db_session, sorted(ids))).items()
    }
    names.update({("user", user_id): email for user_id, email in emails.items()})
    rows = []
    for event in events:
        kind, target = event.target_type, event.target_id
        name = names.get((kind or "", target or ""))
        if kind in ("tenant", "organization") and target == str(organization.id):
            name = organization.name
        known = kind in NAMERS or kind == "user"
        rows.append(
            AuditRow(
                event=event,
                actor=emails.get(str(event.actor_user_id)) or event.actor,
                target_kind=TARGET_LABELS.get(kind or "", kind),
                target=name or (f"{target[:8]}…" if target and len(target) > 12 else target),
                target_gone=name is None and known and target is not None,
                details=readable_details(event.details, emails),
            )
        )
    return rows


class AuditPages(Controller):
    path = "/audit"
    dependencies = {"viewer": Provide(provide_admin_viewer)}

    @get("/", summary="Audit log")
    async def audit_log(
        self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession], request: PortalRequest
    ) -> Template:
        query = request.query_params
        filters, errors = filters_from(query, AUDIT_FILTERS, AuditFilter)
        errors.update({name: DATE_MESSAGE for name in ("since", "until") if name in errors})
        after = page_cursor(query, errors)
        events, last = await audit_page(db_session, filters, after=after, limit=PAGE_SIZE)
        values = {name: query.get(name, "") for name in AUDIT_FILTERS}
        # Keyed by text: the trail's target ids and the ids in its details are text, whatever they name.
        emails = {str(user_id): email for user_id, email in (await user_emails(db_session)).items()}
        rows = await _audit_rows(db_session, [audit_event_read(event) for event in events], emails, viewer.organization)
        return page(
            viewer,
            "audit/list.html",
            status_code=400 if errors else 200,
            rows=rows,
            users=emails,
            values=values,
            errors=errors,
            next_query=next_page_query(values, last),
            first_page=after is None,
        )


# --- jobs ----------------------------------------------------------------------------------------


JOB_FILTERS = ("status", "kind")


class JobFilter(msgspec.Struct, frozen=True):
    status: JobStatus | None = None
    kind: Annotated[str, msgspec.Meta(max_length=100)] | None = None


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _back_to(form: Mapping[str, Any], job_id: UUID) -> str:
    """Where a cancel or retry returns: the page it was made from, if that is a jobs page."""
    back = str(form.get("next") or "")
    return back if back.startswith(f"{PORTAL}/jobs") and "//" not in back else f"{PORTAL}/jobs/{job_id}"


class JobPages(Controller):
    """Users see and control the jobs they started; tenant admins every job of the organization."""

    path = "/jobs"
    dependencies = {"viewer": Provide(provide_viewer)}

    @get("/", summary="Jobs")
    async def list_jobs(
        self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession], request: PortalRequest
    ) -> Template:
        query = request.query_params
        filters, errors = filters_from(query, JOB_FILTERS, JobFilter)
        after = page_cursor(query, errors)
        rows = await jobs.list_jobs(
            db_session,
            user_id=viewer.user.id,
            is_admin=viewer.is_admin,
            status=filters.status,
            kind=filters.kind,
            limit=PAGE_SIZE + 1,
            before=after.created_at if after else None,
            before_id=after.id if after else None,
        )
        values = {name: query.get(name, "") for name in JOB_FILTERS}
        return page(
            viewer,
            "jobs/list.html",
            status_code=400 if errors else 200,
            jobs=rows[:PAGE_SIZE],
            users=await user_emails(db_session) if viewer.is_admin else {},
            statuses=JOB_STATUSES,
            kinds=sorted(JOB_KINDS),
            values=values,
            errors=errors,
            next_query=next_page_query(values, Keyset.of(rows[PAGE_SIZE - 1]) if len(rows) > PAGE_SIZE else None),
            first_page=after is None,
            here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            refresh_seconds=REFRESH_SECONDS,
            cancelable=CANCELABLE_STATUSES,
            retryable=jobs.RETRYABLE_STATUSES,
        )

    async def _detail_page(
        self,
        viewer: Viewer,
        db_session: AsyncSession,
        job: JobRead,
        *,
        notices: list[tuple[str, str]] | None = None,
        status_code: int = 200,
    ) -> Template:
        events = await jobs.job_events(db_session, job.id)
        creator = await user_email(db_session, job.created_by) if job.created_by else None
        return page(
            viewer,
            "jobs/detail.html",
            status_code=status_code,
            job=job,
            events=events,
            creator=creator,
            payload=_pretty(job.payload),
            result=None if job.result is None else _pretty(job.result),
            download=DOWNLOADS[job.kind].format(job.id)
            if job.kind in DOWNLOADS and job.status == "succeeded"
            else None,
            live=job.status not in JOB_TERMINAL_STATUSES,
            refresh_seconds=REFRESH_SECONDS,
            cancelable=CANCELABLE_STATUSES,
            retryable=jobs.RETRYABLE_STATUSES,
            notices=notices or [],
        )

    @get("/{job_id:uuid}", summary="A job and its events")
    async def job_detail(
        self, job_id: FromPath[UUID], viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        job = await jobs.visible_job(db_session, job_id, user_id=viewer.user.id, is_admin=viewer.is_admin)
        return await self._detail_page(viewer, db_session, job_read(job))

    @post("/{job_id:uuid}/cancel", summary="Cancel a queued or running job")
    async def cancel_job(
        self,
        job_queue: NamedDependency[RedisQueue],
        job_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
        redis: RedisDependency,
    ) -> Template | Response[None]:
        job = await jobs.visible_job(db_session, job_id, user_id=viewer.user.id, is_admin=viewer.is_admin)
        async with FormSubmission(db_session) as submission:
            await jobs.cancel_job(db_session, job_queue, redis, job, actor=viewer.user.id)
        if submission.refused:
            await db_session.refresh(job)
            notices = [("error", message) for message in submission.errors.values()]
            return await self._detail_page(
                viewer, db_session, job_read(job), notices=notices, status_code=submission.status_code
            )
        return see_other(_back_to(await request.form(), job_id))

    @post("/{job_id:uuid}/retry", summary="Run a failed, canceled or dead job again")
    async def retry_job(
        self,
        job_queue: NamedDependency[RedisQueue],
        settings: NamedDependency[Settings],
        job_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
        redis: RedisDependency,
    ) -> Template | Response[None]:
        job = await jobs.visible_job(db_session, job_id, user_id=viewer.user.id, is_admin=viewer.is_admin)
        async with FormSubmission(db_session) as submission:
            await jobs.retry_job(db_session, job_queue, redis, settings, job, actor=viewer.user.id)
        if submission.refused:
            await db_session.refresh(job)
            notices = [("error", message) for message in submission.errors.values()]
            return await self._detail_page(
                viewer, db_session, job_read(job), notices=notices, status_code=submission.status_code
            )
        return see_other(_back_to(await request.form(), job_id))
