"""Job records and their queue: submit (idempotent), cancel, retry, read. PostgreSQL is the truth; SAQ carries."""

from __future__ import annotations

import importlib
import re
import uuid
from typing import Any
from uuid import UUID

import msgspec
from redis.asyncio import Redis
from saq import Job as QueueJob
from saq.queue.redis import RedisQueue
from sqlalchemy import case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, InvalidRequest, NotFound
from app.jobs.registry import JOB_KINDS, JobKind
from app.observability.logging import get_logger
from app.redis_client import as_cluster
from app.settings import Settings
from db.tenant import Job, JobEvent

QUEUE_NAME = "lyss"
# Every SAQ key of the queue on a Redis Cluster holds this hash tag: they all share one slot.
QUEUE_HASH_TAG = "{" + QUEUE_NAME + "}"
RUN_JOB = "run_job"
# Domains whose `tasks.py` registers job kinds and scheduled work.
BUILTIN_JOB_MODULES = (
    "app.gateway.tasks",
    "app.auth.tasks",
    "app.jobs.tasks",
    "app.memory.tasks",
    "app.chat.tasks",
    "app.tenants.tasks",
    "app.operations.backups",
    "app.knowledge.tasks",
)
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,200}")
# SAQ's own timeout is a backstop behind the runner's: the runner's expiry is an ordinary, retried error.
QUEUE_TIMEOUT_MARGIN_SECONDS = 30
CANCEL_FLAG_TTL_SECONDS = 86_400
RETRYABLE_STATUSES = ("failed", "canceled", "dead")
logger = get_logger("lyss.jobs")


def load_job_modules(settings: Settings) -> None:
    """Import every module that registers job kinds: the built-in domains and LYSS_JOB_MODULES."""
    extra = [name.strip() for name in settings.job_modules.split(",") if name.strip()]
    for module in (*BUILTIN_JOB_MODULES, *extra):
        importlib.import_module(module)


def create_queue(redis: Redis) -> RedisQueue:
    # SAQ's scripts and transactions touch several of its keys at once (`saq:<name>:...`, `saq:job:<name>:...`):
    # on a cluster the name is a hash tag, so that all of them share one slot.
    return RedisQueue(redis, name=QUEUE_NAME if as_cluster(redis) is None else QUEUE_HASH_TAG)


def cluster_task_name(queue: RedisQueue, name: str) -> str:
    """What SAQ calls a scheduled task: its cron key (`cron:<name>`) also names the task's abort key, which must
    share the queue's slot on a cluster."""
    return f"{QUEUE_HASH_TAG}{name}" if queue.name == QUEUE_HASH_TAG else name


def cancel_flag_key(job_id: UUID) -> str:
    return f"lyss:jobs:cancel:{job_id}"


def new_queue_key(job_id: UUID) -> str:
    """Each series of attempts travels under its own SAQ key, so a stale message never runs a retried job.

    The key starts with the queue's hash tag: SAQ's abort key is `saq:abort:<key>`, with no queue name in it, and
    on a Redis Cluster it must share the queue's slot (SAQ's enqueue script touches both). One server ignores it.
    """
    return f"{QUEUE_HASH_TAG}{job_id}:{uuid.uuid4().hex[:12]}"


def kind_for(name: str) -> JobKind:
    kind = JOB_KINDS.get(name)
    if kind is None:
        raise InvalidRequest(f"Unknown job kind '{name}'.")
    return kind


def checked_payload(kind: JobKind, payload: dict[str, Any] | None) -> dict[str, Any]:
    if kind.payload_type is None:
        if payload:
            raise InvalidRequest(f"The job kind '{kind.name}' takes no payload.")
        return {}
    try:
        checked = msgspec.convert(payload or {}, kind.payload_type)
    except msgspec.ValidationError as error:
        raise InvalidRequest(f"payload: {error}") from None
    result: dict[str, Any] = msgspec.to_builtins(checked)
    return result


def check_idempotency_key(key: str | None) -> None:
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest("idempotency_key must be 1 to 200 characters of letters, digits, '.', '_', ':' or '-'.")


