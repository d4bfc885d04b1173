"""Tenant export, erasure and import: every row and object of one tenant, in or out of one zip archive."""

from __future__ import annotations

import datetime
import mimetypes
import tempfile
import zipfile
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from uuid import UUID

import msgspec
from alembic.script import ScriptDirectory
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.caches import INVALIDATION_CHANNEL
from app.gateway.limits import USAGE_TENANTS_KEY
from app.observability.logging import get_logger
from app.storage import ObjectStore, StorageError
from app.tenants.services import lookup_tenant_by_slug
from db.migrations import alembic_config
from db.session import tenant_session

EXPORT_PREFIX = "tenant-exports/"
ARCHIVE_FORMAT = 1
_BATCH_ROWS = 500
logger = get_logger("lyss.tenants.archive")

# The catalog of tenant tables, as the row-level security tests read it: the organization row and every
# table with a tenant_id column. A table added later is exported and erased without a change here. A
# partition is read through its parent (the partitions have no grant; RLS is the parent's).
_TENANT_TABLES = text(
    """
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND (c.relname = 'tenant_organizations' OR EXISTS (
            SELECT 1 FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped))
    """
)
_FOREIGN_KEYS = text(
    """
    SELECT child.relname AS child, parent.relname AS parent
    FROM pg_constraint k
    JOIN pg_class child ON child.oid = k.conrelid
    JOIN pg_class parent ON parent.oid = k.confrelid
    JOIN pg_namespace n ON n.oid = child.relnamespace
    WHERE k.contype = 'f' AND n.nspname = 'public' AND NOT child.relispartition
    """
)
# Generated columns are computed again on insert; PostgreSQL refuses a value for them.
_INSERTABLE_COLUMNS = text(
    """
    SELECT a.attname FROM pg_attribute a
    WHERE a.attrelid = CAST(:table AS regclass) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
    ORDER BY a.attnum
    """
)


class ArchiveError(Exception):
    """An export, erasure or import could not be done; the message says why and what was changed (nothing)."""


class Manifest(msgspec.Struct, frozen=True):
    format: int
    lyss_version: str
    migration_head: str
    tenant_id: UUID
    slug: str
    exported_at: datetime.datetime
    # In insertion order: a table comes after every table its foreign keys point at.
    tables: dict[str, int]
    objects: list[str]


class Erasure(msgspec.Struct, frozen=True):
    """What is left of an erased tenant, counted after the erasure: zeros everywhere, or a failure."""

    tenant_id: UUID
    rows: dict[str, int]
    objects: int

    @property
    def complete(self) -> bool:
        return self.objects == 0 and not any(self.rows.values())


def migration_head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def tenant_tables(session: AsyncSession) -> list[str]:
    """Every tenant table, each after the tables its foreign keys point at (self-references aside)."""
    # Names from the catalog, never from input, and only of plain identifiers: safe to put into SQL text.
    tables = {name for name in (await session.execute(_TENANT_TABLES)).scalars() if name.isidentifier()}
    parents: dict[str, set[str]] = {table: set() for table in tables}
    for child, parent in (await session.execute(_FOREIGN_KEYS)).all():
        if child in tables and parent in tables and child != parent:
            parents[child].add(parent)
    ordered: list[str] = []
    while parents:
        ready = sorted(table for table, needs in parents.items() if not needs - set(ordered))
        if not ready:
            raise ArchiveError(f"The foreign keys of {sorted(parents)} form a cycle; no insertion order exists.")
        ordered.extend(ready)
        for table in ready:
            del parents[table]
    return ordered


async def _tenant_id(session_maker: async_sessionmaker[AsyncSession], slug: str) -> UUID:
    async with session_maker() as session:
        tenant = await lookup_tenant_by_slug(session, slug)
    if tenant is None:
        raise ArchiveError(f"No tenant '{slug}'; nothing was changed.")
    return tenant.id


def _key_column(table: str) -> str:
    return "id" if table == "tenant_organizations" else "tenant_id"


