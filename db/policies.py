"""Applies `policies/*.sql` (row-level security, grants, SECURITY DEFINER lookups) after migrations.

The files describe the current state and are idempotent, like repeatable migrations: every upgrade
that reaches head re-applies all of them in its own transaction, so a policy change is a file edit
and a new table is covered as soon as its prefix file says so (the catalog test insists on it).
"""

from __future__ import annotations

from pathlib import Path

import sqlparse
from sqlalchemy.engine import Connection

POLICIES_DIRECTORY = Path(__file__).resolve().parent.parent / "policies"
# Order matters: every file relies on current_tenant() from common.sql.
POLICY_FILES = ("common.sql", "tenant.sql", "auth.sql", "provider.sql", "chat.sql", "memory.sql", "kb.sql")


def policy_statements() -> list[str]:
    statements: list[str] = []
    for name in POLICY_FILES:
        script = (POLICIES_DIRECTORY / name).read_text()
        statements.extend(
            statement for statement in sqlparse.split(script, strip_semicolon=True) if _has_code(statement)
        )
    return statements


def apply_policies(connection: Connection) -> None:
    for statement in policy_statements():
        connection.exec_driver_sql(statement)


def _has_code(statement: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines())
