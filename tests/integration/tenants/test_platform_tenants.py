"""The platform operator's tenants: the API for super admins only, suspension's effects, the aggregate function."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from litestar import Litestar
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings
from db.session import tenant_session
from db.tenant import JobEvent, Organization
from tests.support.auth import login
from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, chat_body, issue_key, usage_rows
from tests.support.jobs import events_of, running_worker, submit, wait_for_status
from tests.support.mock_upstream import MockUpstream
from tests.support.platform import super_admin_of
from tests.support.tenants import TenantRows, audit_events

PLATFORM = "/api/platform/tenants"


def platform_routes(app: Litestar) -> list[tuple[str, str]]:
    """Every (method, path) under /api/platform/, with a made-up id in the path."""
    routes = []
    for route in app.routes:
        if not route.path.startswith("/api/platform/"):
            continue
        path = route.path.replace("{tenant_id:uuid}", "00000000-0000-4000-8000-000000000000")
        routes += [
            (method, path) for method in sorted(getattr(route, "methods", ())) if method not in ("HEAD", "OPTIONS")
        ]
    return routes


async def test_only_a_super_admin_reaches_any_platform_route(
    app: Litestar, client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    routes = platform_routes(app)
    assert {path for _, path in routes} >= {PLATFORM, f"{PLATFORM}/00000000-0000-4000-8000-000000000000/suspend"}
    for user in (tenant_a.admin, tenant_a.user):
        for method, path in routes:
            body = {"slug": "x", "name": "x"} if method in ("POST", "PATCH") and path == PLATFORM else {}
            response = await client.request(method, path, json=body, headers=auth_headers(user))
            assert response.status_code == 403, (user.role, method, path, response.text)
    assert (await client.get(PLATFORM)).status_code == 401


async def test_the_operator_lists_filters_creates_renames_and_plans_tenants(
    client: Client,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    operator = auth_headers(await super_admin_of(session_maker, tenant_b))
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "main")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    assert (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 200
    await usage_rows(session_maker, tenant_a, 1)

    listed = {row["slug"]: row for row in (await client.get(PLATFORM, headers=operator)).json()}
    assert set(listed) == {tenant_a.slug, tenant_b.slug}
    alpha = listed[tenant_a.slug]
    assert (alpha["users"], alpha["requests_this_month"], alpha["status"], alpha["subscription_plan"]) == (
        2,
        1,
        "active",
        "basic",
    )
    assert alpha["cost_this_month"] >= 0
    assert listed[tenant_b.slug]["requests_this_month"] == 0

    created = await client.post(PLATFORM, json={"slug": "charlie", "name": " Charlie Ltd "}, headers=operator)
    assert created.status_code == 201, created.text
    charlie = created.json()
    assert (charlie["name"], charlie["users"], charlie["status"]) == ("Charlie Ltd", 0, "active")
    changed = await client.patch(
        f"{PLATFORM}/{charlie['id']}", json={"name": "Charlie", "subscription_plan": "team"}, headers=operator
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["subscription_plan"]) == ("Charlie", "team")
    team = (await client.get(PLATFORM, params={"plan": "team"}, headers=operator)).json()
    assert [row["slug"] for row in team] == ["charlie"]
    since = (await client.get(PLATFORM, params={"created_since": charlie["created_at"]}, headers=operator)).json()
    assert [row["slug"] for row in since] == ["charlie"]
    shown = await client.get(f"{PLATFORM}/{charlie['id']}", headers=operator)
    assert shown.json()["subscription_plan"] == "team"

    actions = [(event.action, event.actor) for event in await audit_events(session_maker, UUID(charlie["id"]))]
    assert ("tenant.renamed", f"platform operator (operator@{tenant_b.slug}.example.com)") in actions
    assert ("tenant.plan_changed", f"platform operator (operator@{tenant_b.slug}.example.com)") in actions


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "", {"slug": "Not A Slug", "name": "x"}, "slug"),
        ("POST", "", {"slug": "fine", "name": "   "}, "name"),
        ("POST", "", {"slug": "fine", "name": "n" * 256}, "name"),
        ("POST", "", {"slug": 7, "name": "x"}, "slug"),
        ("PATCH", "/{id}", {"subscription_plan": "Pro Plan!"}, "plan"),
        ("PATCH", "/{id}", {"subscription_plan": ""}, "plan"),
        ("PATCH", "/{id}", {"name": ""}, "name"),
        ("PATCH", "/{id}", {"colour": "red"}, "colour"),
        ("GET", "?status=asleep", None, "status"),
    ],
)
async def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    method: str,
    path: str,
    body: Any,
    field: str,
) -> None:
    operator = auth_headers(await super_admin_of(session_maker, tenant_a))
    url = PLATFORM + path.replace("{id}", str(tenant_a.id))
    response = await client.request(method, url, json=body, headers=operator)
    assert 400 <= response.status_code < 500, response.text
    assert field in response.text
    async with tenant_session(session_maker, tenant_a.id) as session:
        organization = await session.get_one(Organization, tenant_a.id)
        assert (organization.name, organization.subscription_plan) == (tenant_a.slug.title(), "basic")
    listed = (await client.get(PLATFORM, headers=operator)).json()
    assert [row["slug"] for row in listed] == [tenant_a.slug]


async def test_an_unknown_tenant_is_a_404(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    operator = auth_headers(await super_admin_of(session_maker, tenant_a))
    unknown = f"{PLATFORM}/00000000-0000-4000-8000-000000000000"
    assert (await client.get(unknown, headers=operator)).status_code == 404
    assert (await client.post(f"{unknown}/suspend", headers=operator)).status_code == 404
    assert (await client.patch(unknown, json={"name": "x"}, headers=operator)).status_code == 404


async def test_suspension_stops_sign_in_keys_and_jobs_and_reactivation_brings_them_back(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    operator = auth_headers(await super_admin_of(session_maker, tenant_b))
    user = auth_headers(tenant_a.user)
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "main")
    key, _ = await issue_key(client, user)
    assert (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 200
    job = await submit(client, user, "test.effect", payload={"marker": "paused"})
    signed_in = (await login(client, tenant_a, tenant_a.user.email)).json()
    assert (await client.get("/api/tenant", headers=bearer(signed_in["access_token"]))).status_code == 200

    suspended = await client.post(f"{PLATFORM}/{tenant_a.id}/suspend", headers=operator)
    assert suspended.status_code == 200
    assert suspended.json()["status"] == "suspended"

    refused = await login(client, tenant_a, tenant_a.user.email)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "This organization is not active; contact its administrator."
    assert (await client.get("/api/tenant", headers=bearer(signed_in["access_token"]))).status_code == 401
    call = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
    assert call.status_code == 403
    assert call.json()["error"]["message"] == "This organization is suspended."
    rows = await usage_rows(session_maker, tenant_a, 2)
    assert (rows[-1].status_code, rows[-1].outcome) == (403, "refused")

    async with running_worker(settings):
        for _ in range(500):
            events = await job_events(session_maker, tenant_a, job["id"])
            if "paused" in events:
                break
            await asyncio.sleep(0.02)
        assert "paused" in events
        assert "started" not in events

        reactivated = await client.post(f"{PLATFORM}/{tenant_a.id}/reactivate", headers=operator)
        assert reactivated.status_code == 200
        assert reactivated.json()["status"] == "active"
        done = await wait_for_status(client, user, job["id"], {"succeeded"})
        assert events_of(done, "resumed")

    assert (await login(client, tenant_a, tenant_a.user.email)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 200
    actions = [event.action for event in await audit_events(session_maker, tenant_a.id)]
    assert actions.count("tenant.suspended") == 1
    assert actions.count("tenant.reactivated") == 1


async def job_events(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, job_id: str) -> list[str]:
    async with tenant_session(session_maker, tenant.id) as session:
        return list(await session.scalars(select(JobEvent.event).where(JobEvent.job_id == UUID(job_id))))


async def test_the_overview_function_returns_aggregates_only(
    tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    async with session_maker() as session:
        # The app role, no tenant set: it sees no organization row of its own, yet the function sees all.
        assert (await session.execute(text("SELECT count(*) FROM tenant_organizations"))).scalar() == 0
        result = await session.execute(text("SELECT * FROM platform_tenant_overview()"))
        columns = list(result.keys())
        rows = result.all()
    assert columns == [
        "id",
        "slug",
        "name",
        "status",
        "subscription_plan",
        "max_users",
        "quota",
        "currency",
        "created_at",
        "users",
        "requests_this_month",
        "cost_this_month",
    ]
    assert [(row.slug, row.users) for row in rows] == [(tenant_a.slug, 2)]
    flattened = " ".join(str(value) for row in rows for value in row)
    for content in (tenant_a.user.email, tenant_a.memory.memory_text, tenant_a.conversation.title):
        assert content not in flattened
