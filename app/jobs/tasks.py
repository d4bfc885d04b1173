"""The jobs domain's own upkeep: find records whose queue message was lost and send them again, or bury them."""

from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

from saq.job import Status
from saq.queue.redis import RedisQueue
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.registry import WorkerServices, scheduled
from app.jobs.services import add_event, create_queue, enqueue, job_ended, new_queue_key
from app.observability.logging import get_logger
from app.tenants.services import all_tenant_ids
from app.tenants.webhooks import announce_dead_job
from db.session import tenant_session
from db.tenant import Job, Organization

logger = get_logger("lyss.jobs")

LOST_LAST_ATTEMPT = "The job's last attempt was lost with its worker."


@scheduled("jobs.recover", cron="* * * * *")
async def recover_jobs(services: WorkerServices) -> dict[str, Any]:
    """Send again, under a new key, a queued or running job that SAQ no longer carries (Redis lost it, the
    enqueue failed, the last attempt's worker died); mark it dead once its attempts are spent."""
    queue = create_queue(services.redis)
    # Quiet for longer than a heartbeat and a sweep: SAQ itself would have acted by now.
    settings = services.settings
    quiet = datetime.timedelta(seconds=2 * settings.job_heartbeat_seconds + settings.job_sweep_seconds)
    resent = buried = failed = 0
    async with services.session_maker() as session:
        tenant_ids = await all_tenant_ids(session)
    for tenant_id in tenant_ids:
        try:
            async with tenant_session(services.session_maker, tenant_id) as session:
                outcome = await recover_tenant_jobs(session, queue, services, quiet)
        except Exception as error:
            # One organization's failure (a job kind's end hook, a broken row) must not stop the others' recovery.
            logger.error("job recovery failed for a tenant", tenant_id=str(tenant_id), exc_info=error)
            failed += 1
            continue
        resent += outcome[0]
        buried += len(outcome[1])
        for job_id, kind in outcome[1]:
            await announce_dead_job(services, tenant_id, job_id, kind, LOST_LAST_ATTEMPT)
    return {"resent": resent, "buried": buried, "failed_tenants": failed}


async def recover_tenant_jobs(
    session: AsyncSession, queue: RedisQueue, services: WorkerServices, quiet: datetime.timedelta
) -> tuple[int, list[tuple[UUID, str]]]:
    """One tenant's share of `recover_jobs`: how many were sent again, and the jobs marked dead (id, kind)."""
    if await session.scalar(select(Organization.status)) != "active":
        return 0, []  # a suspended organization's jobs wait for its reactivation, which sends them again
    cutoff = datetime.datetime.now(datetime.UTC) - quiet
    stale = list(
        await session.scalars(
            select(Job)
            .where(Job.status.in_(("queued", "running")), Job.updated_at < cutoff)
            .with_for_update(skip_locked=True)
        )
    )
    to_send: list[Job] = []
    buried: list[tuple[UUID, str]] = []
    for job in stale:
        if job.queue_key and await still_carried(queue, job.queue_key):
            continue
        if job.attempts >= job.max_attempts:
            job.status = "dead"
            job.last_error = LOST_LAST_ATTEMPT
            job.finished_at = datetime.datetime.now(datetime.UTC)
            await add_event(
                session,
                job.id,
                "dead",
                attempt=job.attempts,
                message=LOST_LAST_ATTEMPT,
            )
            await job_ended(session, job, "dead")
            buried.append((job.id, job.kind))
        else:
            job.status = "queued"
            job.queue_key = new_queue_key(job.id)
            await add_event(
                session,
                job.id,
                "requeued",
                attempt=job.attempts,
                message="The queue had lost this job; it was sent again.",
            )
            to_send.append(job)
    await session.commit()
    for job in to_send:
        await enqueue(queue, job, services.settings)
    return len(to_send), buried


async def still_carried(queue: RedisQueue, key: str) -> bool:
    """Whether SAQ will still deliver this message, or a live worker is running it.

    SAQ's own status is not enough: a message can say `active` after the worker that held it died
    (its heartbeat stops: `stuck`), or `queued` after it left the queue's lists.
    """
    carried = await queue.job(key)
    if carried is None:
        return False
    if carried.status in (Status.NEW, Status.QUEUED):
        return await queue.redis.zscore(queue.namespace("incomplete"), carried.id) is not None
    if carried.status in (Status.ACTIVE, Status.ABORTING):
        return not carried.stuck
    return False
