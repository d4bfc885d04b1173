"""A document's row says how its ingestion ended, however its job ended: read from kb_documents, not the API."""

from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.jobs.registry import WorkerServices
from app.jobs.tasks import recover_jobs
from app.knowledge.tasks import CANCELED_ERROR
from app.settings import Settings
from db.knowledge import KnowledgeDocument
from db.session import tenant_session
from db.tenant import Job
from tests.integration.knowledge.test_ingestion import BASES, CHANNEL, markdown, setup_base, uploaded
from tests.support.clients import AuthHeaders, Client
from tests.support.jobs import running_worker, wait_for_status
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows


async def row_of(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, document: dict[str, Any]
) -> KnowledgeDocument:
    async with tenant_session(session_maker, tenant.id) as session:
        return await session.get_one(KnowledgeDocument, UUID(document["id"]))


async def test_a_cancel_while_queued_marks_the_row_canceled_and_a_retry_queues_it_again_until_ready(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    document = await uploaded(client, user, base["id"], "handbook.md", markdown(3))
    canceled = await client.post(f"/api/jobs/{document['job_id']}/cancel", headers=user)
    assert (canceled.status_code, canceled.json()["status"]) == (202, "canceled")
    row = await row_of(session_maker, tenant_a, document)
    assert (row.status, row.error, str(row.job_id)) == ("canceled", CANCELED_ERROR, document["job_id"])

    retried = await client.post(f"/api/jobs/{document['job_id']}/retry", headers=user)
    assert retried.status_code == 202, retried.text
    row = await row_of(session_maker, tenant_a, document)
    assert (row.status, row.error) == ("queued", None)
    async with running_worker(settings):
        done = await wait_for_status(client, user, document["job_id"], {"succeeded", "failed", "dead"})
    assert done["status"] == "succeeded"
    row = await row_of(session_maker, tenant_a, document)
    assert (row.status, row.error, row.chunk_count > 0) == ("ready", None, True)


async def test_a_job_the_recovery_sweep_declares_dead_fails_its_document(
    client: Client,
    upstream: MockUpstream,
    worker_services: WorkerServices,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    document = await uploaded(client, user, base["id"], "handbook.md", markdown(3))
    job_id = UUID(document["job_id"])
    # Its last attempt claimed the document, then its worker died and Redis forgot the message.
    async with tenant_session(session_maker, tenant_a.id) as session:
        key = await session.scalar(select(Job.queue_key).where(Job.id == job_id))
        long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
        await session.execute(
            update(Job).where(Job.id == job_id).values(status="running", attempts=3, updated_at=long_ago)
        )
        await session.execute(
            update(KnowledgeDocument).where(KnowledgeDocument.id == UUID(document["id"])).values(status="running")
        )
        await session.commit()
    await worker_services.redis.delete(f"saq:job:lyss:{key}")
    await worker_services.redis.zrem("saq:lyss:incomplete", f"saq:job:lyss:{key}")
    await worker_services.redis.lrem("saq:lyss:queued", 0, f"saq:job:lyss:{key}")

    assert await recover_jobs(worker_services) == {"resent": 0, "buried": 1, "failed_tenants": 0}

    row = await row_of(session_maker, tenant_a, document)
    assert row.status == "failed"
    assert row.error == (
        "The ingestion failed (The job's last attempt was lost with its worker); re-index the document to try again."
    )


async def test_a_handler_that_raises_on_its_last_attempt_fails_its_document(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    upstream.behave(CHANNEL, status=500)
    document = await uploaded(client, user, base["id"], "handbook.md", markdown(3))
    async with running_worker(settings):
        done = await wait_for_status(client, user, document["job_id"], {"succeeded", "failed", "dead"})
    assert (done["status"], done["attempts"]) == ("dead", settings.job_max_attempts)
    row = await row_of(session_maker, tenant_a, document)
    assert row.status == "failed"
    assert row.error == f"The ingestion failed ({done['last_error'].rstrip('.')}); re-index the document to try again."


async def test_the_end_of_a_document_s_old_job_leaves_the_document_to_its_new_job(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    document = await uploaded(client, user, base["id"], "handbook.md", markdown(3))
    # New chunking re-indexes the document under a new job, and cancels the old one while it is still queued.
    changed = await client.patch(f"{BASES}/{base['id']}", json={"chunk_tokens": 128}, headers=user)
    assert changed.status_code == 200, changed.text
    old = (await client.get(f"/api/jobs/{document['job_id']}", headers=user)).json()
    assert old["status"] == "canceled"
    row = await row_of(session_maker, tenant_a, document)
    assert str(row.job_id) != document["job_id"]
    assert (row.status, row.error) == ("queued", None)

    async with running_worker(settings):
        done = await wait_for_status(client, user, str(row.job_id), {"succeeded", "failed", "dead"})
    assert done["status"] == "succeeded"
    row = await row_of(session_maker, tenant_a, document)
    assert (row.status, str(row.job_id)) == ("ready", done["id"])

    # The old job retried by hand: it finds the document bound to the newer job and ends without touching it.
    retried = await client.post(f"/api/jobs/{document['job_id']}/retry", headers=user)
    assert retried.status_code == 202, retried.text
    async with running_worker(settings):
        ended = await wait_for_status(client, user, document["job_id"], {"succeeded", "failed", "dead", "canceled"})
    assert ended["status"] == "canceled"
    row = await row_of(session_maker, tenant_a, document)
    assert (row.status, str(row.job_id)) == ("ready", done["id"])
