"""Tenant isolation through HTTP: each tenant sees its own organization, and another tenant's ids are 404s."""

from __future__ import annotations

from uuid_utils.compat import uuid7

from app.auth.tokens import Principal, issue_access_token
from app.settings import Settings
from tests.support.clients import AuthHeaders, Client
from tests.support.tenants import TenantRows


async def test_each_tenant_sees_only_its_own_organization(
    client: Client,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    for tenant in (tenant_a, tenant_b):
        response = await client.get("/api/tenant", headers=auth_headers(tenant.user))
        assert response.status_code == 200
        assert (response.json()["id"], response.json()["slug"]) == (str(tenant.id), tenant.slug)


async def test_a_user_id_from_another_tenant_is_a_404_not_its_data(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
) -> None:
    # Even a token that (by some bug) pairs tenant B with A's user id reads nothing of A:
    # the database, not the handler, decides what B can see.
    confused = Principal(user_id=tenant_a.admin.id, tenant_id=tenant_b.id, role="tenant_admin", session_id=uuid7())
    token = issue_access_token(settings.jwt_keyring, confused, ttl_seconds=300)
    response = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404
    assert tenant_a.admin.email not in response.text
