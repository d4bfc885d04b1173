"""Tenant webhooks end to end: the API, signed delivery by the real worker to a loopback receiver, retries with
backoff, the events Lyss emits (auto-disabled channels, dead jobs, budget thresholds) and tenant isolation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.limits import GatewayLimits
from app.gateway.tasks import health_check, settle_budgets, watched_budgets
from app.jobs.registry import WorkerServices
from app.settings import Settings
from app.tenants.webhooks import WatchedBudget, fire_budget_thresholds
from db.provider import Channel
from db.session import tenant_session
from db.tenant import Organization, WebhookEndpoint
from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, chat_body, issue_key, token_id_of
from tests.support.jobs import running_worker, submit, wait_for_status
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows, audit_events
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver

SECRET = "receiver-shared-secret-0123456789"


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as running:
        yield running


async def add_webhook(client: Client, headers: dict[str, str], url: str, *events: str, **fields: Any) -> dict[str, Any]:
    body = {"url": url, "events": list(events) or ["channel.auto_disabled"], "secret": SECRET, **fields}
    response = await client.post("/api/webhooks", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def deliveries(client: Client, headers: dict[str, str], webhook_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/webhooks/{webhook_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json())


async def logged_attempts(
    client: Client, headers: dict[str, str], webhook_id: str, count: int, within: float = 30.0
) -> list[dict[str, Any]]:
    """The delivery log once it has `count` attempts (the worker writes each one after its post)."""
    deadline = time.monotonic() + within
    while len(logged := await deliveries(client, headers, webhook_id)) < count:
        assert time.monotonic() < deadline, logged
        await asyncio.sleep(0.05)
    return logged


async def test_a_test_event_arrives_signed_with_the_endpoints_secret_and_is_logged(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    receiver: WebhookReceiver,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    webhook = await add_webhook(client, admin, receiver.url, "budget.threshold", description="On-call pager")
    assert webhook["secret"] == SECRET
    shown = await client.get(f"/api/webhooks/{webhook['id']}", headers=admin)
    assert "secret" not in shown.json()
    assert SECRET not in (await client.get("/api/webhooks", headers=admin)).text

    sent = await client.post(f"/api/webhooks/{webhook['id']}/test", headers=admin)
    assert sent.status_code == 202, sent.text
    async with running_worker(settings):
        [event] = await receiver.wait_for(1)
        [logged] = await logged_attempts(client, admin, webhook["id"], 1)
    [arrived] = receiver.received
    assert arrived.signed_with(SECRET)
    assert not arrived.signed_with("another-secret-0123456789")
    assert event["id"] == sent.json()["event_id"] == arrived.headers["X-Lyss-Delivery"]
    assert (event["type"], arrived.headers["X-Lyss-Event"]) == ("webhook.test", "webhook.test")
    assert event["tenant_id"] == str(tenant_a.id)
    assert set(event) == {"id", "type", "created_at", "tenant_id", "data"}
    assert (logged["outcome"], logged["attempt"], logged["status_code"]) == ("delivered", 1, 200)
    assert len(logged["response_excerpt"]) == 500
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = await session.scalar(select(WebhookEndpoint.encrypted_secret))
    assert stored is not None
    assert SECRET not in stored


async def test_a_receiver_failing_twice_gets_the_event_once_on_the_third_attempt(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders, receiver: WebhookReceiver
) -> None:
    admin = auth_headers(tenant_a.admin)
    webhook = await add_webhook(client, admin, receiver.url)
    receiver.statuses = [500, 500]
    sent = await client.post(f"/api/webhooks/{webhook['id']}/test", headers=admin)
    async with running_worker(settings):
        await receiver.wait_for(3)
        logged = await logged_attempts(client, admin, webhook["id"], 3)
        await asyncio.sleep(0.5)  # a fourth post would come within this
    assert receiver.answered == [500, 500, 200]
    assert {item.headers["X-Lyss-Delivery"] for item in receiver.received} == {sent.json()["event_id"]}
    logged = sorted(logged, key=lambda row: row["attempt"])
    assert [(row["attempt"], row["outcome"], row["status_code"]) for row in logged] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "delivered", 200),
    ]
    assert logged[0]["error"] == "The receiver answered HTTP 500."


async def test_a_receiver_that_never_answers_well_is_tried_six_times_then_given_up(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders, receiver: WebhookReceiver
) -> None:
    admin = auth_headers(tenant_a.admin)
    # A redirect is an answer like any other non-2xx: never followed.
    webhook = await add_webhook(client, admin, receiver.url, "job.dead_lettered")
    receiver.statuses = [302, 404, 500, 503, 400, 500, 500]
    await client.post(f"/api/webhooks/{webhook['id']}/test", headers=admin)
    async with running_worker(settings):
        await receiver.wait_for(6)
        logged = await logged_attempts(client, admin, webhook["id"], 6)
        await asyncio.sleep(1.0)
    assert receiver.answered == [302, 404, 500, 503, 400, 500]
    assert sorted(row["attempt"] for row in logged) == [1, 2, 3, 4, 5, 6]
    assert {row["outcome"] for row in logged} == {"failed"}
    # A delivery that gives up is in the log; it does not announce itself as a dead job.
    assert receiver.events("job.dead_lettered") == []


async def test_an_unreachable_receiver_is_a_failed_attempt_with_the_network_error(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders, receiver: WebhookReceiver
) -> None:
    admin = auth_headers(tenant_a.admin)
    webhook = await add_webhook(client, admin, "http://127.0.0.1:9/nobody-listens")
    await client.post(f"/api/webhooks/{webhook['id']}/test", headers=admin)
    async with running_worker(settings):
        logged = await logged_attempts(client, admin, webhook["id"], 2)
    assert logged[0]["outcome"] == "failed"
    assert logged[0]["status_code"] is None
    assert "Connect" in logged[0]["error"]


async def test_a_channel_the_gateway_disables_fires_channel_auto_disabled_once(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    receiver: WebhookReceiver,
) -> None:
    admin = auth_headers(tenant_a.admin)
    wants_other_events = await add_webhook(client, admin, receiver.url + "?other", "budget.threshold")
    switched_off = await add_webhook(client, admin, receiver.url + "?off", "channel.auto_disabled", enabled=False)
    await add_webhook(client, admin, receiver.url, "channel.auto_disabled", "channel.reenabled")
    channel = await add_channel(client, admin, upstream, "revoked")
    upstream.behave("revoked", status=401)
    key, _ = await issue_key(client, admin)
    # Calls at once all meet the 401; the one that disables the channel announces it.
    answers = await asyncio.gather(
        *(client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key)) for _ in range(3))
    )
    assert 502 in {answer.status_code for answer in answers}
    assert 200 not in {answer.status_code for answer in answers}
    async with running_worker(settings):
        [event] = await receiver.wait_for(1, "channel.auto_disabled")
        await asyncio.sleep(0.5)
    assert event["data"]["channel_id"] == channel["id"]
    assert event["data"]["name"] == "revoked"
    assert len(receiver.received) == 1
    for quiet in (wants_other_events, switched_off):
        assert await deliveries(client, admin, quiet["id"]) == []


async def test_a_channel_the_health_check_brings_back_fires_channel_reenabled(
    client: Client,
    settings: Settings,
    worker_services: WorkerServices,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    receiver: WebhookReceiver,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_webhook(client, admin, receiver.url, "channel.reenabled")
    channel = await add_channel(client, admin, upstream, "recovering")
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(update(Channel).where(Channel.id == UUID(channel["id"])).values(status="auto_disabled"))
        await session.commit()

    assert (await health_check(worker_services))["reenabled"] == 1
    async with running_worker(settings):
        [event] = await receiver.wait_for(1, "channel.reenabled")
    assert event["data"] == {"channel_id": channel["id"], "name": "recovering"}


async def test_a_channel_test_job_that_brings_a_channel_back_fires_channel_reenabled(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    receiver: WebhookReceiver,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_webhook(client, admin, receiver.url, "channel.reenabled")
    back = await add_channel(client, admin, upstream, "back")
    await add_channel(client, admin, upstream, "never-down")
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(update(Channel).where(Channel.id == UUID(back["id"])).values(status="auto_disabled"))
        await session.commit()
    job = await submit(client, admin, "gateway.test_channels")
    async with running_worker(settings):
        done = await wait_for_status(client, admin, job["id"], {"succeeded", "failed", "dead"})
        [event] = await receiver.wait_for(1, "channel.reenabled")
        await asyncio.sleep(0.3)
    assert (done["status"], done["result"]["reenabled"]) == ("succeeded", 1)
    assert event["data"] == {"channel_id": back["id"], "name": "back"}
    assert len(receiver.received) == 1  # the channel that was never down is not announced


async def test_a_job_that_fails_its_last_attempt_fires_job_dead_lettered(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders, receiver: WebhookReceiver
) -> None:
    await add_webhook(client, auth_headers(tenant_a.admin), receiver.url, "job.dead_lettered")
    job = await submit(client, auth_headers(tenant_a.user), "test.always_fails")
    async with running_worker(settings):
        await wait_for_status(client, auth_headers(tenant_a.user), job["id"], {"dead"})
        [event] = await receiver.wait_for(1, "job.dead_lettered")
    assert event["data"] == {
        "job_id": job["id"],
        "kind": "test.always_fails",
        "error": "RuntimeError: upstream exploded on attempt 3",
    }


async def test_a_key_budget_crossing_80_then_100_percent_fires_each_threshold_once(
    client: Client,
    settings: Settings,
    worker_services: WorkerServices,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    receiver: WebhookReceiver,
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_webhook(client, admin, receiver.url, "budget.threshold")
    _, token = await issue_key(client, admin, name="nightly batch", quota=1_000_000, budget_period="monthly")
    balance = GatewayLimits.token_used_key(tenant_a.id, token_id_of(token))

    await worker_services.redis.set(balance, 790_000)
    await settle_budgets(worker_services)
    await worker_services.redis.set(balance, 850_000)
    # Two runs at once, then a third: the threshold's marker lets one of them fire.
    await asyncio.gather(settle_budgets(worker_services), settle_budgets(worker_services))
    await settle_budgets(worker_services)
    await worker_services.redis.set(balance, 1_000_000)
    await settle_budgets(worker_services)
    await settle_budgets(worker_services)
    async with running_worker(settings):
        events = await receiver.wait_for(2, "budget.threshold")
        await asyncio.sleep(0.5)
    assert len(receiver.received) == 2
    by_threshold = {event["data"]["threshold"]: event["data"] for event in events}
    assert set(by_threshold) == {80, 100}
    assert by_threshold[80] | {"used": None} == {
        "scope": "key",
        "id": token["id"],
        "name": "nightly batch",
        "threshold": 80,
        "used": None,
        "quota": 1_000_000,
        "currency": "USD",
        "period": "monthly",
        "period_start": by_threshold[80]["period_start"],
    }
    assert (by_threshold[80]["used"], by_threshold[100]["used"]) == (850_000, 1_000_000)


async def test_a_users_and_a_groups_budget_fire_their_thresholds_with_their_names(
    client: Client,
    settings: Settings,
    worker_services: WorkerServices,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    receiver: WebhookReceiver,
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_webhook(client, admin, receiver.url, "budget.threshold")
    for path in (f"/api/users/{tenant_a.user.id}/budget", f"/api/groups/{tenant_a.group.id}/budget"):
        response = await client.patch(path, json={"quota": 2_000_000, "budget_period": "weekly"}, headers=admin)
        assert response.status_code == 200, response.text
    limits = GatewayLimits(worker_services.redis)
    await worker_services.redis.set(limits.used_key(tenant_a.id, f"user:{tenant_a.user.id}"), 1_700_000)
    await worker_services.redis.set(limits.used_key(tenant_a.id, f"group:{tenant_a.group.id}"), 2_000_000)
    await asyncio.gather(settle_budgets(worker_services), settle_budgets(worker_services))
    async with running_worker(settings):
        events = await receiver.wait_for(3, "budget.threshold")
        await asyncio.sleep(0.5)
    assert len(receiver.received) == 3
    fired = {(event["data"]["scope"], event["data"]["name"], event["data"]["threshold"]) for event in events}
    # The group went past both thresholds at once: each is announced, once.
    assert fired == {("user", tenant_a.user.email, 80), ("group", "engineering", 80), ("group", "engineering", 100)}
    assert {event["data"]["period"] for event in events} == {"weekly"}


async def test_the_organization_budget_fires_again_only_once_its_quota_is_raised(
    worker_services: WorkerServices, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(update(Organization).values(quota=2_000_000))
        await session.commit()
    await worker_services.redis.set(GatewayLimits.tenant_used_key(tenant_a.id), 1_700_000)
    fired = [
        await fire_budget_thresholds(
            worker_services, tenant_a.id, await budgets_of(worker_services, tenant_a.id), currency="USD"
        )
        for _ in range(2)
    ]
    assert fired == [1, 0]
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(update(Organization).values(quota=4_000_000))
        await session.commit()
    await worker_services.redis.set(GatewayLimits.tenant_used_key(tenant_a.id), 3_300_000)
    assert (
        await fire_budget_thresholds(
            worker_services, tenant_a.id, await budgets_of(worker_services, tenant_a.id), currency="USD"
        )
        == 1
    )


async def budgets_of(worker_services: WorkerServices, tenant_id: UUID) -> list[WatchedBudget]:
    async with tenant_session(worker_services.session_maker, tenant_id) as session:
        budgets, _ = await watched_budgets(session, worker_services.redis, tenant_id)
    assert [budget.scope for budget in budgets] == ["organization"]
    return budgets


async def test_bad_webhook_input_is_refused_naming_the_field_and_nothing_is_saved(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    good: dict[str, Any] = {"url": "https://hooks.example.com/lyss", "events": ["channel.auto_disabled"]}
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"url": "ftp://hooks.example.com/x"}, "url"),
        ({"url": "https://user:pass@hooks.example.com/x"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "http://hooks.example.com:notaport/"}, "url"),
        ({"url": ""}, "url"),
        ({"url": "https://h.example.com/" + "x" * 2000}, "url"),
        ({"url": 42}, "url"),
        ({"events": []}, "events"),
        ({"events": ["channel.exploded"]}, "events"),
        ({"events": "channel.auto_disabled"}, "events"),
        ({"secret": "short"}, "secret"),
        ({"description": "d" * 501}, "description"),
        ({"enabled": "sometimes"}, "enabled"),
        ({"surprise": 1}, "surprise"),
    ]
    for change, field in refusals:
        response = await client.post("/api/webhooks", json=good | change, headers=admin)
        assert response.status_code == 400, (change, response.text)
        assert field in response.text, (change, response.text)
    listed = (await client.get("/api/webhooks", headers=admin)).json()
    assert [row["id"] for row in listed] == [str(tenant_a.webhook.id)]  # the fixture's only

    created = await add_webhook(client, admin, "https://hooks.example.com/lyss")
    path = f"/api/webhooks/{created['id']}"
    refused = await client.patch(path, json={"url": "javascript:alert(1)"}, headers=admin)
    assert refused.status_code == 400
    assert "url" in refused.text
    assert (await client.get(path, headers=admin)).json()["url"] == "https://hooks.example.com/lyss"
    unknown = "/api/webhooks/00000000-0000-0000-0000-000000000000"
    for method in ("GET", "PATCH", "DELETE"):
        assert (await client.request(method, unknown, json={}, headers=admin)).status_code == 404
    assert (await client.post(f"{unknown}/test", headers=admin)).status_code == 404
    assert (await client.get(f"{unknown}/deliveries", headers=admin)).status_code == 404


async def test_only_admins_manage_webhooks_and_each_change_is_audited(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    user = auth_headers(tenant_a.user)
    assert (await client.get("/api/webhooks", headers=user)).status_code == 403
    refused = await client.post(
        "/api/webhooks", json={"url": "https://x.example.com", "events": ["job.dead_lettered"]}, headers=user
    )
    assert refused.status_code == 403
    admin = auth_headers(tenant_a.admin)
    created = await add_webhook(client, admin, "https://hooks.example.com/lyss")
    path = f"/api/webhooks/{created['id']}"
    changed = await client.patch(
        path,
        json={"events": ["job.dead_lettered", "budget.threshold"], "enabled": False, "secret": "n" * 20},
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["events"], changed.json()["enabled"]) == (["budget.threshold", "job.dead_lettered"], False)
    assert (await client.delete(path, headers=admin)).status_code == 204
    assert (await client.get(path, headers=admin)).status_code == 404
    events = [event for event in await audit_events(session_maker, tenant_a.id) if event.target_type == "webhook"]
    assert [event.action for event in events] == ["webhook.created", "webhook.changed", "webhook.deleted"]
    assert events[1].details == {"fields": ["events", "enabled", "secret"]}
    assert "n" * 20 not in str([event.details for event in events])


async def test_a_tenants_webhooks_and_deliveries_are_invisible_to_another_tenant(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    receiver: WebhookReceiver,
) -> None:
    theirs = await add_webhook(client, auth_headers(tenant_a.admin), receiver.url)
    await client.post(f"/api/webhooks/{theirs['id']}/test", headers=auth_headers(tenant_a.admin))
    async with running_worker(settings):
        await logged_attempts(client, auth_headers(tenant_a.admin), theirs["id"], 1)
    other = auth_headers(tenant_b.admin)
    listed = (await client.get("/api/webhooks", headers=other)).json()
    assert [row["id"] for row in listed] == [str(tenant_b.webhook.id)]
    path = f"/api/webhooks/{theirs['id']}"
    assert (await client.get(path, headers=other)).status_code == 404
    assert (await client.get(f"{path}/deliveries", headers=other)).status_code == 404
    assert (await client.patch(path, json={"enabled": False}, headers=other)).status_code == 404
    assert (await client.post(f"{path}/test", headers=other)).status_code == 404
    assert (await client.delete(path, headers=other)).status_code == 404
    still = await deliveries(client, auth_headers(tenant_a.admin), theirs["id"])
    assert [row["outcome"] for row in still] == ["delivered"]
    assert (await client.get(path, headers=auth_headers(tenant_a.admin))).json()["enabled"] is True


async def test_an_event_for_an_endpoint_removed_before_delivery_is_dropped(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders, receiver: WebhookReceiver
) -> None:
    admin = auth_headers(tenant_a.admin)
    webhook = await add_webhook(client, admin, receiver.url)
    await client.post(f"/api/webhooks/{webhook['id']}/test", headers=admin)
    await client.delete(f"/api/webhooks/{webhook['id']}", headers=admin)
    jobs = (await client.get("/api/jobs", params={"kind": "webhooks.deliver"}, headers=admin)).json()
    async with running_worker(settings):
        done = await wait_for_status(client, admin, jobs[0]["id"], {"failed", "succeeded", "dead"})
    assert (done["status"], done["last_error"]) == ("failed", "JobFailed: The webhook endpoint was removed.")
    assert receiver.received == []
