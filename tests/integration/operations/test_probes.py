"""The operations endpoints: liveness, readiness naming the dependency that is down, version, OpenAPI; clean stops."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import msgspec
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from tests.support.clients import AuthHeaders, Client, app_client
from tests.support.tenants import TenantRows


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


async def test_an_app_closes_its_database_connections_when_it_stops(
    settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders, owner_engine: AsyncEngine
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
