"""`lyss tenant list|show|rename|suspend|reactivate|plan`: the operator's commands against the real services."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cli import CLI_OPERATOR, main
from app.settings import Settings
from db.auth import User
from db.session import tenant_session
from db.tenant import Organization
from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.commands import cli_environment
from tests.support.gateway import add_channel, chat_body, issue_key
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows, audit_events


async def lyss(settings: Settings, *arguments: str, stdin: str | None = None) -> Result:
    # In a thread: the command runs its own event loop, as it does from a shell.
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, main, list(arguments), env=cli_environment(settings), input=stdin)


async def test_list_and_show_print_the_tenants_with_their_state(
    settings: Settings, tenant_a: TenantRows, tenant_b: TenantRows
) -> None:
    result = await lyss(settings, "tenant", "list")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.strip().splitlines()
    assert header.split() == ["SLUG", "NAME", "STATUS", "PLAN", "USERS", "CREATED", "REQUESTS", "COST"]
    assert [row.split()[:5] for row in rows] == [
        [tenant_a.slug, tenant_a.slug.title(), "active", "basic", "2"],
        [tenant_b.slug, tenant_b.slug.title(), "active", "basic", "2"],
    ]
    assert (await lyss(settings, "tenant", "list", "--status", "suspended")).output.strip().count("\n") == 0

    shown = await lyss(settings, "tenant", "show", tenant_a.slug)
    assert shown.exit_code == 0, shown.output
    assert f"id              {tenant_a.id}" in shown.output
    assert "users           2 active (at most 10)" in shown.output


async def test_suspend_stops_a_cached_key_at_once_and_reactivate_brings_it_back(
    settings: Settings,
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "main")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    assert (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 200

    suspended = await lyss(settings, "tenant", "suspend", tenant_a.slug)
    assert suspended.exit_code == 0, suspended.output
    assert "status          suspended" in suspended.output
    # The key was cached as usable by the API process: the command's announcement makes it drop it.
    assert await status_within(client, key, 403)
    refused = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
    assert refused.json()["error"]["code"] == "tenant_suspended"

    assert (await lyss(settings, "tenant", "reactivate", tenant_a.slug)).exit_code == 0
    assert await status_within(client, key, 200)
    events = [(event.action, event.actor) for event in await audit_events(session_maker, tenant_a.id)]
    assert ("tenant.suspended", CLI_OPERATOR) in events
    assert ("tenant.reactivated", CLI_OPERATOR) in events


async def status_within(client: Client, key: str, status: int) -> bool:
    for _ in range(100):
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))
        if response.status_code == status:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_rename_and_plan_change_the_row_and_bad_values_change_nothing(
    settings: Settings, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    assert (await lyss(settings, "tenant", "rename", tenant_a.slug, "Alpha Corp")).exit_code == 0
    assert (await lyss(settings, "tenant", "plan", tenant_a.slug, "enterprise")).exit_code == 0
    for arguments, message in [
        (("plan", tenant_a.slug, "Gold Plan"), "lyss: A plan is a name of 1-50 lower-case letters"),
        (("plan", tenant_a.slug, "gold"), "lyss: There is no plan 'gold'; the plans are: basic, enterprise, team."),
        (("rename", tenant_a.slug, "  "), "lyss: The organization needs a name."),
        (("suspend", "no-such-tenant"), "lyss: No tenant has the slug 'no-such-tenant'."),
    ]:
        result = await lyss(settings, "tenant", *arguments)
        assert result.exit_code == 1
        assert result.output.startswith(message)
        assert len(result.output.strip().splitlines()) == 1
    async with tenant_session(session_maker, tenant_a.id) as session:
        organization = await session.get_one(Organization, tenant_a.id)
        assert (organization.name, organization.subscription_plan, organization.status) == (
            "Alpha Corp",
            "enterprise",
            "active",
        )
    actions = [event.action for event in await audit_events(session_maker, tenant_a.id)]
    assert actions == ["tenant.renamed", "tenant.plan_changed"]


async def test_admin_create_with_super_admin_makes_a_platform_operator(
    settings: Settings, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    arguments = ("admin", "create", "--tenant", tenant_a.slug, "--email", "ops@example.com", "--super-admin")
    result = await lyss(settings, *arguments, stdin="a long enough passphrase\n")
    assert result.exit_code == 0, result.output
    assert "Created platform operator (super_admin) ops@example.com" in result.output
    async with tenant_session(session_maker, tenant_a.id) as session:
        role = await session.scalar(select(User.role).where(User.email == "ops@example.com"))
    assert role == "super_admin"
