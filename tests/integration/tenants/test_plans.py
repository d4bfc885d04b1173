"""Plans: each limit refused with a message naming it, exactly at the limit under concurrency, and shown."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.tenants.services import create_tenant
from db.auth import User
from db.session import tenant_session
from tests.support.auth import set_policy
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel, issue_key
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

NEW_PASSWORD = "a-long-and-unusual-passphrase-7"
PlanSetter = Callable[..., Awaitable[str]]


@pytest.fixture
async def put_on_plan(owner_engine: AsyncEngine) -> AsyncIterator[PlanSetter]:
    """Put a tenant on a plan of its own with the given limits (the catalogue is written by migrations only)."""
    made: list[tuple[str, Any]] = []

    async def put(tenant: TenantRows, **limits: Any) -> str:
        name = f"test-{secrets.token_hex(4)}"
        row = {
            "name": name,
            "display_name": "Tiny",
            "max_users": -1,
            "allowed_provider_types": [],
            "max_channels": -1,
            "max_api_keys_per_user": -1,
            "features": "{}",
            **limits,
        }
        async with owner_engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO platform_plans (name, display_name, max_users, allowed_provider_types, "
                    "max_channels, max_api_keys_per_user, features) VALUES (:name, :display_name, :max_users, "
                    ":allowed_provider_types, :max_channels, :max_api_keys_per_user, CAST(:features AS jsonb))"
                ),
                row,
            )
            await _put(connection, tenant.id, name)
        made.append((name, tenant.id))
        return name

    yield put
    async with owner_engine.begin() as connection:
        for name, tenant_id in made:
            await _put(connection, tenant_id, "basic")
            await connection.execute(text("DELETE FROM platform_plans WHERE name = :name"), {"name": name})


async def _put(connection: AsyncConnection, tenant_id: UUID, plan: str) -> None:
    # Row-level security holds for the owner too: the update names the tenant it acts for.
    await connection.execute(text("SELECT set_config('app.tenant_id', :id, true)"), {"id": str(tenant_id)})
    await connection.execute(
        text("UPDATE tenant_organizations SET subscription_plan = :plan WHERE id = :id"),
        {"plan": plan, "id": tenant_id},
    )


async def _active_users(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows) -> int:
    async with tenant_session(session_maker, tenant.id) as session:
        return await session.scalar(select(func.count()).select_from(User).where(User.status == "active")) or 0


async def test_concurrent_invitation_accepts_never_exceed_the_user_limit(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    put_on_plan: PlanSetter,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await put_on_plan(tenant_a, max_users=5)  # the admin and the user are 2: room for 3
    admin = auth_headers(tenant_a.admin)
    tokens = []
    for number in range(10):
        invited = await client.post(
            "/api/auth/invitations", json={"email": f"new{number}@alpha.example.com"}, headers=admin
        )
        assert invited.status_code == 201, invited.text
        tokens.append(invited.json()["token"])

    answers = await asyncio.gather(
        *(
            client.post("/api/auth/invitations/accept", json={"token": token, "password": NEW_PASSWORD})
            for token in tokens
        )
    )
    assert sorted(answer.status_code for answer in answers) == [201] * 3 + [403] * 7
    refused = next(answer for answer in answers if answer.status_code == 403)
    assert "allows 5 active users" in refused.json()["detail"]
    assert await _active_users(session_maker, tenant_a) == 5

    # A full organization cannot invite more; a deactivated user frees a seat, and reactivating takes it back.
    full = await client.post("/api/auth/invitations", json={"email": "late@alpha.example.com"}, headers=admin)
    assert full.status_code == 403
    assert "Tiny plan allows 5 active users" in full.json()["detail"]
    assert (await client.post(f"/api/users/{tenant_a.user.id}/deactivate", headers=admin)).status_code == 200
    invited = await client.post("/api/auth/invitations", json={"email": "late@alpha.example.com"}, headers=admin)
    assert invited.status_code == 201, invited.text
    accepted = await client.post(
        "/api/auth/invitations/accept", json={"token": invited.json()["token"], "password": NEW_PASSWORD}
    )
    assert accepted.status_code == 201, accepted.text
    reactivated = await client.post(f"/api/users/{tenant_a.user.id}/reactivate", headers=admin)
    assert reactivated.status_code == 403
    assert await _active_users(session_maker, tenant_a) == 5


async def test_sign_up_stops_at_the_user_limit(
    client: Client,
    tenant_a: TenantRows,
    put_on_plan: PlanSetter,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await put_on_plan(tenant_a, max_users=3)
    await set_policy(session_maker, tenant_a, allow_self_signup=True)
    body = {"tenant": tenant_a.slug, "password": NEW_PASSWORD}
    first = await client.post("/api/auth/signup", json={**body, "email": "one@alpha.example.com"})
    assert first.status_code == 201, first.text
    second = await client.post("/api/auth/signup", json={**body, "email": "two@alpha.example.com"})
    assert second.status_code == 403
    assert "allows 3 active users" in second.json()["detail"]
    assert await _active_users(session_maker, tenant_a) == 3


async def test_channels_limited_in_number_and_provider_type(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, upstream: MockUpstream, put_on_plan: PlanSetter
) -> None:
    await put_on_plan(tenant_a, max_channels=1, allowed_provider_types=["openai-compatible"])
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "first")
    second = await client.post(
        "/api/channels",
        json={
            "name": "second",
            "type": "openai-compatible",
            "models": ["m"],
            "keys": ["k"],
            "base_url": upstream.base_url("x"),
        },
        headers=admin,
    )
    assert second.status_code == 403
    assert "allows 1 channels" in second.json()["detail"]
    other_type = await client.post(
        "/api/channels", json={"name": "claude", "type": "anthropic", "models": ["m"], "keys": ["k"]}, headers=admin
    )
    assert other_type.status_code == 403
    assert "does not include anthropic channels" in other_type.json()["detail"]


async def test_api_keys_per_user_limited(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, put_on_plan: PlanSetter
) -> None:
    await put_on_plan(tenant_a, max_api_keys_per_user=2)
    user = auth_headers(tenant_a.user)
    await issue_key(client, user, name="one")
    await issue_key(client, user, name="two")
    third = await client.post("/api/tokens", json={"name": "three"}, headers=user)
    assert third.status_code == 403
    assert "allows 2 API keys per user" in third.json()["detail"]
    # The limit is per user: the admin still has room.
    await issue_key(client, auth_headers(tenant_a.admin), name="admin's")


async def test_memory_cannot_be_turned_on_where_the_plan_leaves_it_out(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, put_on_plan: PlanSetter
) -> None:
    await put_on_plan(tenant_a, features='{"memory": false}')
    admin = auth_headers(tenant_a.admin)
    refused = await client.put("/api/memories/settings", json={"enabled": True}, headers=admin)
    assert refused.status_code == 403
    assert "does not include memory" in refused.json()["detail"]
    off = await client.put("/api/memories/settings", json={"enabled": False}, headers=admin)
    assert off.status_code == 200, off.text
    assert off.json()["enabled"] is False


async def test_the_plan_and_its_use_are_shown(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, put_on_plan: PlanSetter
) -> None:
    name = await put_on_plan(tenant_a, max_users=7, max_channels=-1, max_api_keys_per_user=4)
    await issue_key(client, auth_headers(tenant_a.user), name="one")
    plan = (await client.get("/api/tenant/plan", headers=auth_headers(tenant_a.user))).json()
    assert plan["plan"]["name"] == name
    assert (plan["users"], plan["channels"], plan["api_keys"]) == (
        {"limit": 7, "used": 2},
        {"limit": -1, "used": 0},
        {"limit": 4, "used": 1},
    )
    assert (await client.get("/api/tenant", headers=auth_headers(tenant_a.user))).json()["max_users"] == 7


async def test_a_new_tenant_is_on_basic_with_its_default_budget(
    session_maker: async_sessionmaker[AsyncSession], owner_engine: AsyncEngine
) -> None:
    async with owner_engine.begin() as connection:
        await connection.execute(
            text("UPDATE platform_plans SET default_monthly_budget = 5000000 WHERE name = 'basic'")
        )
    try:
        organization = await create_tenant(session_maker, slug=f"plan-{secrets.token_hex(3)}", name="P", actor="test")
    finally:
        async with owner_engine.begin() as connection:
            await connection.execute(text("UPDATE platform_plans SET default_monthly_budget = -1 WHERE name = 'basic'"))
    assert (organization.subscription_plan, organization.quota) == ("basic", 5_000_000)
