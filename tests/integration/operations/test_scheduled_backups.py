"""The scheduled backup, run by hand (not waiting for cron): an archive in the store under a dated name, the
last LYSS_BACKUP_KEEP kept, failures counted in /metrics and logged in one line without a secret, and an
archive it made restored by `lyss restore` into a fresh database."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from app.backup import backup
from app.observability.logging import configure_logging
from app.operations.backups import SCHEDULED_PREFIX, STATUS_KEY, run_scheduled_backup
from app.settings import Settings
from app.storage import ObjectStore, create_object_store
from db.bootstrap import DatabaseUrls, drop_database, plain_url
from tests.support.clients import Client
from tests.support.commands import LYSS, lyss_environment
from tests.support.tenants import TenantRows

pytestmark = pytest.mark.slow


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture
def backup_settings(
    settings: Settings, database: DatabaseUrls, postgres_superuser_url: str, tmp_path: Path
) -> Settings:
    source = make_url(database.app_url).database
    assert source
    return msgspec.structs.replace(
        settings,
        storage_dir=tmp_path / "objects",
        backup_database_url=with_database(postgres_superuser_url, source),
        backup_keep=2,
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    assert settings.redis_url
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


async def metric(client: Client, name: str) -> float | None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    for line in response.text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


async def test_runs_keep_the_newest_archives_and_report_their_result(
    client: Client, backup_settings: Settings, redis: Redis, tenant_a: TenantRows
) -> None:
    store: ObjectStore = create_object_store(backup_settings)
    await redis.delete(STATUS_KEY)
    assert backup_settings.backup_database_url
    manual = await backup(store, backup_settings.backup_database_url)
    assert await metric(client, "lyss_backup_last_success_timestamp_seconds") is None

    first = await run_scheduled_backup(store, redis, backup_settings)
    assert first["ok"] is True, first
    assert first["name"].startswith(f"{SCHEDULED_PREFIX}lyss-")
    assert first["size"] > 10_000
    assert first["duration_seconds"] > 0
    assert await store.names(None, SCHEDULED_PREFIX) == [first["name"]]
    stored = backup_settings.storage_dir / "platform" / first["name"]  # type: ignore[operator]
    assert stored.stat().st_size == first["size"]
    last_success = await metric(client, "lyss_backup_last_success_timestamp_seconds")
    assert last_success is not None
    assert abs(last_success - time.time()) < 120
    assert await metric(client, "lyss_backup_last_size_bytes") == first["size"]

    second = await run_scheduled_backup(store, redis, backup_settings)
    third = await run_scheduled_backup(store, redis, backup_settings)
    assert third["removed"] == [first["name"]]
    assert await store.names(None, SCHEDULED_PREFIX) == [second["name"], third["name"]]
    assert not stored.exists()
    # A manual `lyss backup` archive beside them is not the schedule's to delete.
    assert await store.exists(None, manual.name)
    assert await metric(client, "lyss_backup_failures_total") == 0


async def test_a_failing_backup_is_counted_and_logged_in_one_line_without_the_password(
    client: Client, backup_settings: Settings, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "json")
    store = create_object_store(backup_settings)
    await redis.delete(STATUS_KEY)
    broken = msgspec.structs.replace(
        backup_settings, backup_database_url="postgresql://lyss_backup:s3cret-pass@127.0.0.1:9/lyss_db"
    )
    capsys.readouterr()
    result = await run_scheduled_backup(store, redis, broken)
    assert result["ok"] is False
    assert "pg_dump failed" in result["error"]
    assert await metric(client, "lyss_backup_failures_total") == 1
    assert await metric(client, "lyss_backup_last_success_timestamp_seconds") is None
    output = capsys.readouterr().err
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    (failed,) = [line for line in lines if line.get("event") == "scheduled backup failed"]
    assert failed["level"] == "error"
    assert "pg_dump failed" in failed["reason"]
    assert "s3cret-pass" not in output
    assert await store.names(None, SCHEDULED_PREFIX) == []

    # A URL that does not parse: the type of the error, not its text (which would quote the URL).
    garbled = msgspec.structs.replace(backup_settings, backup_database_url="postgresql://u:s3cret-pass@[x/db")
    result = await run_scheduled_backup(store, redis, garbled)
    assert result["ok"] is False
    assert "s3cret-pass" not in capsys.readouterr().err + json.dumps(result)
    assert await metric(client, "lyss_backup_failures_total") == 2


async def test_an_archive_of_the_schedule_restores_into_a_fresh_database(
    backup_settings: Settings,
    redis: Redis,
    database: DatabaseUrls,
    postgres_superuser_url: str,
    tenant_a: TenantRows,
) -> None:
    result = await run_scheduled_backup(create_object_store(backup_settings), redis, backup_settings)
    assert result["ok"] is True, result

    restored = f"lyss_sched_restored_{os.getpid()}"
    server = await asyncpg.connect(plain_url(postgres_superuser_url, "postgres"))
    await server.execute(f"CREATE DATABASE {restored} OWNER lyss_owner")
    await server.close()
    target = with_database(postgres_superuser_url, restored)
    try:
        process = await asyncio.create_subprocess_exec(
            LYSS, "restore", result["name"], "--database-url", target,
            env=lyss_environment(
                DATABASE_URL=database.app_url,
                LYSS_ENCRYPTION_KEYS=backup_settings.encryption_keys or "",
                LYSS_JWT_KEYS=backup_settings.jwt_keys or "",
                LYSS_STORAGE_DIR=str(backup_settings.storage_dir),
            ),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()
        # As the app role, the restored database has the tenant's users, and only for that tenant.
        app = await asyncpg.connect(plain_url(with_database(database.app_url, restored), restored))
        try:
            assert await app.fetchval("SELECT count(*) FROM auth_users") == 0
            async with app.transaction():
                await app.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_a.id))
                emails = {row["email"] for row in await app.fetch("SELECT email FROM auth_users")}
            assert emails == {tenant_a.admin.email, tenant_a.user.email}
        finally:
            await app.close()
    finally:
        await drop_database(postgres_superuser_url, restored)