async def add_event(
    session: AsyncSession, job_id: UUID, event: str, *, attempt: int, message: str | None = None, **data: Any
) -> None:
    session.add(JobEvent(job_id=job_id, event=event, attempt=attempt, message=message, data=data))
    await session.flush()


async def job_ended(session: AsyncSession, job: Job, status: str) -> None:
    """Tell the job's kind what its status now is (its `on_end`), in the transaction that writes it."""
    kind = JOB_KINDS.get(job.kind)
    if kind is not None and kind.on_end is not None:
        await kind.on_end(session, job, status)


async def enqueue(queue: RedisQueue, job: Job, settings: Settings) -> None:
    """Hand a job's current attempt series to SAQ; if this fails the job stays queued and is re-sent later."""
    assert job.queue_key is not None
    kind = JOB_KINDS.get(job.kind)
    if kind is not None and kind.retry_delays is not None:
        retry_delay, retry_max_delay = kind.retry_delays(settings)
    else:
        retry_delay, retry_max_delay = settings.job_retry_delay_seconds, settings.job_retry_max_delay_seconds
    await queue.enqueue(
        QueueJob(
            function=RUN_JOB,
            kwargs={"job_id": str(job.id), "tenant_id": str(job.tenant_id)},
            key=job.queue_key,
            timeout=job.timeout_seconds + QUEUE_TIMEOUT_MARGIN_SECONDS,
            heartbeat=settings.job_heartbeat_seconds,
            retries=job.max_attempts,
            retry_delay=retry_delay,
            retry_backoff=retry_max_delay,
        )
    )


async def submit_job(
    session: AsyncSession,
    queue: RedisQueue,
    settings: Settings,
    *,
    tenant_id: UUID,
    kind: str,
    payload: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    created_by: UUID | None = None,
) -> tuple[Job, bool]:
    """Record and enqueue a job; with a key already used for this kind, return that job instead (not created)."""
    check_idempotency_key(idempotency_key)
    job_kind = kind_for(kind)
    payload = checked_payload(job_kind, payload)
    job_id = uuid.uuid4()
    inserted = await session.scalar(
        pg_insert(Job)
        .values(
            id=job_id,
            tenant_id=tenant_id,
            kind=kind,
            payload=payload,
            idempotency_key=idempotency_key,
            created_by=created_by,
            max_attempts=job_kind.max_attempts or settings.job_max_attempts,
            timeout_seconds=job_kind.timeout_seconds,
            queue_key=new_queue_key(job_id),
        )
        # A concurrent submit with the same key waits here for the first to commit, then finds its row.
        .on_conflict_do_nothing(constraint="uk_tenant_jobs_idempotency")
        .returning(Job.id)
    )
    if inserted is None:
        existing = await session.scalar(select(Job).where(Job.kind == kind, Job.idempotency_key == idempotency_key))
        await session.commit()
        if existing is None:  # the other submit was rolled back: nothing to return, the caller may try again
            raise Conflict("A job with this idempotency key is being submitted; try again.")
        return existing, False
    await add_event(session, job_id, "queued", attempt=0, kind=kind)
    await session.commit()
    job = await session.get_one(Job, job_id)
    try:
        await enqueue(queue, job, settings)
    except Exception as error:
        # The record is the promise: the reconciler re-sends a queued job that SAQ does not know.
        logger.warning("job not handed to the queue yet", job_id=str(job_id), error=type(error).__name__)
    return job, True


async def visible_job(session: AsyncSession, job_id: UUID, *, user_id: UUID, is_admin: bool) -> Job:
    """A job of the caller's tenant (RLS) that the caller may see: admins every job, users their own."""
    job = await session.get(Job, job_id)
    if job is None or (not is_admin and job.created_by != user_id):
        raise NotFound("No such job.")
    return job


async def job_status(session: AsyncSession, job_id: UUID, *, kind: str) -> str | None:
    """The status of the job `job_id` if it is one of `kind`; None for another kind or an unknown id."""
    return await session.scalar(select(Job.status).where(Job.id == job_id, Job.kind == kind))


