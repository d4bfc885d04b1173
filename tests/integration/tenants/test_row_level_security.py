"""Row-level security, proven against the real schema as the app role: catalog, isolation matrix, pooling."""

from __future__ import annotations

import datetime
from uuid import UUID

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.tenants.services import group_ids_of_user, lookup_tenant_by_slug
from db.auth import User
from db.bootstrap import APP_ROLE, LOOKUP_ROLE, OWNER_ROLE, DatabaseUrls
from db.session import create_engine, create_session_maker, set_session_tenant, tenant_session
from db.tenant import AuditEvent, UserGroupMember
from tests.support.rows import ROW_FACTORIES
from tests.support.tenants import TEST_PASSWORD_HASH, TenantRows

# Tables that have no tenant_id on purpose; docs/architecture.md lists them. Any other table must.
TABLES_WITHOUT_TENANT_ID = {"tenant_organizations", "alembic_version", "provider_types", "platform_plans"}

_TENANT_TABLES_SQL = text(
    """
    SELECT c.relname AS name, c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,
           array_remove(array_agg(pg_get_expr(p.polqual, p.polrelid)), NULL) AS using_clauses,
           array_remove(array_agg(pg_get_expr(p.polwithcheck, p.polrelid)), NULL) AS check_clauses
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_policy p ON p.polrelid = c.oid AND p.polname = 'tenant_isolation'
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND (c.relname = 'tenant_organizations' OR EXISTS (
            SELECT 1 FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped))
    GROUP BY c.relname, c.relrowsecurity, c.relforcerowsecurity
    """
)


# The app role may only INSERT and SELECT these: nothing to move, nothing to erase.
APPEND_ONLY_TABLES = {
    "tenant_audit_events",
    "provider_usage_logs",
    "tenant_job_events",
    "tenant_webhook_deliveries",
    "memory_history",
}
# Tables whose rows point at other tenant rows: a row of B must not be able to point at A's rows.
REFERENCING_TABLES = [
    "auth_user_sessions",
    "auth_oauth_connections",
    "auth_mfa_recovery_codes",
    "auth_invitations",
    "auth_password_resets",
    "tenant_user_groups",
    "tenant_user_group_members",
    "tenant_budgets",
    "provider_channels",
    "provider_tokens",
    "provider_responses",
    "tenant_jobs",
    "tenant_job_events",
    "tenant_webhook_deliveries",
    "chat_conversations",
    "chat_messages",
    "chat_summaries",
    "chat_attachments",
    "memory_user_memories",
    "memory_associations",
    "memory_history",
]


async def _catalog_rows(owner_engine: AsyncEngine) -> dict[str, dict[str, object]]:
    async with owner_engine.connect() as connection:
        rows = (await connection.execute(_TENANT_TABLES_SQL)).mappings().all()
    return {row["name"]: dict(row) for row in rows}


# The column that tells the test's row apart, where it is not `id`: the usage rollups are keyed by what they
# sum (the factory's model name is unique).
_ROW_KEY = {"provider_usage_hourly": "model", "provider_usage_daily": "model"}


def _key(table: str) -> str:
    return _ROW_KEY.get(table, "id")


async def _insert_row(session: AsyncSession, table: str, tenant_id: UUID, parents: TenantRows) -> UUID | str:
    row = ROW_FACTORIES[table](tenant_id, parents)
    session.add(row)
    await session.flush()
    return getattr(row, _key(table))  # type: ignore[no-any-return]


