"""The policies as a database at an older revision had them: today's statements, less those of tables it lacks yet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from alembic import command
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from db.bootstrap import DatabaseUrls, bootstrap_database, drop_database
from db.migrations import alembic_config
from db.policies import policy_statements


def apply_policies_of_existing_tables(connection: Connection) -> None:
    for statement in policy_statements():
        try:
            with connection.begin_nested():
                connection.exec_driver_sql(statement)
        except ProgrammingError as error:
            if "does not exist" not in str(error):
                raise


@asynccontextmanager
async def database_at_revision(superuser_url: str, name: str, revision: str) -> AsyncIterator[DatabaseUrls]:
    """A database of its own at migration `revision`, as a deployed one at that revision is: with its policies
    (the usage log's RLS forced on the owner too). Dropped when the block ends."""
    await drop_database(superuser_url, name)
    urls = await bootstrap_database(superuser_url, name)
    try:
        engine = create_async_engine(urls.owner_url, poolclass=NullPool)
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))
            await connection.run_sync(apply_policies_of_existing_tables)
        await engine.dispose()
        yield urls
    finally:
        await drop_database(superuser_url, name)
