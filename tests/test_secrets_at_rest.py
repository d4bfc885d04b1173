"""Secret columns hold ciphertext bound to their place, and `lyss keys rotate` keeps them readable."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec
import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cli import main
from app.encryption import DecryptionError, SecretBox, encrypted_columns, secret_context
from app.settings import Settings, new_key_entry
from db.auth import User
from db.session import tenant_session
from tests.conftest import Client, TenantRows, app_client
from tests.oidc_provider import MockOidcProvider
from tests.test_auth_flows import bearer, enrol, login
from tests.test_cli import _environment
from tests.test_oauth import start, through_provider


async def raw_column(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, table: str, column: str
) -> list[str]:
    """The stored values, read with plain SQL: what a database dump would show."""
    async with tenant_session(session_maker, tenant.id) as session:
        rows = await session.execute(text(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY id"))
        return [str(value) for (value,) in rows.all()]


def test_every_secret_column_is_declared_encrypted() -> None:
    assert {f"{table.name}.{column.name}" for table, column in encrypted_columns()} == {
        "auth_users.mfa_secret",
        "auth_oauth_providers.encrypted_client_secret",
        "provider_channels.encrypted_keys",
    }


async def test_secret_columns_hold_ciphertext(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: Callable[[User], dict[str, str]],
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


def test_a_ciphertext_moved_to_another_tenant_or_column_does_not_decrypt(settings: Settings) -> None:
    box = SecretBox(settings.encryption_keyring)
    stored = box.encrypt("s3cret", context="auth_oauth_providers.encrypted_client_secret:tenant-a")
    for context in ("auth_oauth_providers.encrypted_client_secret:tenant-b", "auth_users.mfa_secret:tenant-a"):
        with pytest.raises(DecryptionError):
            box.decrypt(stored, context=context)
    tampered = stored[:-2] + ("A" if stored[-2] != "A" else "B") + stored[-1]
    with pytest.raises(DecryptionError):
        box.decrypt(tampered, context="auth_oauth_providers.encrypted_client_secret:tenant-a")


async def test_rotation_re_encrypts_and_the_old_key_can_then_go(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: Callable[[User], dict[str, str]],
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    idp = MockOidcProvider()
    idp.start()
    try:
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
            environment = {**_environment(rotated), "LYSS_ENCRYPTION_KEYS": f"{new_key},{old_key}"}
            result = await asyncio.to_thread(CliRunner().invoke, main, ["keys", "rotate"], env=environment)
            assert result.exit_code == 0, result.output
            results.append(result.output)
        new_key_id = new_key.split(":")[0]
        assert "Re-encrypted 4 secret(s)" in results[0]  # two providers in each of the two tenants
        assert "Re-encrypted 0 secret(s)" in results[1]  # idempotent
        for tenant in (tenant_a, tenant_b):
            values = await raw_column(session_maker, tenant, "auth_oauth_providers", "encrypted_client_secret")
            assert len(values) == 2
            assert all(value.startswith(f"v1:{new_key_id}:") for value in values)

        # With only the new key left, the stored client secret still works for a real sign-in.
        only_new = msgspec.structs.replace(settings, encryption_keys=new_key)
        async with app_client(only_new) as fresh:
            response = await through_provider(fresh, await start(fresh, tenant_a))
            assert response.status_code == 200, response.text
            assert (await fresh.get("/api/me", headers=bearer(response.json()["access_token"]))).status_code == 200
    finally:
        idp.stop()
