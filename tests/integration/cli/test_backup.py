"""`lyss backup` then `lyss restore` into a fresh database: every row back, row-level security still on."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from app.settings import new_key_entry
from db.bootstrap import DatabaseUrls, drop_database, plain_url
from tests.support.commands import LYSS, lyss_environment
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.deployment]


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


async def lyss(environment: dict[str, str], *arguments: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        LYSS,
        *arguments,
        env=lyss_environment(**environment),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def table_contents(url: str) -> dict[str, list[str]]:
    """Every row of every table, as text, in a stable order (read as a superuser: RLS does not apply)."""
    connection = await asyncpg.connect(url)
    try:
        tables = [
            row["tablename"]
            for row in await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        ]
        return {
            table: sorted(str(tuple(row)) for row in await connection.fetch(f'SELECT * FROM "{table}"'))
            for table in tables
        }
    finally:
        await connection.close()


async def test_backup_and_restore_into_a_fresh_database(
    database: DatabaseUrls,
    postgres_superuser_url: str,
    redis_url: str,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    tmp_path: Path,
) -> None:
    source_name = make_url(database.app_url).database
    assert source_name
    source_superuser = plain_url(postgres_superuser_url, source_name)
    environment = {
        "DATABASE_URL": database.app_url,
        "DATABASE_OWNER_URL": database.owner_url,
        "REDIS_URL": redis_url,
        "LYSS_ENCRYPTION_KEYS": new_key_entry(),
        "LYSS_JWT_KEYS": new_key_entry(),
        "LYSS_DATA_DIR": str(tmp_path / "data"),
        "LYSS_STORAGE_DIR": str(tmp_path / "objects"),
        "LYSS_BACKUP_DATABASE_URL": with_database(postgres_superuser_url, source_name),
    }
    code, output = await lyss(environment, "backup")
    assert code == 0, output
    name = output.strip().splitlines()[-1]
    assert name.startswith("backups/lyss-")
    assert (tmp_path / "objects" / "platform" / name).is_file()

    restored = f"lyss_restored_{os.getpid()}"
    server = await asyncpg.connect(plain_url(postgres_superuser_url, "postgres"))
    await server.execute(f"CREATE DATABASE {restored} OWNER lyss_owner")
    await server.close()
    target = with_database(postgres_superuser_url, restored)
    try:
        code, output = await lyss(environment, "restore", name, "--database-url", target)
        assert code == 0, output
        before, after = await table_contents(source_superuser), await table_contents(plain_url(target, restored))
        assert after.keys() == before.keys()
        assert {table: len(rows) for table, rows in after.items()} == {
            table: len(rows) for table, rows in before.items()
        }
        assert sum(len(rows) for rows in after.values()) > 20
        for table in ("tenant_organizations", "auth_users", "memory_user_memories", "tenant_jobs"):
            assert after[table] == before[table], table

        # As the app role, the restored database still isolates tenants.
        app = await asyncpg.connect(plain_url(with_database(database.app_url, restored), restored))
        try:
            assert await app.fetchval("SELECT count(*) FROM auth_users") == 0  # no tenant set: nothing
            async with app.transaction():
                await app.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_a.id))
                emails = {row["email"] for row in await app.fetch("SELECT email FROM auth_users")}
            assert emails == {tenant_a.admin.email, tenant_a.user.email}
        finally:
            await app.close()

        # Restoring over data is refused, and the data stays as it was.
        code, output = await lyss(environment, "restore", name, "--database-url", target)
        assert code == 1
        assert "not empty" in output
        assert "Traceback" not in output
        assert await table_contents(plain_url(target, restored)) == after
        # An archive that does not exist: one clear line.
        code, output = await lyss(environment, "restore", "backups/none.dump", "--database-url", target)
        assert code == 1
    finally:
        await drop_database(postgres_superuser_url, restored)
