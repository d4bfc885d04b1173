"""Access tokens at the API: the caller's identity, and missing, malformed, expired, foreign or rotated keys."""

from __future__ import annotations

import time

import msgspec
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey
from uuid_utils.compat import uuid7

from app.auth.tokens import Principal, issue_access_token
from app.settings import Settings, new_key_entry, parse_keyring
from tests.support.clients import AuthHeaders, Client, app_client
from tests.support.tenants import TenantRows


async def test_me_returns_the_caller_and_nothing_secret(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    response = await client.get("/api/me", headers=auth_headers(tenant_a.admin))
    body = response.json()
    assert response.status_code == 200
    assert (body["id"], body["email"], body["role"]) == (str(tenant_a.admin.id), tenant_a.admin.email, "tenant_admin")
    assert "hashed_password" not in body
    assert "mfa_secret" not in body


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."],
)
async def test_me_refuses_missing_or_malformed_credentials(
    client: Client,
    authorization: str,
) -> None:
    response = await client.get("/api/me", headers={"Authorization": authorization} if authorization else {})
    assert response.status_code == 401
    assert "token" in response.json()["detail"]


async def test_me_refuses_expired_and_foreign_tokens(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
) -> None:
    principal = Principal(user_id=tenant_a.user.id, tenant_id=tenant_a.id, role="end_user", session_id=uuid7())
    key = settings.jwt_keyring.current
    expired = jwt.encode(
        {"alg": "HS256", "kid": key.key_id},
        {"sub": str(principal.user_id), "tid": str(principal.tenant_id), "role": "end_user", "typ": "access",
         "exp": int(time.time()) - 5},
        OctKey.import_key(key.secret),
    )  # fmt: skip
    foreign = issue_access_token(parse_keyring(new_key_entry(), "TEST"), principal, ttl_seconds=300)
    for token in (expired, foreign):
        response = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401


async def test_tokens_signed_with_the_previous_key_still_work_after_rotation(
    settings: Settings, tenant_a: TenantRows
) -> None:
    old_key = settings.jwt_keys
    assert old_key is not None
    principal = Principal(user_id=tenant_a.user.id, tenant_id=tenant_a.id, role="end_user", session_id=uuid7())
    old_token = issue_access_token(settings.jwt_keyring, principal, ttl_seconds=300)
    rotated = msgspec.structs.replace(settings, jwt_keys=f"{new_key_entry()},{old_key}")
    async with app_client(rotated) as client:
        response = await client.get("/api/me", headers={"Authorization": f"Bearer {old_token}"})
    assert response.status_code == 200
    assert response.json()["id"] == str(tenant_a.user.id)