async def export_tenant(
    session_maker: async_sessionmaker[AsyncSession], store: ObjectStore, slug: str, target: Path
) -> Manifest:
    """Write the tenant's rows and objects into the zip `target`. Encrypted columns stay encrypted: the
    archive is only readable by a Lyss with the same LYSS_ENCRYPTION_KEYS."""
    tenant_id = await _tenant_id(session_maker, slug)
    counts: dict[str, int] = {}
    with (
        tempfile.TemporaryDirectory(prefix="lyss-export-") as scratch,
        zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        async with tenant_session(session_maker, tenant_id) as session:
            # One snapshot for every table: rows written meanwhile cannot leave a child without its parent.
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            for table in await tenant_tables(session):
                # Ordered by id (time-ordered uuid7): a parent row comes before the rows that point at it. The
                # usage rollups have no id, and no row points at them.
                columns = set((await session.execute(_INSERTABLE_COLUMNS, {"table": table})).scalars())
                order = " ORDER BY id" if "id" in columns else ""
                query = f"SELECT row_to_json(t)::text FROM {table} AS t WHERE {_key_column(table)} = :id{order}"  # noqa: S608
                lines = await session.stream_scalars(text(query), {"id": tenant_id})
                count = 0
                with archive.open(f"tables/{table}.jsonl", "w") as out:
                    async for line in lines:
                        out.write(line.encode() + b"\n")
                        count += 1
                counts[table] = count
        names = await store.names(tenant_id)
        for name in names:
            local = Path(scratch) / "object"
            await store.fetch(tenant_id, name, local)
            archive.write(local, f"objects/{name}")
        manifest = Manifest(
            format=ARCHIVE_FORMAT,
            lyss_version=version("lyss"),
            migration_head=migration_head(),
            tenant_id=tenant_id,
            slug=slug,
            exported_at=datetime.datetime.now(datetime.UTC),
            tables=counts,
            objects=names,
        )
        archive.writestr("manifest.json", msgspec.json.format(msgspec.json.encode(manifest)))
    return manifest


def export_name(slug: str) -> str:
    return f"{EXPORT_PREFIX}{slug}-{datetime.datetime.now(datetime.UTC):%Y%m%dT%H%M%SZ}.zip"


async def count_remaining(
    session_maker: async_sessionmaker[AsyncSession], store: ObjectStore, tenant_id: UUID
) -> Erasure:
    """The tenant's rows per tenant table (from the catalog) and its object keys."""
    rows: dict[str, int] = {}
    async with tenant_session(session_maker, tenant_id) as session:
        for table in await tenant_tables(session):
            query = f"SELECT count(*) FROM {table} WHERE {_key_column(table)} = :id"  # noqa: S608
            rows[table] = int(await session.scalar(text(query), {"id": tenant_id}) or 0)
    return Erasure(tenant_id=tenant_id, rows=rows, objects=len(await store.names(tenant_id)))


async def erase_tenant(
    session_maker: async_sessionmaker[AsyncSession], store: ObjectStore, redis: Redis, slug: str, *, actor: str
) -> Erasure:
    """Erase every row, object and Redis key of the tenant, then count what is left of it."""
    tenant_id = await _tenant_id(session_maker, slug)
    logger.warning("tenant erasure started", tenant_id=str(tenant_id), slug=slug, actor=actor)
    async with tenant_session(session_maker, tenant_id) as session:
        # Suspended first: no sign-in, key or upload adds to what is being erased.
        await session.execute(
            text("UPDATE tenant_organizations SET status = 'suspended' WHERE id = :id"), {"id": tenant_id}
        )
        key_hashes = list(await session.scalars(text("SELECT key_hash FROM provider_tokens")))
        await session.commit()
    # Objects before rows: a failure here leaves the tenant in place, and running the command again finishes.
    for name in await store.names(tenant_id):
        await store.delete(tenant_id, name)
    async with tenant_session(session_maker, tenant_id) as session:
        # Every tenant_id references the organization ON DELETE CASCADE; the cascade also reaches the
        # append-only tables (audit log, usage, job and webhook history) that the app role may not delete from.
        await session.execute(text("DELETE FROM tenant_organizations WHERE id = :id"), {"id": tenant_id})
        await session.commit()
    await _forget_in_redis(redis, tenant_id, key_hashes)
    erasure = await count_remaining(session_maker, store, tenant_id)
    logger.warning(
        "tenant erased" if erasure.complete else "tenant erasure incomplete",
        tenant_id=str(tenant_id),
        slug=slug,
        actor=actor,
        rows_left=sum(erasure.rows.values()),
        objects_left=erasure.objects,
    )
    return erasure


async def _forget_in_redis(redis: Redis, tenant_id: UUID, key_hashes: Sequence[str]) -> None:
    patterns = (
        f"lyss:gw:{{{tenant_id.hex}}}:*",  # budgets used, rate windows, the usage stream
        f"lyss:auth:*:{tenant_id}:*",  # sign-in failure counters of the tenant's emails
        f"lyss:webhooks:budget:{tenant_id}:*",  # budget alerts already sent
    )
    for pattern in patterns:
        keys = [key async for key in redis.scan_iter(match=pattern, count=500)]
        if keys:
            await redis.delete(*keys)
    await redis.srem(USAGE_TENANTS_KEY, tenant_id.hex)
    # Every API worker drops the tenant's cached channels and keys now, not when their cache expires.
    await redis.publish(INVALIDATION_CHANNEL, f"tenant:{tenant_id}")
    for key_hash in key_hashes:
        await redis.publish(INVALIDATION_CHANNEL, f"token:{key_hash}")


def read_manifest(archive: zipfile.ZipFile) -> Manifest:
    try:
        return msgspec.json.decode(archive.read("manifest.json"), type=Manifest)
    except (KeyError, msgspec.DecodeError) as error:
        raise ArchiveError(f"This is not a Lyss tenant export (manifest.json: {error}).") from None


async def import_tenant(
    session_maker: async_sessionmaker[AsyncSession], store: ObjectStore, redis: Redis, source: Path
) -> Manifest:
    """Bring back an exported tenant, rows and objects, into a Lyss at the same migration head."""
    try:
        archive = zipfile.ZipFile(source)
    except (OSError, zipfile.BadZipFile) as error:
        raise ArchiveError(f"Cannot read {source}: {error}.") from None
    with archive, tempfile.TemporaryDirectory(prefix="lyss-import-") as scratch:
        manifest = read_manifest(archive)
        head = migration_head()
        if manifest.migration_head != head:
            raise ArchiveError(
                f"The archive was exported at migration {manifest.migration_head}, this Lyss is at {head}; "
                "import it into a Lyss at the same migration. Nothing was changed."
            )
        async with session_maker() as session:
            if await lookup_tenant_by_slug(session, manifest.slug) is not None:
                raise ArchiveError(f"A tenant '{manifest.slug}' already exists; nothing was changed.")
        async with tenant_session(session_maker, manifest.tenant_id) as session:
            if await session.scalar(text("SELECT count(*) FROM tenant_organizations")):
                raise ArchiveError(f"A tenant with id {manifest.tenant_id} already exists; nothing was changed.")
            tables = await tenant_tables(session)
            if unknown := set(manifest.tables) - set(tables):
                raise ArchiveError(f"The archive has tables this Lyss does not: {sorted(unknown)}.")
            # One transaction: an import that fails anywhere leaves no row behind.
            for table in [table for table in tables if table in manifest.tables]:
                await _insert_rows(session, archive, table)
            # Objects inside the transaction's lifetime: if one cannot be stored, no row is committed.
            for name in manifest.objects:
                local = Path(scratch) / "object"
                local.write_bytes(archive.read(f"objects/{name}"))
                content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
                try:
                    await store.put(manifest.tenant_id, name, local, content_type=content_type)
                except StorageError as error:
                    raise ArchiveError(f"{error.detail} The import was rolled back.") from None
            await session.commit()
    await redis.publish(INVALIDATION_CHANNEL, f"tenant:{manifest.tenant_id}")
    logger.warning("tenant imported", tenant_id=str(manifest.tenant_id), slug=manifest.slug)
    return manifest


async def _insert_rows(session: AsyncSession, archive: zipfile.ZipFile, table: str) -> None:
    columns = ", ".join(
        f'"{column}"' for column in (await session.execute(_INSERTABLE_COLUMNS, {"table": table})).scalars()
    )
    # PostgreSQL turns each JSON row back into the table's own types (timestamps, uuids, vectors, arrays).
    insert = text(
        f"INSERT INTO {table} ({columns}) SELECT {columns} "  # noqa: S608
        f"FROM json_populate_recordset(NULL::{table}, CAST(:rows AS json))"
    )
    batch: list[str] = []
    with archive.open(f"tables/{table}.jsonl") as lines:
        for line in lines:
            batch.append(line.decode().rstrip("\n"))
            if len(batch) == _BATCH_ROWS:
                await session.execute(insert, {"rows": f"[{','.join(batch)}]"})
                batch = []
    if batch:
        await session.execute(insert, {"rows": f"[{','.join(batch)}]"})
