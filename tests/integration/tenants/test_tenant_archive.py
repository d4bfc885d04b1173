"""`lyss tenant export`, `delete` and `import`: every row and object out, erased to zero, and back with keys working."""

from __future__ import annotations

import asyncio
import json
import zipfile
from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.encryption import SecretBox
from app.gateway.admin import encrypt_keys
from app.settings import Settings
from app.storage import create_object_store
from app.tenants.archive import Erasure, count_remaining
from db.provider import Channel
from db.session import tenant_session
from tests.support.auth import login
from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.commands import LYSS, cli_environment, lyss_environment
from tests.support.gateway import chat_body, issue_key, usage_rows
from tests.support.rows import ROW_FACTORIES
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.deployment]  # nine `lyss` processes


class Run(msgspec.Struct, frozen=True):
    exit_code: int
    output: str


async def lyss(settings: Settings, *arguments: str) -> Run:
    # A process of its own, as an operator runs it (in process, the command would reconfigure the app's logging).
    assert settings.redis_url is not None
    environment = lyss_environment(**cli_environment(settings), REDIS_URL=settings.redis_url)
    process = await asyncio.create_subprocess_exec(
        LYSS, *arguments, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    return Run(exit_code=process.returncode or 0, output=output.decode())


async def fill_every_table(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, box: SecretBox) -> None:
    async with tenant_session(session_maker, tenant.id) as session:
        for table, factory in ROW_FACTORIES.items():
            if table != "tenant_organizations":  # a new organization would be another tenant
                row = factory(tenant.id, tenant)
                if isinstance(row, Channel):  # a real secret: the gateway decrypts every channel of the tenant
                    row.encrypted_keys = encrypt_keys(box, tenant.id, ["sk-channel-secret"])
                session.add(row)
                await session.flush()
        await session.commit()


async def remaining(settings: Settings, session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows) -> Erasure:
    return await count_remaining(session_maker, create_object_store(settings), tenant.id)


async def chat_status(client: Client, key: str) -> int:
    return (await client.post("/v1/chat/completions", json=chat_body("m"), headers=bearer(key))).status_code


async def test_export_delete_import_round_trip(
    client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    tmp_path: Path,
) -> None:
    admin = auth_headers(tenant_a.admin)
    channel = await client.post("/api/channels", json={"name": "echo", "type": "echo", "models": ["m"]}, headers=admin)
    assert channel.status_code == 201, channel.text
    key, _ = await issue_key(client, admin)
    assert await chat_status(client, key) == 200
    await usage_rows(session_maker, tenant_a, 1)  # written by the flusher, after the call
    for tenant in (tenant_a, tenant_b):
        await fill_every_table(session_maker, tenant, SecretBox(settings.encryption_keyring))
        upload = tmp_path / f"{tenant.slug}.txt"
        upload.write_text(f"notes of {tenant.slug}")
        await create_object_store(settings).put(tenant.id, "attachments/notes.txt", upload, content_type="text/plain")
    before = await remaining(settings, session_maker, tenant_a)
    other_before = await remaining(settings, session_maker, tenant_b)
    assert set(before.rows) == set(ROW_FACTORIES)  # the catalog names every tenant table
    assert all(before.rows.values()), before.rows
    assert before.objects == 1

    unknown_export = await lyss(settings, "tenant", "export", "nobody")
    assert unknown_export.exit_code == 1
    assert "lyss: No tenant 'nobody'" in unknown_export.output
    archive = tmp_path / "alpha.zip"
    exported = await lyss(settings, "tenant", "export", tenant_a.slug, "--to", str(archive))
    assert exported.exit_code == 0, exported.output
    stored = list((settings.storage_path / "platform" / "tenant-exports").glob(f"{tenant_a.slug}-*.zip"))
    assert len(stored) == 1
    with zipfile.ZipFile(archive) as opened:
        manifest = json.loads(opened.read("manifest.json"))
        assert opened.read("objects/attachments/notes.txt") == f"notes of {tenant_a.slug}".encode()
        # Encrypted columns leave as they are stored: the secret itself is nowhere in the archive.
        everything = b"".join(opened.read(name) for name in opened.namelist())
    assert manifest["tables"] == before.rows
    assert next(iter(manifest["tables"])) == "tenant_organizations"
    assert b"fixture-webhook-secret" not in everything
    assert b"sk-channel-secret" not in everything
    assert manifest["objects"] == ["attachments/notes.txt"]

    wrong = await lyss(settings, "tenant", "delete", tenant_a.slug, "--confirm", "alpha")
    assert wrong.exit_code == 1
    assert "--confirm must repeat the slug" in wrong.output
    unknown = await lyss(settings, "tenant", "delete", "nobody", "--confirm", "nobody")
    assert unknown.exit_code == 1
    assert "No tenant 'nobody'" in unknown.output
    assert await remaining(settings, session_maker, tenant_a) == before

    redis = Redis.from_url(settings.redis_url or "")
    for tenant in (tenant_a, tenant_b):
        await redis.set(f"lyss:gw:{{{tenant.id.hex}}}:user:{tenant.user.id}:used:total", 5)
    deleted = await lyss(settings, "tenant", "delete", tenant_a.slug, "--confirm", tenant_a.slug)
    assert deleted.exit_code == 0, deleted.output
    assert f"{'chat_messages':<28} 0 rows" in deleted.output
    assert f"{'object store':<28} 0 objects" in deleted.output
    after = await remaining(settings, session_maker, tenant_a)
    assert after.complete
    assert set(after.rows) == set(ROW_FACTORIES)
    assert await remaining(settings, session_maker, tenant_b) == other_before
    assert await chat_status(client, key) == 401
    assert [found async for found in redis.scan_iter(match=f"lyss:gw:{{{tenant_a.id.hex}}}:*")] == []
    assert await redis.get(f"lyss:gw:{{{tenant_b.id.hex}}}:user:{tenant_b.user.id}:used:total") == b"5"
    await redis.aclose()

    other_head = tmp_path / "other-head.zip"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(other_head, "w") as target:
        for name in source.namelist():
            if name != "manifest.json":
                target.writestr(name, source.read(name))
        target.writestr("manifest.json", json.dumps({**manifest, "migration_head": "0001"}))
    refused = await lyss(settings, "tenant", "import", str(other_head))
    assert refused.exit_code == 1
    assert "exported at migration 0001" in refused.output
    not_an_archive = tmp_path / "notes.zip"
    not_an_archive.write_text("not a zip")
    unreadable = await lyss(settings, "tenant", "import", str(not_an_archive))
    assert unreadable.exit_code == 1
    assert f"lyss: Cannot read {not_an_archive}" in unreadable.output
    assert (await remaining(settings, session_maker, tenant_a)).complete

    imported = await lyss(settings, "tenant", "import", str(archive))
    assert imported.exit_code == 0, imported.output
    assert await remaining(settings, session_maker, tenant_a) == before
    assert await chat_status(client, key) == 200
    signed_in = await login(client, tenant_a, tenant_a.user.email)
    assert (signed_in.status_code, signed_in.json()["status"]) == (200, "authenticated"), signed_in.text
    assert (
        (await create_object_store(settings).read(tenant_a.id, "attachments/notes.txt"))
        .decode()
        .endswith(tenant_a.slug)
    )

    again = await lyss(
        settings, "tenant", "import", stored[0].relative_to(settings.storage_path / "platform").as_posix()
    )
    assert again.exit_code == 1
    assert f"A tenant '{tenant_a.slug}' already exists" in again.output
