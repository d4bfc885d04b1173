"""Citus-ready keys: every tenant table follows the rules of tables distributed by tenant_id, and the doc's commands."""

from __future__ import annotations

import re
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import Base
from tests.support.citus import citus_commands, read_catalog, violations

OPERATIONS_DOC = Path(__file__).resolve().parents[3] / "docs" / "operations.md"

_BREAKING_TABLES = """
CREATE TEMP TABLE org (id uuid PRIMARY KEY);
CREATE TEMP TABLE settings (id int PRIMARY KEY);
CREATE TEMP TABLE parent (tenant_id uuid REFERENCES org, id uuid, code text, PRIMARY KEY (tenant_id, id));
CREATE TEMP TABLE readings (tenant_id uuid, created_at timestamptz, id uuid, PRIMARY KEY (tenant_id, created_at, id));
CREATE TEMP TABLE good_child (
    tenant_id uuid, id uuid, parent_id uuid, PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, parent_id) REFERENCES parent ON DELETE SET NULL (parent_id));
CREATE TEMP TABLE id_keyed (tenant_id uuid, id uuid PRIMARY KEY);
CREATE TEMP TABLE no_key (tenant_id uuid);
CREATE TEMP TABLE loose (tenant_id uuid, id uuid, code text, PRIMARY KEY (tenant_id, id), UNIQUE (id));
CREATE UNIQUE INDEX loose_code ON loose (code) WHERE code <> '';
CREATE TEMP TABLE bad_child (
    tenant_id uuid, id uuid, parent_id uuid, loose_id uuid, setting_id int, PRIMARY KEY (tenant_id, id),
    CONSTRAINT crossed FOREIGN KEY (parent_id, tenant_id) REFERENCES parent (tenant_id, id),
    CONSTRAINT by_id FOREIGN KEY (loose_id) REFERENCES loose (id),
    CONSTRAINT to_settings FOREIGN KEY (setting_id) REFERENCES settings,
    CONSTRAINT nulls_tenant FOREIGN KEY (tenant_id, parent_id) REFERENCES parent ON DELETE SET NULL);
CREATE TEMP TABLE shared (id uuid PRIMARY KEY, tenant uuid, parent uuid,
    CONSTRAINT to_tenant_rows FOREIGN KEY (tenant, parent) REFERENCES parent (tenant_id, id));
"""


async def test_every_tenant_table_follows_the_rules_of_a_table_distributed_by_tenant_id(
    owner_engine: AsyncEngine,
) -> None:
    async with owner_engine.connect() as connection:
        catalog = await read_catalog(connection)
    assert {"auth_users", "kb_chunks", "tenant_jobs"} <= catalog.distributed  # the query matched the schema
    assert len(catalog.distributed) >= 32
    assert violations(catalog) == []


async def test_the_rules_name_each_table_that_breaks_one(owner_engine: AsyncEngine) -> None:
    async with owner_engine.connect() as connection:
        for statement in filter(str.strip, _BREAKING_TABLES.split(";")):
            await connection.execute(text(statement))
        catalog = await read_catalog(connection, schema=None)
        await connection.rollback()
    assert violations(catalog, reference_tables={"org", "shared"}) == [
        "bad_child: by_id to loose does not match tenant_id with tenant_id",
        "bad_child: crossed to parent does not match tenant_id with tenant_id",
        "bad_child: nulls_tenant would change tenant_id on delete (name the other columns: SET NULL (column))",
        "bad_child: to_settings points at settings, neither a tenant table nor a reference table",
        "id_keyed: primary key id_keyed_pkey lacks tenant_id",
        "loose: unique index loose_code lacks tenant_id",
        "loose: unique index loose_id_key lacks tenant_id",
        "no_key: no primary key",
        "settings: neither a tenant table nor a reference table",
        "shared: to_tenant_rows points from a reference table at parent, not a reference table",
    ]


async def test_the_operations_doc_distributes_every_table_in_a_valid_order(owner_engine: AsyncEngine) -> None:
    async with owner_engine.connect() as connection:
        catalog = await read_catalog(connection)
    section = OPERATIONS_DOC.read_text().split("## Scaling out with Citus", 1)[1]
    block = re.search(r"```sql\n(.*?)```", section, re.DOTALL)
    assert block is not None
    documented = [line for line in block.group(1).splitlines() if line.startswith("SELECT create_")]
    assert documented == citus_commands(catalog)
    # Citus distributes a table only once the tables it points at are distributed or reference tables.
    position = {re.findall(r"'(\w+)'", command)[0]: index for index, command in enumerate(documented)}
    assert set(position) == catalog.tables
    for constraint in catalog.constraints:
        if constraint.kind == "f" and constraint.target != constraint.table:
            assert position[str(constraint.target)] < position[constraint.table], constraint.name


def _key_differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": False})
    kinds = {"add_fk", "remove_fk", "add_constraint", "remove_constraint"}
    return [
        difference
        for difference in compare_metadata(context, Base.metadata)
        if isinstance(difference, tuple)
        and (difference[0] in kinds or (difference[0] in {"add_index", "remove_index"} and difference[1].unique))
    ]


async def test_the_models_describe_the_keys_of_the_migrated_schema(owner_engine: AsyncEngine) -> None:
    async with owner_engine.connect() as connection:
        assert await connection.run_sync(_key_differences) == []
        database_keys = {
            row.table: list(row.columns)
            for row in await connection.execute(
                text(
                    """
                    SELECT c.conrelid::regclass::text AS table, array_agg(a.attname ORDER BY k.n) AS columns
                    FROM pg_constraint c, unnest(c.conkey) WITH ORDINALITY AS k (attnum, n), pg_attribute a
                    WHERE c.contype = 'p' AND c.connamespace = 'public'::regnamespace
                      AND a.attrelid = c.conrelid AND a.attnum = k.attnum
                    GROUP BY c.conrelid
                    """
                )
            )
        }
    model_keys = {name: [column.name for column in table.primary_key] for name, table in Base.metadata.tables.items()}
    assert {name: database_keys.get(name) for name in model_keys} == model_keys
