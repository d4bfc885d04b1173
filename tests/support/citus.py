"""The rules Citus imposes on tables distributed by tenant_id, checked against the catalog, and the commands."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

DISTRIBUTION_COLUMN = "tenant_id"
# Tables without tenant_id, copied to every node; a tenant table may point at these and at no other.
REFERENCE_TABLES = frozenset({"platform_plans", "provider_types", "tenant_organizations"})
# The distributed table the others are co-located with (any would do; the users are the natural root).
COLOCATION_ANCHOR = "auth_users"

# :schema NULL means the session's temporary schema (the tests of the rules build their tables there).
_TABLES_SQL = text(
    """
    SELECT c.relname AS name,
           EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                   AND NOT a.attisdropped) AS distributed
    FROM pg_class c
    WHERE c.relnamespace = COALESCE(to_regnamespace(CAST(:schema AS text)), pg_my_temp_schema())
      AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname <> 'alembic_version'
    """
)
# Unique indexes cover primary keys, unique constraints and partial unique indexes alike.
_UNIQUE_INDEXES_SQL = text(
    """
    SELECT t.relname AS "table", x.relname AS name, i.indisprimary AS "primary",
           EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attname = 'tenant_id'
                   AND a.attnum = ANY (i.indkey)) AS has_tenant_id
    FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
    WHERE i.indisunique AND t.relkind IN ('r', 'p') AND NOT t.relispartition
      AND t.relnamespace = COALESCE(to_regnamespace(CAST(:schema AS text)), pg_my_temp_schema())
    """
)
_CONSTRAINTS_SQL = text(
    """
    SELECT t.relname AS "table", c.conname AS name, c.contype::text AS kind, f.relname AS target,
           c.conkey AS columns, COALESCE(c.confkey, '{}') AS target_columns,
           c.confdeltype::text AS on_delete, COALESCE(c.confdelsetcols, c.conkey) AS set_columns,
           (SELECT attnum FROM pg_attribute WHERE attrelid = c.conrelid AND attname = 'tenant_id') AS tenant,
           (SELECT attnum FROM pg_attribute WHERE attrelid = c.confrelid AND attname = 'tenant_id') AS target_tenant
    FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid LEFT JOIN pg_class f ON f.oid = c.confrelid
    WHERE c.contype IN ('f', 'x') AND c.conparentid = 0 AND NOT t.relispartition
      AND t.relnamespace = COALESCE(to_regnamespace(CAST(:schema AS text)), pg_my_temp_schema())
    """
)


@dataclass(frozen=True)
class UniqueIndex:
    table: str
    name: str
    primary: bool
    has_tenant_id: bool


@dataclass(frozen=True)
class Constraint:
    """A foreign key ('f') or exclusion constraint ('x'); columns are attribute numbers."""

    table: str
    name: str
    kind: str
    target: str | None
    columns: list[int]
    target_columns: list[int]
    on_delete: str
    set_columns: list[int]
    tenant: int | None
    target_tenant: int | None


@dataclass(frozen=True)
class Catalog:
    tables: frozenset[str]
    distributed: frozenset[str]
    unique_indexes: list[UniqueIndex]
    constraints: list[Constraint]


async def read_catalog(connection: AsyncConnection, schema: str | None = "public") -> Catalog:
    """The tables of `schema` (None: the session's temporary schema) and their keys."""
    parameters = {"schema": schema}
    tables = (await connection.execute(_TABLES_SQL, parameters)).mappings().all()
    indexes = (await connection.execute(_UNIQUE_INDEXES_SQL, parameters)).mappings().all()
    constraints = (await connection.execute(_CONSTRAINTS_SQL, parameters)).mappings().all()
    return Catalog(
        tables=frozenset(row["name"] for row in tables),
        distributed=frozenset(row["name"] for row in tables if row["distributed"]),
        unique_indexes=[UniqueIndex(**row) for row in indexes],
        constraints=[Constraint(**row) for row in constraints],
    )


def violations(catalog: Catalog, reference_tables: Iterable[str] = REFERENCE_TABLES) -> list[str]:
    """Every place where the schema breaks a rule of Citus for tables distributed by tenant_id, named."""
    references = frozenset(reference_tables)
    problems = [
        f"{table}: neither a tenant table nor a reference table"
        for table in catalog.tables - catalog.distributed - references
    ]
    keyed = {index.table for index in catalog.unique_indexes if index.primary}
    problems += [f"{table}: no primary key" for table in catalog.distributed - keyed]
    for index in catalog.unique_indexes:
        if index.table in catalog.distributed and not index.has_tenant_id:
            problems.append(
                f"{index.table}: {'primary key' if index.primary else 'unique index'} {index.name} lacks tenant_id"
            )
    for constraint in catalog.constraints:
        if problem := _constraint_problem(catalog, references, constraint):
            problems.append(f"{constraint.table}: {constraint.name} {problem}")
    return sorted(problems)


def _constraint_problem(catalog: Catalog, references: frozenset[str], constraint: Constraint) -> str | None:
    distributed = constraint.table in catalog.distributed
    if constraint.kind == "x":
        # An exclusion constraint is enforced within a shard only, so it must compare tenant_id too.
        return "(exclusion) lacks tenant_id" if distributed and constraint.tenant not in constraint.columns else None
    if constraint.table in references:
        if constraint.target not in references:
            return f"points from a reference table at {constraint.target}, not a reference table"
        return None
    if not distributed or constraint.target in references:
        return None
    if constraint.target not in catalog.distributed:
        return f"points at {constraint.target}, neither a tenant table nor a reference table"
    pairs = list(zip(constraint.columns, constraint.target_columns, strict=True))
    if (constraint.tenant, constraint.target_tenant) not in pairs:
        return f"to {constraint.target} does not match tenant_id with tenant_id"
    if constraint.on_delete in ("n", "d") and constraint.tenant in constraint.set_columns:
        return "would change tenant_id on delete (name the other columns: SET NULL (column))"
    return None


def citus_commands(catalog: Catalog) -> list[str]:
    """The create_reference_table / create_distributed_table calls, each table after the tables it points at."""
    targets: dict[str, set[str]] = {}
    for constraint in catalog.constraints:
        if constraint.kind == "f" and constraint.target is not None:
            targets.setdefault(constraint.table, set()).add(constraint.target)
    commands = [
        f"SELECT create_reference_table('{table}');"
        for table in _dependency_order(catalog.tables - catalog.distributed, targets)
    ]
    for table in _dependency_order(catalog.distributed, targets, first=COLOCATION_ANCHOR):
        colocation = "" if table == COLOCATION_ANCHOR else f", colocate_with => '{COLOCATION_ANCHOR}'"
        commands.append(f"SELECT create_distributed_table('{table}', '{DISTRIBUTION_COLUMN}'{colocation});")
    return commands


def _dependency_order(tables: Iterable[str], targets: dict[str, set[str]], first: str | None = None) -> list[str]:
    """Each table after the ones of `tables` it points at; otherwise `first`, then by name."""
    remaining = set(tables)
    ordered: list[str] = []
    while remaining:
        ready = [table for table in remaining if not (targets.get(table, set()) - {table}) & remaining]
        if not ready:
            raise ValueError(f"foreign keys form a cycle among {sorted(remaining)}")
        chosen = first if first is not None and first in ready else min(ready)
        ordered.append(chosen)
        remaining.remove(chosen)
    return ordered