async def _count(session: AsyncSession, table: str, row_id: UUID | str | None = None) -> int:
    if row_id is None:
        return int(await session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
    statement = text(f"SELECT count(*) FROM {table} WHERE {_key(table)} = :id")
    return int(await session.scalar(statement, {"id": row_id}) or 0)


async def _app_may(session: AsyncSession, table: str, privilege: str) -> bool:
    return bool(await session.scalar(text(f"SELECT has_table_privilege('{APP_ROLE}', '{table}', '{privilege}')")))


# --- the catalog: every tenant table is covered, including tables added later ---------------------


async def test_every_tenant_table_forces_row_level_security_with_a_tenant_policy(owner_engine: AsyncEngine) -> None:
    catalog = await _catalog_rows(owner_engine)
    assert "auth_users" in catalog  # guards against a query that silently matches nothing
    problems = []
    for name, row in sorted(catalog.items()):
        key = "id" if name == "tenant_organizations" else "tenant_id"
        expected = f"({key} = current_tenant())"
        if not row["rls"]:
            problems.append(f"{name}: ROW LEVEL SECURITY not enabled")
        if not row["forced"]:
            problems.append(f"{name}: ROW LEVEL SECURITY not FORCEd (the owner would bypass it)")
        if expected not in row["using_clauses"]:  # type: ignore[operator]
            problems.append(f"{name}: no tenant_isolation policy USING {expected}")
        if expected not in row["check_clauses"]:  # type: ignore[operator]
            problems.append(f"{name}: no tenant_isolation policy WITH CHECK {expected}")
    assert problems == []


async def test_only_listed_platform_tables_lack_tenant_id(owner_engine: AsyncEngine) -> None:
    async with owner_engine.connect() as connection:
        tables = set(
            (
                await connection.execute(
                    text(
                        """
                        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                        AND NOT EXISTS (
                            SELECT 1 FROM pg_attribute a
                            WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
                        """
                    )
                )
            ).scalars()
        )
    assert tables == TABLES_WITHOUT_TENANT_ID


async def test_isolation_matrix_covers_every_tenant_table(owner_engine: AsyncEngine) -> None:
    assert set(ROW_FACTORIES) == set(await _catalog_rows(owner_engine))


async def test_append_only_tables_refuse_update_and_delete_to_the_app_role(
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    async with session_maker() as session:
        for table in APPEND_ONLY_TABLES:
            assert [await _app_may(session, table, p) for p in ("INSERT", "SELECT", "UPDATE", "DELETE")] == [
                True,
                True,
                False,
                False,
            ]


async def test_roles_cannot_bypass_row_level_security(owner_engine: AsyncEngine) -> None:
    async with owner_engine.connect() as connection:
        roles = (
            await connection.execute(
                text(
                    "SELECT rolname, rolsuper, rolbypassrls, rolcanlogin FROM pg_roles "
                    "WHERE rolname IN ('lyss_owner', 'lyss_app', 'lyss_lookup') ORDER BY rolname"
                )
            )
        ).all()
    assert [(name, superuser, bypass) for name, superuser, bypass, _ in roles] == [
        ("lyss_app", False, False),
        ("lyss_lookup", False, False),
        ("lyss_owner", False, False),
    ]
    assert {name: can_login for name, _, _, can_login in roles}["lyss_lookup"] is False


async def test_security_definer_functions_pin_search_path_and_are_not_public(owner_engine: AsyncEngine) -> None:
    async with owner_engine.connect() as connection:
        functions = (
            await connection.execute(
                text(
                    """
                    SELECT p.proname, p.proconfig, r.rolname AS owner,
                           has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
                    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    JOIN pg_roles r ON r.oid = p.proowner
                    WHERE n.nspname = 'public' AND p.prosecdef
                    """
                )
            )
        ).all()
    assert {function.proname for function in functions} == {
        "tenant_lookup_by_slug",
        "platform_tenant_ids",
        "gateway_token_lookup",
        "platform_job_stats",
        "platform_tenant_overview",
        "usage_log_partitions_ahead",
    }
    for function in functions:
        assert any(setting.startswith("search_path=") for setting in function.proconfig or [])
        # Adding a partition is DDL on the usage log: only its owner may, so only that function is the owner's.
        assert function.owner == (OWNER_ROLE if function.proname == "usage_log_partitions_ahead" else LOOKUP_ROLE)
        assert function.public_execute is False


async def test_usage_log_partitions_are_reached_only_through_the_parent(owner_engine: AsyncEngine) -> None:
    """RLS is the parent's: a partition read directly would skip it, so no role but the owner may read one."""
    async with owner_engine.connect() as connection:
        partitions = (
            await connection.execute(
                text(
                    """
                    SELECT c.relname, has_table_privilege(:app, c.oid, 'SELECT') AS app_reads,
                           has_table_privilege(:app, c.oid, 'INSERT') AS app_inserts,
                           has_table_privilege(:lookup, c.oid, 'SELECT') AS lookup_reads
                    FROM pg_inherits JOIN pg_class c ON c.oid = pg_inherits.inhrelid
                    WHERE pg_inherits.inhparent = 'public.provider_usage_logs'::regclass
                    """
                ),
                {"app": APP_ROLE, "lookup": LOOKUP_ROLE},
            )
        ).all()
    assert "provider_usage_logs_default" in {row.relname for row in partitions}
    this_month = datetime.datetime.now(datetime.UTC).strftime("provider_usage_logs_%Y%m")
    assert this_month in {row.relname for row in partitions}
    assert [row.relname for row in partitions if row.app_reads or row.app_inserts or row.lookup_reads] == []


# --- the isolation matrix: tenant B against tenant A's rows, for every tenant table ---------------


@pytest.mark.parametrize("table", sorted(ROW_FACTORIES))
async def test_tenant_b_cannot_see_change_or_delete_tenant_a_rows(
    table: str, session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows, tenant_b: TenantRows
) -> None:
    async with tenant_session(session_maker, tenant_a.id) as session:
        a_row = (
            tenant_a.id if table == "tenant_organizations" else await _insert_row(session, table, tenant_a.id, tenant_a)
        )
        await session.commit()
        assert await _count(session, table, a_row) == 1  # positive control: A sees its own row

    async with tenant_session(session_maker, tenant_b.id) as session:
        assert (await session.scalar(text("SELECT current_user"))) == APP_ROLE
        assert await _count(session, table, a_row) == 0
        for statement, privilege in (
            (f"UPDATE {table} SET {_key(table)} = {_key(table)} WHERE {_key(table)} = :id", "UPDATE"),
            (f"DELETE FROM {table} WHERE {_key(table)} = :id", "DELETE"),
        ):
            if await _app_may(session, table, privilege):
                result = await session.execute(text(statement), {"id": a_row})
                assert result.rowcount == 0, statement  # type: ignore[attr-defined]
            else:  # e.g. the append-only audit log: refused outright, which is stronger still
                with pytest.raises(DBAPIError, match="permission denied"):
                    await session.execute(text(statement), {"id": a_row})
                await session.rollback()
        await session.commit()

    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await _count(session, table, a_row) == 1  # still there, unchanged by B


@pytest.mark.parametrize("table", sorted(ROW_FACTORIES))
async def test_tenant_b_cannot_insert_rows_for_tenant_a(
    table: str, session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows, tenant_b: TenantRows
) -> None:
    async with tenant_session(session_maker, tenant_b.id) as session:
        with pytest.raises(DBAPIError, match="row-level security"):
            await _insert_row(session, table, tenant_a.id, tenant_a)


@pytest.mark.parametrize("table", sorted(set(ROW_FACTORIES) - {"tenant_organizations"} - APPEND_ONLY_TABLES))
async def test_tenant_b_cannot_move_its_rows_into_tenant_a(
    table: str, session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows, tenant_b: TenantRows
) -> None:
    async with tenant_session(session_maker, tenant_b.id) as session:
        b_row = await _insert_row(session, table, tenant_b.id, tenant_b)
        with pytest.raises(DBAPIError, match=r"row-level security|foreign key"):
            await session.execute(
                text(f"UPDATE {table} SET tenant_id = :a WHERE {_key(table)} = :id"), {"a": tenant_a.id, "id": b_row}
            )


@pytest.mark.parametrize("table", REFERENCING_TABLES)
async def test_tenant_b_rows_cannot_reference_tenant_a_rows(
    table: str, session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows, tenant_b: TenantRows
) -> None:
    # Foreign keys are checked without RLS, so a plain key on `user_id` would accept A's user here;
    # the composite (tenant_id, id) keys are what refuse it.
    async with tenant_session(session_maker, tenant_b.id) as session:
        with pytest.raises(IntegrityError, match="foreign key"):
            await _insert_row(session, table, tenant_b.id, tenant_a)


async def test_without_a_tenant_every_table_is_empty(
    session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows, tenant_b: TenantRows
) -> None:
    async with tenant_session(session_maker, tenant_a.id) as session:
        for table in ROW_FACTORIES:
            if table != "tenant_organizations":
                await _insert_row(session, table, tenant_a.id, tenant_a)
        await session.commit()
        assert all([await _count(session, table) >= 1 for table in ROW_FACTORIES])

    async with session_maker() as session:
        assert {table: await _count(session, table) for table in ROW_FACTORIES} == dict.fromkeys(ROW_FACTORIES, 0)
        session.add(AuditEvent(actor="test", action="test"))
        with pytest.raises(DBAPIError, match="row-level security"):  # and no tenant means no inserts either
            await session.flush()


# --- the session mechanics ----------------------------------------------------------------------


async def test_a_pooled_connection_does_not_carry_a_tenant_into_the_next_transaction(
    database: DatabaseUrls, tenant_a: TenantRows, tenant_b: TenantRows
) -> None:
    engine = create_engine(database.app_url, pool_size=1)
    engine.pool._max_overflow = 0  # type: ignore[attr-defined]  # one connection: reuse is certain
    maker = create_session_maker(engine)
    try:
        async with tenant_session(maker, tenant_a.id) as session:
            first_backend = await session.scalar(text("SELECT pg_backend_pid()"))
            assert await _count(session, "auth_users") == 2
            await session.commit()

        async with maker() as session:
            assert await session.scalar(text("SELECT pg_backend_pid()")) == first_backend
            assert await session.scalar(text("SELECT current_setting('app.tenant_id', true)")) == ""
            assert await _count(session, "auth_users") == 0
            assert await _count(session, "tenant_organizations") == 0

            await set_session_tenant(session, tenant_b.id)  # mid-transaction: applies at once
            emails = set((await session.execute(text("SELECT email FROM auth_users"))).scalars())
            assert emails == {tenant_b.admin.email, tenant_b.user.email}
    finally:
        await engine.dispose()


async def test_a_session_keeps_its_tenant_across_commits(
    session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows
) -> None:
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await _count(session, "auth_users") == 2
        await session.commit()  # a service committing mid-request
        assert await _count(session, "auth_users") == 2
        await session.rollback()
        assert await _count(session, "auth_users") == 2


async def test_tenant_id_is_filled_from_the_session_on_insert(
    session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows
) -> None:
    async with tenant_session(session_maker, tenant_a.id) as session:
        event = AuditEvent(actor="test", action="filled")
        session.add(event)
        await session.commit()
    assert event.tenant_id == tenant_a.id


async def test_tenant_lookup_by_slug_works_before_any_tenant_is_set(
    session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows
) -> None:
    async with session_maker() as session:
        found = await lookup_tenant_by_slug(session, tenant_a.slug)
        missing = await lookup_tenant_by_slug(session, "no-such-tenant")
        assert await _count(session, "tenant_organizations") == 0  # the lookup opened nothing else
    assert found is not None
    assert (found.id, found.status) == (tenant_a.id, "active")
    assert missing is None


async def test_unique_keys_are_per_tenant(
    session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows, tenant_b: TenantRows
) -> None:
    # The same email in two tenants is two users; a unique key without tenant_id would refuse B's
    # row and, by refusing it, reveal that A has such a user.
    async with tenant_session(session_maker, tenant_b.id) as session:
        session.add(User(email=tenant_a.admin.email, hashed_password=TEST_PASSWORD_HASH))
        await session.commit()
        assert await _count(session, "auth_users") == 3


async def test_group_membership_is_available_to_other_domains_within_the_tenant(
    session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows, tenant_b: TenantRows
) -> None:
    async with tenant_session(session_maker, tenant_a.id) as session:
        session.add(UserGroupMember(group_id=tenant_a.group.id, user_id=tenant_a.user.id))
        await session.commit()
        assert await group_ids_of_user(session, tenant_a.user.id) == [tenant_a.group.id]
        assert await group_ids_of_user(session, tenant_a.admin.id) == []
    async with tenant_session(session_maker, tenant_b.id) as session:
        assert await group_ids_of_user(session, tenant_a.user.id) == []  # A's memberships are not B's to read
