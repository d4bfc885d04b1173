"""Budgets and policies set in the portal: a user's, a group's and the one new users start with, as money;
a person sees what their keys may still spend; bad input is shown next to its field and saves nothing."""

from __future__ import annotations

import asyncio
import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.session import tenant_session
from db.tenant import AuditEvent, Budget
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel, chat_body, issue_key, set_price, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows


async def budgets(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows) -> list[Budget]:
    async with tenant_session(session_maker, tenant.id) as session:
        return list((await session.scalars(select(Budget).order_by(Budget.kind))).all())


async def test_an_admin_limits_a_person_in_the_portal_and_their_own_new_key_cannot_escape_it(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "primary", models=["gpt-test", "other-model"])
    await set_price(client, admin, "gpt-test", 0, 1_000_000)
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    page = (await client.get(f"/portal/users/{tenant_a.user.id}")).text
    assert 'name="allowed_models" value="other-model"' in page
    assert "no budget set" in page

    form = {"csrf_token": token, "quota": "abc", "budget_period": "monthly", "rpm_limit": "-1", "tpm_limit": ""}
    wrong = await client.post(f"/portal/users/{tenant_a.user.id}/budget", data=form)
    assert wrong.status_code == 400
    assert field_error(wrong.text, "quota") == "&#39;abc&#39; is not an amount of money; write it like 1.23."
    assert field_error(wrong.text, "rpm_limit") == "At least 0."
    assert 'value="abc"' in wrong.text  # what was typed stays
    tiny = await client.post(f"/portal/users/{tenant_a.user.id}/budget", data=form | {"quota": "0.0000001"})
    assert field_error(tiny.text, "quota") == "Amounts go down to a millionth of the currency (0.000001), no further."
    period = await client.post(f"/portal/users/{tenant_a.user.id}/budget", data=form | {"budget_period": "hourly"})
    assert field_error(period.text, "budget_period") == "&#39;hourly&#39; is not one of the choices."
    assert await budgets(session_maker, tenant_a) == []

    saved = await client.post(
        f"/portal/users/{tenant_a.user.id}/budget",
        data=form | {"quota": "$0.00003", "rpm_limit": "2", "allowed_models": "gpt-test"},
    )
    assert saved.status_code == 303
    (row,) = await budgets(session_maker, tenant_a)
    assert (row.kind, row.user_id, row.quota, row.budget_period, row.rpm_limit, row.allowed_models) == (
        "user",
        tenant_a.user.id,
        30,
        "monthly",
        2,
        ["gpt-test"],
    )
    async with tenant_session(session_maker, tenant_a.id) as session:
        event = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "budget.changed"))).one()
    assert event.details["quota"] == {"from": None, "to": 30}
    shown = (await client.get(saved.headers["location"])).text
    assert "The budget and policy are saved." in shown
    assert "Used $0.00 of $0.00003: <strong>$0.00003 left</strong> this month." in shown
    assert re.search(r'name="allowed_models" value="gpt-test" checked', shown)

    # The person mints an unlimited key of their own: the policy still holds.
    key, _ = await issue_key(client, auth_headers(tenant_a.user), name="escape attempt")
    headers = {"Authorization": f"Bearer {key}"}
    blocked = await client.post("/v1/chat/completions", json=chat_body(model="other-model"), headers=headers)
    assert blocked.status_code == 403
    served = await client.post("/v1/chat/completions", json=chat_body(max_tokens=20), headers=headers)
    assert served.status_code == 200
    assert "x-lyss-output-limit-clamped" not in served.headers
    overdrawn = await client.post("/v1/chat/completions", json=chat_body(max_tokens=26), headers=headers)
    assert overdrawn.status_code == 429  # 25 credits left, 26 asked for
    assert "has $0.000025 left" in overdrawn.json()["error"]["message"]

    # They see what is left on their keys page (as PostgreSQL counts it: once the flusher wrote the call).
    await usage_rows(session_maker, tenant_a, 3)
    await asyncio.sleep(0.6)
    client.cookies.clear()
    await sign_in(client, tenant_a, tenant_a.user.email)
    keys_page = (await client.get("/portal/tokens")).text
    assert "You: <strong>$0.000025 left</strong> of $0.00003 this month, 2 requests a minute; models: gpt-test." in (
        re.sub(r"\s+", " ", keys_page)
    )


async def test_a_group_budget_and_the_new_user_default_are_set_in_the_portal(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    group = await client.post(
        f"/portal/groups/{tenant_a.group.id}/budget",
        data={"csrf_token": token, "quota": "12.5", "budget_period": "weekly", "tpm_limit": "1000"},
    )
    assert group.status_code == 303
    assert (
        "Used $0.00 of $12.50: <strong>$12.50 left</strong> this week."
        in (await client.get(group.headers["location"])).text
    )

    default = await client.post(
        "/portal/settings/new-user-budget",
        data={"csrf_token": token, "quota": "5", "budget_period": "monthly", "rpm_limit": "10"},
    )
    assert default.status_code == 303
    assert 'value="$5.00"' in (await client.get("/portal/settings")).text
    invited = await client.post(
        "/api/auth/invitations", json={"email": "newcomer@alpha.example.com"}, headers=auth_headers(tenant_a.admin)
    )
    accepted = await client.post(
        "/api/auth/invitations/accept", json={"token": invited.json()["token"], "password": "a long new passphrase 7"}
    )
    assert accepted.status_code == 201, accepted.text
    rows = {
        (row.kind, row.quota, row.budget_period, row.rpm_limit, row.tpm_limit)
        for row in await budgets(session_maker, tenant_a)
    }
    assert rows == {
        ("group", 12_500_000, "weekly", 0, 1000),
        ("new_user", 5_000_000, "monthly", 10, 0),
        ("user", 5_000_000, "monthly", 10, 0),
    }
    api = await client.get(f"/api/users/{accepted.json()['id']}/budget", headers=auth_headers(tenant_a.admin))
    assert (api.json()["quota"], api.json()["remaining"]) == (5_000_000, 5_000_000)
    # An end user reaches none of it.
    assert (
        await client.get(f"/api/users/{tenant_a.user.id}/budget", headers=auth_headers(tenant_a.user))
    ).status_code == 403
    refused = await client.patch("/api/tenant/new-user-budget", json={"quota": 1}, headers=auth_headers(tenant_a.user))
    assert refused.status_code == 403
    unknown = await client.patch(
        "/api/tenant/new-user-budget", json={"quota": 1, "surprise": 2}, headers=auth_headers(tenant_a.admin)
    )
    assert unknown.status_code == 400