async def list_jobs(
    session: AsyncSession,
    *,
    user_id: UUID,
    is_admin: bool,
    status: str | None,
    kind: str | None,
    limit: int,
    before: Any = None,
    before_id: UUID | None = None,
) -> list[Job]:
    """Newest first; with `before` (and `before_id`, the last row's id) the page after that row."""
    statement = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    if not is_admin:
        statement = statement.where(Job.created_by == user_id)
    if status is not None:
        statement = statement.where(Job.status == status)
    if kind is not None:
        statement = statement.where(Job.kind == kind)
    if before is not None and before_id is not None:
        # `<=` alone is what the (tenant_id, created_at) index can range over; the id breaks ties.
        statement = statement.where(Job.created_at <= before, or_(Job.created_at < before, Job.id < before_id))
    elif before is not None:
        statement = statement.where(Job.created_at < before)
    return list(await session.scalars(statement))


async def job_events(session: AsyncSession, job_id: UUID, *, after: Any = None) -> list[JobEvent]:
    statement = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.created_at, JobEvent.id)
    if after is not None:
        statement = statement.where(JobEvent.created_at > after)
    return list(await session.scalars(statement))


async def cancel_job(session: AsyncSession, queue: RedisQueue, redis: Redis, job: Job, *, actor: UUID) -> Job:
    """A queued job is canceled at once; a running one is asked to stop and stops at its next checkpoint."""
    was_queued = Job.status == "queued"
    row = (
        await session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status.in_(("queued", "running")))
            .values(
                cancel_requested_at=func.coalesce(Job.cancel_requested_at, func.now()),
                status=case((was_queued, "canceled"), else_=Job.status),
                finished_at=case((was_queued, func.now()), else_=Job.finished_at),
            )
            .returning(Job.status)
        )
    ).first()
    if row is None:
        status = await session.scalar(select(Job.status).where(Job.id == job.id))
        await session.rollback()
        raise Conflict(f"The job has already finished ({status}); there is nothing to cancel.")
    event = "canceled" if row.status == "canceled" else "cancel_requested"
    await add_event(session, job.id, event, attempt=job.attempts, message="Canceled by a user.", by=str(actor))
    await session.refresh(job)
    if job.status == "canceled":
        # A running job's end is written by its attempt when it stops.
        await job_ended(session, job, "canceled")
    await session.commit()
    await redis.set(cancel_flag_key(job.id), 1, ex=CANCEL_FLAG_TTL_SECONDS)
    if job.queue_key is not None:
        queued = await queue.job(job.queue_key)
        if queued is not None:
            # Takes a waiting message off the queue, or has the worker cancel the running task (and with it
            # any call it is waiting on) within a second.
            await queue.abort(queued, error="canceled")
    return job


async def retry_job(
    session: AsyncSession, queue: RedisQueue, redis: Redis, settings: Settings, job: Job, *, actor: UUID
) -> Job:
    """Run a failed, canceled or dead job again: a new series of attempts under a new queue key."""
    queue_key = new_queue_key(job.id)
    row = (
        await session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status.in_(RETRYABLE_STATUSES))
            .values(
                status="queued",
                queue_key=queue_key,
                cancel_requested_at=None,
                finished_at=None,
                progress=0,
                result=None,
            )
            .returning(Job.id)
        )
    ).first()
    if row is None:
        status = await session.scalar(select(Job.status).where(Job.id == job.id))
        await session.rollback()
        raise Conflict(f"Only a failed, canceled or dead job can be retried; this one is {status}.")
    await add_event(session, job.id, "retry_requested", attempt=job.attempts, by=str(actor))
    await session.refresh(job)
    await job_ended(session, job, "queued")
    await session.commit()
    await redis.delete(cancel_flag_key(job.id))
    try:
        await enqueue(queue, job, settings)
    except Exception as error:
        logger.warning("job not handed to the queue yet", job_id=str(job.id), error=type(error).__name__)
    return job


async def kinds_of_jobs(session: AsyncSession, ids: list[UUID]) -> dict[UUID, str]:
    """The kind (`usage.export`…) of those of `ids` that are jobs of the organization."""
    rows = await session.execute(select(Job.id, Job.kind).where(Job.id.in_(ids)))
    return {row.id: row.kind for row in rows}
