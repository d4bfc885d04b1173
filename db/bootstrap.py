"""Creates the database and its three roles on a PostgreSQL server where Lyss holds a superuser."""

from __future__ import annotations

import re

import asyncpg
import msgspec
from sqlalchemy.engine import make_url

DEFAULT_DATABASE = "lyss_db"
OWNER_ROLE = "lyss_owner"  # owns the tables, runs migrations; subject to RLS like everyone (FORCE)
APP_ROLE = "lyss_app"  # what the running service logs in as: NOSUPERUSER, NOBYPASSRLS
LOOKUP_ROLE = "lyss_lookup"  # NOLOGIN owner of the SECURITY DEFINER lookups in policies/

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_ROLES_SQL = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER_ROLE}') THEN
        CREATE ROLE {OWNER_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{LOOKUP_ROLE}') THEN
        CREATE ROLE {LOOKUP_ROLE} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END
$$;
-- The owner hands the SECURITY DEFINER functions to the lookup role (ALTER FUNCTION ... OWNER TO).
GRANT {LOOKUP_ROLE} TO {OWNER_ROLE};
"""


class DatabaseUrls(msgspec.Struct, frozen=True):
    """Connection URLs (asyncpg driver) for the two roles that log in."""

    owner_url: str
    app_url: str


def role_url(server_url: str, role: str, database: str) -> str:
    """`server_url` with its user and database replaced, for the asyncpg driver."""
    url = make_url(server_url).set(drivername="postgresql+asyncpg", username=role, password=None, database=database)
    return url.render_as_string(hide_password=False)


def plain_url(server_url: str, database: str) -> str:
    """`server_url` pointed at `database`, in the form asyncpg itself accepts."""
    return make_url(server_url).set(drivername="postgresql", database=database).render_as_string(hide_password=False)


async def bootstrap_database(superuser_url: str, database: str = DEFAULT_DATABASE) -> DatabaseUrls:
    """Create (idempotently) the roles and `database`, owned by the owner role, usable by the app role.

    Meant for servers where the roles trust local connections (the embedded one, test servers); with
    passwords, create the roles as `deploy/postgres/init-roles.sh` does and give their URLs explicitly.
    """
    if not _IDENTIFIER.match(database):
        raise ValueError(f"database name {database!r} must be a lower-case SQL identifier")
    server = await asyncpg.connect(plain_url(superuser_url, "postgres"))
    try:
        await server.execute(_ROLES_SQL)
        if not await server.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await server.execute(f"CREATE DATABASE {database} OWNER {OWNER_ROLE}")
    finally:
        await server.close()

    connection = await asyncpg.connect(plain_url(superuser_url, database))
    try:
        await connection.execute(
            f"""
            REVOKE ALL ON DATABASE {database} FROM PUBLIC;
            GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {APP_ROLE};
            REVOKE CREATE ON SCHEMA public FROM PUBLIC;
            GRANT USAGE ON SCHEMA public TO {APP_ROLE};
            -- CREATE lets the lookup role own the SECURITY DEFINER functions; it cannot log in.
            GRANT USAGE, CREATE ON SCHEMA public TO {LOOKUP_ROLE};
            CREATE EXTENSION IF NOT EXISTS vector;
            """
        )
    finally:
        await connection.close()
    return DatabaseUrls(
        owner_url=role_url(superuser_url, OWNER_ROLE, database),
        app_url=role_url(superuser_url, APP_ROLE, database),
    )


async def drop_database(superuser_url: str, database: str) -> None:
    if not _IDENTIFIER.match(database):
        raise ValueError(f"database name {database!r} must be a lower-case SQL identifier")
    server = await asyncpg.connect(plain_url(superuser_url, "postgres"))
    try:
        await server.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    finally:
        await server.close()
