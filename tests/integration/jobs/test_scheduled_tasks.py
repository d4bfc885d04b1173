"""Scheduled maintenance, run by hand against the real database, Redis and mock provider."""

from __future__ import annotations

import datetime
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.auth.tasks import remove_expired
from app.gateway.limits import GatewayLimits
from app.gateway.tasks import health_check, settle_budgets
from app.jobs.registry import WorkerServices
from app.jobs.tasks import recover_jobs
from app.settings import Settings
from db.auth import Invitation, UserSession
from db.provider import ApiToken, Channel
from db.session import tenant_session
from db.tenant import AuditEvent, Job, Organization
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel, issue_key
from tests.support.jobs import running_worker, submit, wait_for_status
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

UTC = datetime.UTC


async def _set_channel_status(
    session_maker: async_sessionmaker[AsyncSession], tenant_id: UUID, channel_id: str, status: str
) -> None:
    async with tenant_session(session_maker, tenant_id) as session:
        await session.execute(
            update(Channel).where(Channel.id == UUID(channel_id)).values(status=status, status_reason="test")
        )
        await session.commit()


async def test_health_check_enables_auto_disabled_channels_that_answer_and_leaves_the_rest(
    client: Client,
    worker_services: WorkerServices,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    recovered = await add_channel(client, auth_headers(tenant_a.admin), upstream, "recovered")
    still_down = await add_channel(client, auth_headers(tenant_a.admin), upstream, "still-down")
    switched_off = await add_channel(client, auth_headers(tenant_b.admin), upstream, "switched-off")
    await _set_channel_status(session_maker, tenant_a.id, recovered["id"], "auto_disabled")
    await _set_channel_status(session_maker, tenant_a.id, still_down["id"], "auto_disabled")
    await _set_channel_status(session_maker, tenant_b.id, switched_off["id"], "disabled")
    upstream.behave("still-down", status=503)

    outcome = await health_check(worker_services)

    assert outcome == {"tested": 2, "reenabled": 1}
    assert upstream.calls["switched-off"] == 0  # a channel an admin turned off is not probed
    async with tenant_session(session_maker, tenant_a.id) as session:
        statuses = dict((await session.execute(select(Channel.name, Channel.status))).all())
        reenabled = list(
            await session.scalars(select(AuditEvent.target_id).where(AuditEvent.action == "channel.reenabled"))
        )
        down = await session.scalar(select(Channel).where(Channel.name == "still-down"))
    assert statuses == {"recovered": "enabled", "still-down": "auto_disabled"}
    assert reenabled == [recovered["id"]]
    assert down is not None
    assert down.last_test_error is not None
    async with tenant_session(session_maker, tenant_b.id) as session:
        assert await session.scalar(select(Channel.status)) == "disabled"


async def test_the_health_check_brings_back_an_embeddings_only_channel_with_an_embeddings_call(
    client: Client,
    worker_services: WorkerServices,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    channel = await add_channel(
        client, auth_headers(tenant_a.admin), upstream, "vectors", models=["embed-test"], test_kind="embeddings"
    )
    upstream.behave("vectors", embeddings_only=True)
    await _set_channel_status(session_maker, tenant_a.id, channel["id"], "auto_disabled")

    outcome = await health_check(worker_services)

    assert outcome == {"tested": 1, "reenabled": 1}
    assert upstream.bodies == [("vectors", {"model": "embed-test", "input": "ping"})]
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = await session.get_one(Channel, UUID(channel["id"]))
    assert (stored.status, stored.last_test_error) == ("enabled", None)


async def test_the_channel_test_job_tests_every_channel_and_reports_each(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
) -> None:
    admin = auth_headers(tenant_a.admin)
    healthy = await add_channel(client, admin, upstream, "healthy")
    broken = await add_channel(client, admin, upstream, "broken")
    upstream.behave("broken", status=500)
    job = await submit(client, admin, "gateway.test_channels", payload={"channel_ids": [healthy["id"], broken["id"]]})
    async with running_worker(settings):
        done = await wait_for_status(client, admin, job["id"], {"succeeded", "failed", "dead"})
    assert done["status"] == "succeeded"
    results = {result["name"]: result for result in done["result"]["channels"]}
    assert (results["healthy"]["ok"], results["broken"]["ok"]) == (True, False)
    assert done["result"]["passed"] == 1
    assert [event["data"]["progress"] for event in done["events"] if event["event"] == "progress"] == [50, 100]
    bad = await client.post(
        "/api/jobs", json={"kind": "gateway.test_channels", "payload": {"channel_ids": ["x"]}}, headers=admin
    )
    assert (bad.status_code, "payload" in bad.json()["detail"]) == (400, True)


async def test_budget_periods_reset_and_redis_balances_never_drop_below_postgres(
    client: Client,
    worker_services: WorkerServices,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.user)
    _, daily = await issue_key(client, headers, name="daily", quota=1000, budget_period="daily")
    _, monthly = await issue_key(client, headers, name="monthly", quota=1000, budget_period="monthly")
    _, lifetime = await issue_key(client, headers, name="lifetime", quota=1000)
    now = datetime.datetime.now(UTC)
    yesterday = now - datetime.timedelta(days=1)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + datetime.timedelta(minutes=1)
    async with tenant_session(session_maker, tenant_a.id) as session:
        for token, used, reset_at in ((daily, 500, yesterday), (monthly, 300, this_month), (lifetime, 100, yesterday)):
            await session.execute(
                update(ApiToken)
                .where(ApiToken.id == UUID(token["id"]))
                .values(used_quota=used, budget_reset_at=reset_at)
            )
        await session.execute(update(Organization).values(used_quota=900))
        await session.commit()
    limits = GatewayLimits(worker_services.redis)
    balance = {
        token["id"]: limits.token_used_key(tenant_a.id, UUID(token["id"])) for token in (daily, monthly, lifetime)
    }
    # Redis holds PostgreSQL's count plus what is settled but not flushed, or reserved: 200 for the daily key.
    await worker_services.redis.set(balance[daily["id"]], 700)
    await worker_services.redis.set(balance[monthly["id"]], 300)
    await worker_services.redis.set(balance[lifetime["id"]], 40)  # lost writes: lower than PostgreSQL knows
    await worker_services.redis.set(limits.tenant_used_key(tenant_a.id), 950)

    outcome = await settle_budgets(worker_services)

    assert outcome == {"flushed": 0, "reset": 1, "raised": 1, "alerts": 0}
    assert [await worker_services.redis.get(balance[token["id"]]) for token in (daily, monthly, lifetime)] == [
        b"200",
        b"300",
        b"100",
    ]
    assert await worker_services.redis.get(limits.tenant_used_key(tenant_a.id)) == b"950"
    async with tenant_session(session_maker, tenant_a.id) as session:
        rows = {
            str(token_id): (used, reset_at)
            for token_id, used, reset_at in await session.execute(
                select(ApiToken.id, ApiToken.used_quota, ApiToken.budget_reset_at)
            )
        }
    assert rows[daily["id"]][0] == 0
    assert rows[daily["id"]][1] > now - datetime.timedelta(minutes=1)
    assert rows[monthly["id"]] == (300, this_month)
    assert rows[lifetime["id"]][0] == 100
    # Run again: nothing is due any more, nothing changes.
    assert await settle_budgets(worker_services) == {"flushed": 0, "reset": 0, "raised": 0, "alerts": 0}
    assert await worker_services.redis.get(balance[daily["id"]]) == b"200"


async def test_a_reset_starts_a_balance_that_redis_did_not_hold(
    client: Client,
    worker_services: WorkerServices,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    _, daily = await issue_key(client, auth_headers(tenant_a.user), quota=1000, budget_period="daily")
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.id == UUID(daily["id"]))
            .values(used_quota=1000, budget_reset_at=datetime.datetime.now(UTC) - datetime.timedelta(days=2))
        )
        await session.commit()
    await settle_budgets(worker_services)
    key = GatewayLimits.token_used_key(tenant_a.id, UUID(daily["id"]))
    # Zero, set before PostgreSQL committed: a gateway loading the old 1000 meanwhile cannot overwrite it.
    assert await worker_services.redis.get(key) == b"0"


async def test_cleanup_removes_sessions_and_invitations_that_can_no_longer_be_used(
    worker_services: WorkerServices, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    past = datetime.datetime.now(UTC) - datetime.timedelta(hours=1)
    future = datetime.datetime.now(UTC) + datetime.timedelta(days=1)

    def login(expires: datetime.datetime, refresh_expires: datetime.datetime) -> UserSession:
        return UserSession(
            user_id=tenant_a.user.id,
            family_id=uuid7(),
            kind="api",
            refresh_token_hash=uuid7().hex,
            expires_at=expires,
            refresh_expires_at=refresh_expires,
        )

    def invitation(expires: datetime.datetime, accepted: datetime.datetime | None) -> Invitation:
        return Invitation(
            email=f"{uuid7().hex[:8]}@example.com",
            role="end_user",
            token_hash=uuid7().hex,
            invited_by=tenant_a.admin.id,
            expires_at=expires,
            accepted_at=accepted,
        )

    async with tenant_session(session_maker, tenant_a.id) as session:
        dead, refreshable = login(past, past), login(past, future)
        lapsed, accepted, open_invitation = invitation(past, None), invitation(past, past), invitation(future, None)
        session.add_all([dead, refreshable, lapsed, accepted, open_invitation])
        await session.commit()

    assert await remove_expired(worker_services) == {"sessions": 1, "invitations": 1}

    async with tenant_session(session_maker, tenant_a.id) as session:
        assert set(await session.scalars(select(UserSession.id))) == {refreshable.id}
        assert set(await session.scalars(select(Invitation.id))) == {accepted.id, open_invitation.id}


async def test_recovery_resends_a_job_the_queue_lost_and_buries_one_out_of_attempts(
    client: Client,
    settings: Settings,
    worker_services: WorkerServices,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.user)
    lost = await submit(client, headers, "test.effect", payload={"marker": "lost"})
    exhausted = await submit(client, headers, "test.effect", payload={"marker": "exhausted"})
    waiting = await submit(client, headers, "test.effect", payload={"marker": "waiting"})
    for job_id in (lost["id"], exhausted["id"]):
        # Redis forgot both messages (restarted without persistence, say).
        async with tenant_session(session_maker, tenant_a.id) as session:
            key = await session.scalar(select(Job.queue_key).where(Job.id == UUID(job_id)))
        await worker_services.redis.delete(f"saq:job:lyss:{key}")
        await worker_services.redis.zrem("saq:lyss:incomplete", f"saq:job:lyss:{key}")
        await worker_services.redis.lrem("saq:lyss:queued", 0, f"saq:job:lyss:{key}")
    long_ago = datetime.datetime.now(UTC) - datetime.timedelta(hours=1)
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(
            update(Job)
            .where(Job.id.in_([UUID(lost["id"]), UUID(exhausted["id"]), UUID(waiting["id"])]))
            .values(updated_at=long_ago)
        )
        await session.execute(
            update(Job).where(Job.id == UUID(exhausted["id"])).values(status="running", attempts=3, updated_at=long_ago)
        )
        await session.commit()

    assert await recover_jobs(worker_services) == {"resent": 1, "buried": 1, "failed_tenants": 0}

    buried = (await client.get(f"/api/jobs/{exhausted['id']}", headers=headers)).json()
    assert (buried["status"], buried["events"][-1]["event"]) == ("dead", "dead")
    resent = (await client.get(f"/api/jobs/{lost['id']}", headers=headers)).json()
    assert (resent["status"], resent["events"][-1]["event"]) == ("queued", "requeued")
    assert (await client.get(f"/api/jobs/{waiting['id']}", headers=headers)).json()["events"][-1]["event"] == "queued"
    async with running_worker(settings):
        for job in (lost, waiting):
            assert (await wait_for_status(client, headers, job["id"], {"succeeded", "dead"}))["status"] == "succeeded"
