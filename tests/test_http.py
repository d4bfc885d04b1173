"""The HTTP surface of the foundation: operations endpoints, request ids, logs, authentication, tenant isolation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import msgspec
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine
from uuid_utils.compat import uuid7

from app.auth.tokens import Principal, issue_access_token
from app.observability.logging import configure_logging
from app.settings import Settings, new_key_entry, parse_keyring
from db.auth import User
from tests.conftest import Client, TenantRows, app_client

AuthHeaders = Callable[[User], dict[str, str]]


async def test_healthz_answers_without_authentication(client: Client) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_reports_each_dependency(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


async def test_readyz_names_redis_when_it_is_down(settings: Settings, tmp_path: Path) -> None:
    broken = msgspec.structs.replace(settings, redis_url=f"unix://{tmp_path}/no-redis-here.sock")
    async with app_client(broken) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"postgres": "ok", "redis": "unreachable"}}


async def test_readyz_names_postgres_when_it_is_down(settings: Settings) -> None:
    broken = msgspec.structs.replace(settings, database_url="postgresql://lyss_app@127.0.0.1:1/lyss_db")
    async with app_client(broken) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"postgres": "unreachable", "redis": "ok"}}


async def test_version_is_the_installed_package_version(client: Client) -> None:
    response = await client.get("/api/version")
    assert response.json() == {"name": "lyss", "version": version("lyss")}


async def test_openapi_schema_lists_the_routes(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert {"/healthz", "/readyz", "/api/version", "/api/me", "/api/tenant"} <= set(schema["paths"])


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [("trace-42.a:b_c", True), ("x" * 129, False), ("has space", False), ("<script>", False)],
)
async def test_request_id_is_echoed_only_when_it_is_a_plain_token(
    client: Client,
    sent: str,
    echoed: bool,
) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": sent})
    returned = response.headers["x-request-id"]
    if echoed:
        assert returned == sent
    else:
        assert returned != sent
        assert len(returned) == 32
        int(returned, 16)


async def test_every_response_carries_a_request_id_even_a_404(client: Client) -> None:
    first = await client.get("/no/such/route")
    second = await client.get("/no/such/route")
    assert first.status_code == 404
    assert len(first.headers["x-request-id"]) == 32
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_access_log_is_json_with_request_and_tenant_ids(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    await client.get("/api/me", headers={**auth_headers(tenant_a.user), "X-Request-ID": "req-with-tenant"})
    await client.get("/healthz", headers={"X-Request-ID": "req-anonymous"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    access = {line["request_id"]: line for line in lines if line.get("logger") == "lyss.access"}
    assert access["req-with-tenant"]["tenant_id"] == str(tenant_a.id)
    assert access["req-with-tenant"]["status"] == 200
    assert access["req-with-tenant"]["path"] == "/api/me"
    assert "tenant_id" not in access["req-anonymous"]


# --- authentication -------------------------------------------------------------------------------


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


# --- tenant isolation through HTTP ---------------------------------------------------------------


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


async def test_an_unexpected_failure_is_a_500_that_reveals_nothing(
    settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    broken = msgspec.structs.replace(settings, database_url="postgresql://lyss_app:s3cret@127.0.0.1:1/lyss_db")
    async with app_client(broken) as client:
        response = await client.get("/api/me", headers={**auth_headers(tenant_a.user), "X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.json() == {
        "status_code": 500,
        "detail": "Internal server error; quote the request id when reporting it.",
        "request_id": "boom-1",
    }
    assert "127.0.0.1" not in response.text
    assert "s3cret" not in response.text


async def test_an_app_closes_its_database_connections_when_it_stops(
    settings: Settings, tenant_a: TenantRows, auth_headers: Callable[[User], dict[str, str]], owner_engine: AsyncEngine
) -> None:
    """A stopped app must not keep its pool open (nor let anything keep the app alive): test runs and
    restarted workers would otherwise run the server out of connections."""

    async def app_role_connections() -> int:
        async with owner_engine.connect() as connection:
            statement = text("SELECT count(*) FROM pg_stat_activity WHERE usename = :role")
            return int(
                (
                    await connection.execute(statement, {"role": make_url(settings.database_url or "").username})
                ).scalar_one()
            )

    before = await app_role_connections()
    for _ in range(3):
        async with app_client(settings) as client:
            response = await client.get("/api/jobs?before=2999-01-01T00:00:00Z", headers=auth_headers(tenant_a.admin))
            assert response.status_code == 200, response.text
    assert await app_role_connections() == before
