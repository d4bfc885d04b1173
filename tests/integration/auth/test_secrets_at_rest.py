"""Secret columns hold ciphertext bound to their place, and `lyss keys rotate` keeps them readable."""

from __future__ import annotations

import asyncio

import msgspec
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cli import main
from app.encryption import SecretBox, secret_context
from app.settings import Settings, new_key_entry
from db.session import tenant_session
from tests.support.auth import enrol, login, start_oauth, through_provider
from tests.support.clients import AuthHeaders, Client, app_client, bearer
from tests.support.commands import cli_environment
from tests.support.oidc_provider import MockOidcProvider
from tests.support.tenants import TenantRows


async def raw_column(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, table: str, column: str
) -> list[str]:
    """The stored values, read with plain SQL: what a database dump would show."""
    async with tenant_session(session_maker, tenant.id) as session:
        rows = await session.execute(text(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY id"))
        return [str(value) for (value,) in rows.all()]


async def test_secret_columns_hold_ciphertext(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    box = SecretBox(settings.encryption_keyring)
    created = await client.post(
        "/api/auth/oauth-providers",
        json={"name": "corp", "kind": "github", "client_id": "abc", "client_secret": "the-real-client-secret"},
        headers=auth_headers(tenant_a.admin),
    )
    assert created.status_code == 201
    tokens = (await login(client, tenant_a, tenant_a.user.email)).json()
    totp, _ = await enrol(client, tokens)

    secrets = await raw_column(session_maker, tenant_a, "auth_oauth_providers", "encrypted_client_secret")
    mfa = await raw_column(session_maker, tenant_a, "auth_users", "mfa_secret")
    stored_secret = secrets[-1]  # ids are time-ordered: the provider added just now
    for stored, plaintext in ((stored_secret, "the-real-client-secret"), (mfa[0], totp.secret)):
        assert stored.startswith(f"v1:{box.current_key_id}:")
        assert plaintext not in stored
    client_secret_context = secret_context("auth_oauth_providers", "encrypted_client_secret", tenant_a.id)
    assert box.decrypt(stored_secret, context=client_secret_context) == "the-real-client-secret"
    assert box.decrypt(mfa[0], context=secret_context("auth_users", "mfa_secret", tenant_a.id)) == totp.secret


async def test_rotation_re_encrypts_and_the_old_key_can_then_go(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    idp: MockOidcProvider,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    idp.user["email"] = tenant_a.user.email
    for tenant in (tenant_a, tenant_b):
        response = await client.post(
            "/api/auth/oauth-providers",
            json={
                "name": "corp",
                "kind": "oidc",
                "client_id": idp.client_id,
                "client_secret": idp.client_secret,
                "discovery_url": idp.discovery_url,
            },
            headers=auth_headers(tenant.admin),
        )
        assert response.status_code == 201
    old_key = settings.encryption_keys
    new_key = new_key_entry()
    rotated = msgspec.structs.replace(settings, encryption_keys=f"{new_key},{old_key}")

    results = []
    for _ in range(2):
        environment = {**cli_environment(rotated), "LYSS_ENCRYPTION_KEYS": f"{new_key},{old_key}"}
        result = await asyncio.to_thread(CliRunner().invoke, main, ["keys", "rotate"], env=environment)
        assert result.exit_code == 0, result.output
        results.append(result.output)
    new_key_id = new_key.split(":")[0]
    assert "Re-encrypted 6 secret(s)" in results[0]  # two providers and a webhook in each of the two tenants
    assert "Re-encrypted 0 secret(s)" in results[1]  # idempotent
    for tenant in (tenant_a, tenant_b):
        values = await raw_column(session_maker, tenant, "auth_oauth_providers", "encrypted_client_secret")
        assert len(values) == 2
        assert all(value.startswith(f"v1:{new_key_id}:") for value in values)
        [webhook_secret] = await raw_column(session_maker, tenant, "tenant_webhook_endpoints", "encrypted_secret")
        assert webhook_secret.startswith(f"v1:{new_key_id}:")

    # With only the new key left, the stored client secret still works for a real sign-in.
    only_new = msgspec.structs.replace(settings, encryption_keys=new_key)
    async with app_client(only_new) as fresh:
        response = await through_provider(fresh, await start_oauth(fresh, tenant_a))
        assert response.status_code == 200, response.text
        assert (await fresh.get("/api/me", headers=bearer(response.json()["access_token"]))).status_code == 200
