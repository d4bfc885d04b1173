"""The operator's portal pages without a browser: only super admins, the list's filters, the tenant page's forms
(refusals next to their fields, nothing saved), suspension and reactivation."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.session import tenant_session
from db.tenant import Organization
from tests.support.clients import Client
from tests.support.platform import super_admin_of
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows, audit_actions

TENANTS = "/portal/platform/tenants"


async def organization(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows) -> Organization:
    async with tenant_session(session_maker, tenant.id) as session:
        return await session.get_one(Organization, tenant.id)


async def test_only_the_operator_sees_the_platform_menu_and_pages(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    for email in (tenant_a.admin.email, tenant_a.user.email):
        csrf = await sign_in(client, tenant_a, email)
        assert TENANTS not in (await client.get("/portal/")).text
        assert (await client.get(TENANTS)).status_code == 403
        assert (await client.get(f"{TENANTS}/{tenant_a.id}")).status_code == 403
        refused = await client.post(f"{TENANTS}/{tenant_a.id}/suspend", data={"csrf_token": csrf})
        assert refused.status_code == 403
        client.cookies.clear()
    assert (await organization(session_maker, tenant_a)).status == "active"

    operator = await super_admin_of(session_maker, tenant_a)
    await sign_in(client, tenant_a, operator.email)
    assert f'href="{TENANTS}"' in (await client.get("/portal/")).text


async def test_the_list_filters_by_status_plan_and_creation(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    await sign_in(client, tenant_b, (await super_admin_of(session_maker, tenant_b)).email)
    async with tenant_session(session_maker, tenant_a.id) as session:
        (await session.get_one(Organization, tenant_a.id)).subscription_plan = "team"
        await session.commit()
    everyone = await client.get(TENANTS)
    assert f'id="tenant-{tenant_a.slug}"' in everyone.text
    assert f'id="tenant-{tenant_b.slug}"' in everyone.text
    team = await client.get(TENANTS, params={"plan": "team"})
    assert f'id="tenant-{tenant_a.slug}"' in team.text
    assert f'id="tenant-{tenant_b.slug}"' not in team.text
    assert "tenant-" not in (await client.get(TENANTS, params={"status": "suspended"})).text
    assert "tenant-" not in (await client.get(TENANTS, params={"created_since": "2999-01-01"})).text
    for name, value in [("status", "asleep"), ("plan", "Pro Plan"), ("created_since", "yesterday")]:
        refused = await client.get(TENANTS, params={name: value})
        assert refused.status_code == 400
        assert field_error(refused.text, name)


async def test_the_tenant_page_renames_plans_suspends_and_reactivates(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await sign_in(client, tenant_b, (await super_admin_of(session_maker, tenant_b)).email)
    page = f"{TENANTS}/{tenant_a.id}"
    for action, field, value in [
        ("rename", "name", ""),
        ("rename", "name", "n" * 256),
        ("plan", "plan", "Gold Plan"),
        ("plan", "plan", ""),
    ]:
        refused = await client.post(f"{page}/{action}", data={"csrf_token": csrf, field: value})
        assert refused.status_code == 400, (action, value)
        assert field_error(refused.text, field), (action, value)
    stored = await organization(session_maker, tenant_a)
    assert (stored.name, stored.subscription_plan) == (tenant_a.slug.title(), "basic")

    renamed = await client.post(f"{page}/rename", data={"csrf_token": csrf, "name": "Alpha Corp"})
    assert (renamed.status_code, renamed.headers["location"]) == (303, page)
    assert (await client.post(f"{page}/plan", data={"csrf_token": csrf, "plan": "team"})).status_code == 303
    assert (await client.post(f"{page}/suspend", data={"csrf_token": csrf})).status_code == 303
    shown = await client.get(page)
    assert "The organization is suspended" in shown.text
    assert 'id="tenant-status">suspended<' in shown.text
    stored = await organization(session_maker, tenant_a)
    assert (stored.name, stored.subscription_plan, stored.status) == ("Alpha Corp", "team", "suspended")

    assert (await client.post(f"{page}/reactivate", data={"csrf_token": csrf})).status_code == 303
    assert (await organization(session_maker, tenant_a)).status == "active"
    assert await audit_actions(session_maker, tenant_a.id) == [
        "tenant.renamed",
        "tenant.plan_changed",
        "tenant.suspended",
        "tenant.reactivated",
    ]
    assert (await client.get(f"{TENANTS}/00000000-0000-4000-8000-000000000000")).status_code == 404
