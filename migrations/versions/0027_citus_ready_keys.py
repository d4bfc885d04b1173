"""Citus-ready keys: every tenant table's primary key and unique constraints include tenant_id.

The primary keys become (tenant_id, id); the (tenant_id, id) unique constraints that the composite
foreign keys pointed at are dropped, the primary keys serve them now; the two unique constraints of
the knowledge tables that lacked tenant_id gain it. provider_usage_logs keeps its key: its
partitioning gives it one. docs/operations.md, "Scaling out with Citus", has the rules.

Revision ID: 0027
Revises: 0026
Create Date: 2026-11-30 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every tenant table but provider_usage_logs.
TENANT_TABLES = (
    "auth_invitations",
    "auth_mfa_recovery_codes",
    "auth_oauth_connections",
    "auth_oauth_providers",
    "auth_password_resets",
    "auth_user_sessions",
    "auth_users",
    "chat_attachments",
    "chat_conversations",
    "chat_messages",
    "chat_summaries",
    "kb_bases",
    "kb_chunks",
    "kb_documents",
    "memory_associations",
    "memory_history",
    "memory_user_memories",
    "provider_channels",
    "provider_model_aliases",
    "provider_model_prices",
    "provider_model_routing",
    "provider_responses",
    "provider_tokens",
    "tenant_audit_events",
    "tenant_budgets",
    "tenant_job_events",
    "tenant_jobs",
    "tenant_user_group_members",
    "tenant_user_groups",
    "tenant_webhook_deliveries",
    "tenant_webhook_endpoints",
)
# The tables other tenant tables point at, through a uk_<table>_tenant_id_id unique constraint until now.
REFERENCED_TABLES = (
    "auth_oauth_providers",
    "auth_users",
    "chat_attachments",
    "chat_conversations",
    "chat_messages",
    "kb_bases",
    "kb_chunks",
    "kb_documents",
    "memory_user_memories",
    "provider_channels",
    "tenant_jobs",
    "tenant_user_groups",
    "tenant_webhook_endpoints",
)
# name: (table, columns before, columns after)
UNIQUE_CONSTRAINTS = {
    "uk_kb_chunks_document_position": (
        "kb_chunks",
        "document_id, level, position",
        "tenant_id, document_id, level, position",
    ),
    "uk_kb_documents_base_hash": ("kb_documents", "base_id, content_hash", "tenant_id, base_id, content_hash"),
}


def _foreign_keys_to(table: str) -> list[tuple[str, str, str]]:
    """(table, name, definition) of every foreign key pointing at `table`, read from the catalog."""
    rows = op.get_bind().execute(
        sa.text(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype = 'f' AND conparentid = 0 AND confrelid = CAST(:table AS regclass) ORDER BY conname"
        ),
        {"table": table},
    )
    return [(row[0], row[1], row[2]) for row in rows]


def _rekey(table: str, key_sql: str) -> None:
    """Run `key_sql` on `table` with the foreign keys pointing at it dropped, then add them back as they were.

    A foreign key depends on the unique index it was created against; added back, it binds to the
    index that now covers its columns.
    """
    foreign_keys = _foreign_keys_to(table)
    for referencing, name, _ in foreign_keys:
        op.execute(f"ALTER TABLE {referencing} DROP CONSTRAINT {name}")
    op.execute(key_sql)
    for referencing, name, definition in foreign_keys:
        op.execute(f"ALTER TABLE {referencing} ADD CONSTRAINT {name} {definition}")


def upgrade() -> None:
    for table in TENANT_TABLES:
        drop_unique = f"DROP CONSTRAINT uk_{table}_tenant_id_id, " if table in REFERENCED_TABLES else ""
        _rekey(
            table,
            f"ALTER TABLE {table} {drop_unique}DROP CONSTRAINT pk_{table}, "
            f"ADD CONSTRAINT pk_{table} PRIMARY KEY (tenant_id, id)",
        )
    for name, (table, _, columns) in UNIQUE_CONSTRAINTS.items():
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} UNIQUE ({columns})")


def downgrade() -> None:
    for name, (table, columns, _) in UNIQUE_CONSTRAINTS.items():
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} UNIQUE ({columns})")
    for table in TENANT_TABLES:
        add_unique = (
            f", ADD CONSTRAINT uk_{table}_tenant_id_id UNIQUE (tenant_id, id)" if table in REFERENCED_TABLES else ""
        )
        _rekey(
            table,
            f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}, ADD CONSTRAINT pk_{table} PRIMARY KEY (id){add_unique}",
        )
