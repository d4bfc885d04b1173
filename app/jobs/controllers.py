"""HTTP endpoints of background jobs: start, list, read, cancel, retry, and follow a job's events (SSE)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.services import is_admin
from app.auth.tokens import Principal
from app.errors import Conflict, NotAllowed
from app.jobs import services
from app.jobs.schemas import JobDetail, JobRead, JobSubmit, event_read, job_detail, job_read
from app.redis_client import RedisDependency
from app.settings import Settings
from db.session import tenant_session
from db.tenant import JOB_TERMINAL_STATUSES, Job, JobStatus

AuthRequest = Request[Principal, Any, State]
# A follower polls PostgreSQL (the truth) at this pace, and re-reads this far back: events are stamped at
# their transaction's start, so one may become visible a little after a later-stamped one.
SSE_POLL_SECONDS = 0.5
SSE_OVERLAP = datetime.timedelta(seconds=5)
SSE_MAX_SECONDS = 3600


class JobController(Controller):
    """Users see and control the jobs they started; tenant admins every job of the organization."""

    path = "/api/jobs"
    tags = ["jobs"]

    @post("/", summary="Start a job; with an idempotency key already used for this kind, get that job back")
    async def submit(
        self,
        job_queue: NamedDependency[RedisQueue],
        settings: NamedDependency[Settings],
        data: JSONBody[JobSubmit],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> Response[JobRead]:
        kind = services.kind_for(data.kind)
        if kind.startable_by is None or (kind.startable_by == "admin" and not is_admin(request.user)):
            raise NotAllowed(f"Jobs of the kind '{kind.name}' cannot be started by you.")
        if kind.admit is not None:
            await kind.admit(db_session, request.user, services.checked_payload(kind, data.payload))
        job, created = await services.submit_job(
            db_session,
            job_queue,
            settings,
            tenant_id=request.user.tenant_id,
            kind=data.kind,
            payload=data.payload,
            idempotency_key=data.idempotency_key,
            created_by=request.user.user_id,
        )
        if not created and not is_admin(request.user) and job.created_by != request.user.user_id:
            # Someone else's job under this key: say no more than that the key is taken.
            raise Conflict("This idempotency key is already used by another user's job of this kind.")
        return Response(job_read(job), status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @get("/", summary="Jobs, newest first (yours; every job for admins)")
    async def list_jobs(
        self,
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
        status: Annotated[JobStatus | None, QueryParameter()] = None,
        kind: Annotated[str | None, QueryParameter(max_length=100)] = None,
        before: Annotated[datetime.datetime | None, QueryParameter(description="Only jobs created earlier")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> list[JobRead]:
        jobs = await services.list_jobs(
            db_session,
            user_id=request.user.user_id,
            is_admin=is_admin(request.user),
            status=status,
            kind=kind,
            limit=limit,
            before=before,
        )
        return [job_read(job) for job in jobs]

    @get("/{job_id:uuid}", summary="One job with its events")
    async def get_job(
        self, job_id: FromPath[UUID], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> JobDetail:
        job = await self._visible(db_session, request, job_id)
        return job_detail(job, await services.job_events(db_session, job.id))

    @post("/{job_id:uuid}/cancel", status_code=HTTP_202_ACCEPTED, summary="Cancel a queued or running job")
    async def cancel(
        self,
        job_queue: NamedDependency[RedisQueue],
        job_id: FromPath[UUID],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
        redis: RedisDependency,
    ) -> JobRead:
        job = await self._visible(db_session, request, job_id)
        job = await services.cancel_job(db_session, job_queue, redis, job, actor=request.user.user_id)
        return job_read(job)

    @post("/{job_id:uuid}/retry", status_code=HTTP_202_ACCEPTED, summary="Run a failed, canceled or dead job again")
    async def retry(
        self,
        job_queue: NamedDependency[RedisQueue],
        settings: NamedDependency[Settings],
        job_id: FromPath[UUID],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
        redis: RedisDependency,
    ) -> JobRead:
        job = await self._visible(db_session, request, job_id)
        job = await services.retry_job(db_session, job_queue, redis, settings, job, actor=request.user.user_id)
        return job_read(job)

    @get("/{job_id:uuid}/events", summary="Follow a job's events (server-sent events) until it finishes")
    async def follow(
        self,
        session_maker: NamedDependency[async_sessionmaker[AsyncSession]],
        job_id: FromPath[UUID],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> ServerSentEvent:
        await self._visible(db_session, request, job_id)
        await db_session.rollback()  # the stream below reads in short transactions of its own
        return ServerSentEvent(_event_stream(session_maker, request.user.tenant_id, job_id))

    @staticmethod
    async def _visible(db_session: AsyncSession, request: AuthRequest, job_id: UUID) -> Job:
        return await services.visible_job(
            db_session, job_id, user_id=request.user.user_id, is_admin=is_admin(request.user)
        )


async def _event_stream(
    session_maker: async_sessionmaker[AsyncSession], tenant_id: UUID, job_id: UUID
) -> AsyncIterator[ServerSentEventMessage]:
    """Each event once, in order; then a final `end` message with the job's outcome."""
    sent: set[UUID] = set()
    since: datetime.datetime | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SSE_MAX_SECONDS
    while loop.time() < deadline:
        async with tenant_session(session_maker, tenant_id) as session:
            job = await session.get(Job, job_id)
            outcome = {"status": job.status, "progress": job.progress} if job else {"status": "gone", "progress": 0}
            events = [
                event_read(event)
                for event in await services.job_events(session, job_id, after=since - SSE_OVERLAP if since else None)
            ]
        for event in events:
            if event.id in sent:
                continue
            sent.add(event.id)
            since = max(since, event.created_at) if since else event.created_at
            yield ServerSentEventMessage(data=msgspec.json.encode(event).decode(), event="job_event", id=str(event.id))
        if outcome["status"] in (*JOB_TERMINAL_STATUSES, "gone"):
            yield ServerSentEventMessage(data=msgspec.json.encode(outcome).decode(), event="end")
            return
        await asyncio.sleep(SSE_POLL_SECONDS)
