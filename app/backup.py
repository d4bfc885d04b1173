"""`lyss backup` and `lyss restore`: pg_dump custom-format archives of the whole database, in the object store."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import re
import shutil
import tempfile
from pathlib import Path

import asyncpg
import msgspec
from sqlalchemy.engine import make_url

from app.embedded import embedded_postgres_tools
from app.storage import ObjectStore, StorageError
from db.bootstrap import plain_url

BACKUP_PREFIX = "backups/"


class BackupError(Exception):
    """A backup or restore could not be done; the message says why and what was left (nothing)."""


def postgres_tool(name: str) -> str:
    """pg_dump / pg_restore: from LYSS_PG_BIN_DIR, else the embedded PostgreSQL's (the newest major version,
    so it can dump any older server) when installed, else PATH. pg_dump refuses a server newer than itself."""
    candidates = []
    if directory := os.environ.get("LYSS_PG_BIN_DIR"):
        candidates.append(Path(directory) / name)
    with contextlib.suppress(ImportError):
        candidates.append(embedded_postgres_tools() / name)
    if found := shutil.which(name):
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise BackupError(f"{name} was not found: install PostgreSQL's client programs or set LYSS_PG_BIN_DIR.")


async def _run(program: str, *arguments: str, database_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        program, *arguments, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, error = await process.communicate()
    if process.returncode != 0:
        # pg_dump and pg_restore name the object that failed, and quote a connection string they cannot parse.
        last = error.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise BackupError(f"{Path(program).name} failed: {_without_password(last[0], database_url)}")


def _without_password(message: str, url: str) -> str:
    password = re.search(r"://[^/@]*?:([^@]*)@", url)
    return message.replace(password[1], "***") if password and password[1] else message


class Archive(msgspec.Struct, frozen=True):
    name: str
    size: int


async def backup(store: ObjectStore, database_url: str, *, prefix: str = BACKUP_PREFIX) -> Archive:
    """Dump the database (as a role that bypasses row-level security) into the store under `prefix`."""
    now = datetime.datetime.now(datetime.UTC)
    # Names sort by time (retention keeps the last ones by name); milliseconds keep two runs apart.
    name = f"{prefix}lyss-{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z.dump"
    with tempfile.TemporaryDirectory(prefix="lyss-backup-") as scratch:
        archive = Path(scratch) / "lyss.dump"
        await _run(
            postgres_tool("pg_dump"),
            "--format=custom",
            "--no-password",
            f"--dbname={plain_url(database_url, _database_name(database_url))}",
            f"--file={archive}",
            database_url=database_url,
        )
        try:
            size = await store.put(None, name, archive, content_type="application/octet-stream")
        except StorageError as error:
            raise BackupError(error.detail) from None
    return Archive(name=name, size=size)


async def restore(store: ObjectStore, archive: str | Path, database_url: str) -> None:
    """Restore `archive` (a name in the store, or a local file) into an empty database, all or nothing."""
    target = plain_url(database_url, _database_name(database_url))
    connection = await asyncpg.connect(target)
    try:
        tables = await connection.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
    finally:
        await connection.close()
    if tables:
        raise BackupError(
            f"The target database is not empty ({tables} tables); restore only into a new, empty database."
        )
    with tempfile.TemporaryDirectory(prefix="lyss-restore-") as scratch:
        local = archive if isinstance(archive, Path) else Path(scratch) / "lyss.dump"
        if not isinstance(archive, Path):
            try:
                await store.fetch(None, archive, local)
            except StorageError as error:
                raise BackupError(error.detail) from None
        # One transaction: a failure anywhere leaves the target database as empty as it was.
        await _run(
            postgres_tool("pg_restore"),
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            f"--dbname={target}",
            str(local),
            database_url=database_url,
        )


def _database_name(url: str) -> str:
    database = make_url(url).database
    if not database:
        raise BackupError("The database URL names no database.")
    return database
