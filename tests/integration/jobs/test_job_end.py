"""A job kind's `on_end`: called with the status the job system writes, in the transaction that writes it."""

from __future__ import annotations

import datetime
from uuid import UUID

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.jobs.registry import WorkerServices
from app.jobs.services import cancel_job, create_queue
from app.jobs.tasks import recover_jobs
from app.settings import Settings
from db.session import tenant_session
from db.tenant import AuditEvent, Job, JobEvent
from tests.support.clients import AuthHeaders, Client
from tests.support.jobs import running_worker, submit, wait_for_status
from tests.support.tenants import TenantRows


async def ends_of(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, marker: str) -> list[str]:
    async with tenant_session(session_maker, tenant.id) as session:
        actions = await session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.target_id == marker, AuditEvent.action.startswith("test.ended."))
            .order_by(AuditEvent.created_at, AuditEvent.id)
        )
        return [action.removeprefix("test.ended.") for action in actions]


async def test_a_cancel_a_retry_and_a_failure_each_tell_the_subject_and_a_success_does_not(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.user)
    job = await submit(client, headers, "test.ends", payload={"marker": "ends-once"})
    assert (await client.post(f"/api/jobs/{job['id']}/cancel", headers=headers)).status_code == 202
    assert await ends_of(session_maker, tenant_a, "ends-once") == ["canceled"]
    assert (await client.post(f"/api/jobs/{job['id']}/retry", headers=headers)).status_code == 202
    broken = await submit(client, headers, "test.ends", payload={"marker": "breaks", "fail": True})
    async with running_worker(settings):
        done = await wait_for_status(client, headers, job["id"], {"succeeded", "failed", "dead"})
        dead = await wait_for_status(client, headers, broken["id"], {"succeeded", "failed", "dead"})
    assert (done["status"], dead["status"]) == ("succeeded", "dead")
    assert await ends_of(session_maker, tenant_a, "ends-once") == ["canceled", "queued"]
    assert await ends_of(session_maker, tenant_a, "breaks") == ["dead"]


async def test_an_end_its_subject_refuses_is_not_written_either(
    client: Client,
    worker_services: WorkerServices,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.user)
    job = await submit(client, headers, "test.ends", payload={"marker": "refused", "refuse_end": True})
    job_id = UUID(job["id"])
    queue = create_queue(worker_services.redis)
    async with tenant_session(session_maker, tenant_a.id) as session:
        row = await session.get_one(Job, job_id)
        with pytest.raises(RuntimeError, match="refused the end"):
            await cancel_job(session, queue, worker_services.redis, row, actor=tenant_a.user.id)
    async with tenant_session(session_maker, tenant_a.id) as session:
        status, finished_at = (await session.execute(select(Job.status, Job.finished_at).where(Job.id == job_id))).one()
        events = list(await session.scalars(select(JobEvent.event).where(JobEvent.job_id == job_id)))
    assert (status, finished_at, events) == ("queued", None, ["queued"])
    assert await ends_of(session_maker, tenant_a, "refused") == []


async def lose(worker_services: WorkerServices, session_maker: async_sessionmaker[AsyncSession], job: Job) -> None:
    """The job's last attempt was running when its worker died, and Redis forgot its message."""
    async with tenant_session(session_maker, job.tenant_id) as session:
        long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
        await session.execute(
            update(Job).where(Job.id == job.id).values(status="running", attempts=1, updated_at=long_ago)
        )
        await session.commit()
    message = f"saq:job:lyss:{job.queue_key}"
    await worker_services.redis.delete(message)
    await worker_services.redis.zrem("saq:lyss:incomplete", message)
    await worker_services.redis.lrem("saq:lyss:queued", 0, message)


async def test_one_tenant_whose_lost_job_cannot_end_does_not_stop_the_others_recovery(
    client: Client,
    worker_services: WorkerServices,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    lost: dict[str, Job] = {}
    for tenant, marker, refuse in ((tenant_a, "a-refuses", True), (tenant_b, "b-ends", False)):
        job = await submit(
            client, auth_headers(tenant.user), "test.ends", payload={"marker": marker, "refuse_end": refuse}
        )
        async with tenant_session(session_maker, tenant.id) as session:
            lost[marker] = await session.get_one(Job, UUID(job["id"]))
        await lose(worker_services, session_maker, lost[marker])

    outcome = await recover_jobs(worker_services)

    assert outcome == {"resent": 0, "buried": 1, "failed_tenants": 1}
    assert await ends_of(session_maker, tenant_b, "b-ends") == ["dead"]
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(Job.status).where(Job.id == lost["a-refuses"].id)) == "running"
