"""Maintenance mode: the operator's switch (API and CLI), writes refused with 503, reads served, the gateway's
two modes, jobs paused and resumed; against real PostgreSQL, Redis, a real SAQ worker and the mock provider."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from click.testing import CliRunner, Result
from redis.asyncio import Redis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cli import main
from app.observability.maintenance import MAINTENANCE_KEY, MaintenanceSwitch
from app.settings import Settings
from db.auth import User
from db.session import tenant_session
from tests.support.auth import login
from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.commands import cli_environment
from tests.support.gateway import add_channel, chat_body, issue_key
from tests.support.jobs import running_worker, submit, wait_for_status
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import sign_in
from tests.support.tenants import TenantRows, audit_events

SWITCH = "/api/platform/maintenance"
MESSAGE = "Upgrading the database; back by 14:00 UTC."


@pytest.fixture
async def operator(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession], auth_headers: AuthHeaders
) -> AsyncIterator[dict[str, str]]:
    """Headers of a platform operator (tenant A's admin made `super_admin`); the switch is off again after."""
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(update(User).where(User.id == tenant_a.admin.id).values(role="super_admin"))
        await session.commit()
    tenant_a.admin.role = "super_admin"
    headers = auth_headers(tenant_a.admin)
    yield headers
    # Through the API, so that the shared app's own one-second copy is cleared too before the next test.
    await client.delete(SWITCH, headers=headers)


async def switch_on(client: Client, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await client.put(SWITCH, json={"message": MESSAGE, **fields}, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_writes_answer_503_with_the_message_reads_and_sign_in_work_and_off_restores_writes(
    client: Client,
    tenant_a: TenantRows,
    operator: dict[str, str],
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    user = auth_headers(tenant_a.user)
    state = await switch_on(client, operator, retry_after=120)
    assert (state["enabled"], state["message"], state["gateway"], state["retry_after"]) == (True, MESSAGE, "serve", 120)

    refused = await client.post("/api/tokens", json={"name": "during maintenance"}, headers=user)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "120"
    body = refused.json()
    assert (body["status_code"], body["detail"]) == (503, MESSAGE)
    assert body["request_id"] == refused.headers["x-request-id"]
    promoted = await client.put(f"/api/users/{tenant_a.user.id}/role", json={"role": "tenant_admin"}, headers=operator)
    assert promoted.status_code == 503  # the operator's own writes too, but the switch

    listed = await client.get("/api/tokens", headers=user)
    assert listed.status_code == 200
    assert listed.json() == []  # the refused write left nothing behind
    signed_in = await login(client, tenant_a, tenant_a.user.email)
    assert signed_in.status_code == 200
    assert signed_in.json()["access_token"]
    assert (await client.get(SWITCH, headers=operator)).json()["message"] == MESSAGE

    off = await client.delete(SWITCH, headers=operator)
    assert (off.status_code, off.json()["enabled"]) == (200, False)
    assert (await client.post("/api/tokens", json={"name": "after"}, headers=user)).status_code == 201
    actions = [event.action for event in await audit_events(session_maker, tenant_a.id)]
    assert actions.count("platform.maintenance_on") == 1
    assert actions.count("platform.maintenance_off") == 1


async def test_end_users_and_tenant_admins_cannot_see_or_switch_it(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, redis_url: str
) -> None:
    for user in (tenant_a.user, tenant_a.admin):
        headers = auth_headers(user)
        assert (await client.put(SWITCH, json={"message": "mine"}, headers=headers)).status_code == 403
        assert (await client.delete(SWITCH, headers=headers)).status_code == 403
        assert (await client.get(SWITCH, headers=headers)).status_code == 403
    redis = Redis.from_url(redis_url)
    try:
        assert await redis.get(MAINTENANCE_KEY) is None
    finally:
        await redis.aclose()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": "   "}, "message"),
        ({"message": "x" * 501}, "message"),
        ({"message": 5}, "message"),
        ({"message": "ok", "retry_after": 0}, "retry_after"),
        ({"message": "ok", "retry_after": "soon"}, "retry_after"),
        ({"message": "ok", "retry_after": 86401}, "retry_after"),
        ({"message": "ok", "gateway": "maybe"}, "gateway"),
        ({"message": "ok", "colour": "red"}, "colour"),
    ],
)
async def test_bad_switch_bodies_are_400s_naming_the_field_and_change_nothing(
    client: Client, operator: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = await client.put(SWITCH, json=body, headers=operator)
    assert response.status_code == 400, response.text
    assert field in response.text
    assert (await client.get(SWITCH, headers=operator)).json()["enabled"] is False


async def test_the_portal_shows_the_banner_refuses_a_form_post_and_shows_the_version(
    client: Client, tenant_a: TenantRows, operator: dict[str, str]
) -> None:
    version = (await client.get("/api/version")).json()["version"]
    await switch_on(client, operator, retry_after=60)
    token = await sign_in(client, tenant_a, tenant_a.user.email)  # signing in stays open
    page = await client.get("/portal/tokens")
    assert page.status_code == 200
    assert '<p class="maintenance" role="status">' in page.text
    assert MESSAGE in page.text
    assert f"Lyss {version}</footer>" in page.text
    refused = await client.post("/portal/tokens/new", data={"csrf_token": token, "name": "key"})
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["content-type"].startswith("text/html")
    assert MESSAGE in refused.text
    assert "content-security-policy" in refused.headers

    await client.delete(SWITCH, headers=operator)
    page = await client.get("/portal/tokens")
    assert 'class="maintenance"' not in page.text
    assert f"Lyss {version}</footer>" in page.text
    signed_out = await client.post("/portal/logout", data={"csrf_token": token})
    assert signed_out.status_code == 303


async def test_the_gateway_keeps_serving_or_refuses_in_both_error_shapes(
    client: Client, tenant_a: TenantRows, operator: dict[str, str], auth_headers: AuthHeaders, upstream: MockUpstream
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "primary", models=["gpt-test"])
    key, _ = await issue_key(client, auth_headers(tenant_a.user))

    await switch_on(client, operator)  # gateway: serve, the default
    served = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
    assert served.status_code == 200, served.text

    await switch_on(client, operator, gateway="refuse", retry_after=90)
    refused = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "90"
    assert refused.json() == {
        "error": {"message": MESSAGE, "type": "service_unavailable", "param": None, "code": "maintenance"}
    }
    models = await client.get("/v1/models", headers=bearer(key))
    assert models.status_code == 503
    anthropic = await client.post(
        "/v1/messages",
        json={"model": "gpt-test", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": key},
    )
    assert anthropic.status_code == 503
    assert anthropic.json() == {"type": "error", "error": {"type": "api_error", "message": MESSAGE}}
    assert len(upstream.calls) == 1  # only the call made while serving reached the provider

    await client.delete(SWITCH, headers=operator)
    assert (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 200


async def test_the_worker_starts_no_job_while_on_lets_a_running_one_finish_and_resumes_when_off(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders, operator: dict[str, str]
) -> None:
    headers = auth_headers(tenant_a.user)
    slow = await submit(client, headers, "test.effect", payload={"marker": "slow", "steps": 6, "pause_seconds": 0.5})
    waiting = await submit(client, headers, "test.effect", payload={"marker": "waiting"})
    # Another process (the CLI, say) turns it on; the worker's own copy reads it as it starts.
    other_process = MaintenanceSwitch(Redis.from_url(str(settings.redis_url)))
    try:
        await other_process.turn_on(MESSAGE)
        async with running_worker(settings):
            await asyncio.sleep(2.5)  # more than the switch's cache and a dequeue timeout
            for job_id in (slow["id"], waiting["id"]):
                job = (await client.get(f"/api/jobs/{job_id}", headers=headers)).json()
                assert (job["status"], job["attempts"]) == ("queued", 0)
            await other_process.turn_off()
            await wait_for_status(client, headers, slow["id"], {"running"}, within=10)
            await other_process.turn_on(MESSAGE)
            finished = await wait_for_status(client, headers, slow["id"], {"succeeded", "failed", "dead"})
            assert finished["status"] == "succeeded"  # an attempt under way when it was switched on finishes
            await other_process.turn_off()
            done = await wait_for_status(client, headers, waiting["id"], {"succeeded", "failed", "dead"}, within=10)
            assert done["status"] == "succeeded"
    finally:
        await other_process.turn_off()
        await other_process.redis.aclose()


async def test_the_cli_switches_every_process_within_a_second(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders, operator: dict[str, str]
) -> None:
    environment = {**cli_environment(settings), "REDIS_URL": str(settings.redis_url)}

    async def lyss(*arguments: str) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, main, list(arguments), env=environment)

    turned_on = await lyss("maintenance", "on", "--message", MESSAGE, "--retry-after", "30", "--gateway", "refuse")
    assert turned_on.exit_code == 0, turned_on.output
    assert "Maintenance mode is on" in turned_on.output
    assert MESSAGE in turned_on.output
    # A write that can be repeated without reaching a limit of the plan: renaming the organization.
    admin = auth_headers(tenant_a.admin)
    rename = {"name": "Alpha"}
    started = time.monotonic()
    while (response := await client.patch("/api/tenant", json=rename, headers=admin)).status_code != 503:
        assert response.status_code == 200
        assert time.monotonic() - started < 1.5, "the app did not see the switch within its cache time"
        await asyncio.sleep(0.05)
    assert response.headers["retry-after"] == "30"
    status = await lyss("maintenance", "status")
    assert "answers 503" in status.output

    assert (await lyss("maintenance", "off")).output.strip() == "Maintenance mode is off."
    assert (await lyss("maintenance", "off")).output.strip() == "Maintenance mode was already off."
    started = time.monotonic()
    while (await client.patch("/api/tenant", json=rename, headers=admin)).status_code != 200:
        assert time.monotonic() - started < 1.5
        await asyncio.sleep(0.05)
    empty = await lyss("maintenance", "on", "--message", "  ")
    assert (empty.exit_code, empty.output.strip()) == (1, "lyss: The message must not be empty.")
    assert (await lyss("maintenance", "status")).output.strip() == "Maintenance mode is off."
