"""Memory text search in the organization's language: a text-search configuration per memory.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import REGCONFIG, TSVECTOR

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A new memory takes its organization's language (the memory settings' `language`), whoever inserts it;
# English where none is set. Under RLS the function sees only the current tenant's organization.
LANGUAGE_FUNCTION = """
CREATE OR REPLACE FUNCTION public.memory_language() RETURNS regconfig
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT coalesce(
            (SELECT config.oid::regconfig
               FROM public.tenant_organizations AS organization
               JOIN pg_catalog.pg_ts_config AS config
                 ON config.cfgname = organization.settings #>> '{memory,language}'
                AND config.cfgnamespace = 'pg_catalog'::regnamespace
              WHERE organization.id = nullif(current_setting('app.tenant_id', true), '')::uuid),
            'pg_catalog.english'::regconfig)
    $$
"""


def upgrade() -> None:
    op.execute(LANGUAGE_FUNCTION)
    op.add_column(
        "memory_user_memories",
        sa.Column("language", REGCONFIG(), server_default=sa.text("public.memory_language()"), nullable=False),
    )
    op.drop_index("idx_memory_user_memories_search", table_name="memory_user_memories")
    op.drop_column("memory_user_memories", "search_vector")
    op.add_column(
        "memory_user_memories",
        sa.Column("search_vector", TSVECTOR(), sa.Computed("to_tsvector(language, memory_text)", persisted=True)),
    )
    op.create_index(
        "idx_memory_user_memories_search", "memory_user_memories", ["search_vector"], postgresql_using="gin"
    )


def downgrade() -> None:
    op.drop_index("idx_memory_user_memories_search", table_name="memory_user_memories")
    op.drop_column("memory_user_memories", "search_vector")
    op.add_column(
        "memory_user_memories",
        sa.Column("search_vector", TSVECTOR(), sa.Computed("to_tsvector('simple', memory_text)", persisted=True)),
    )
    op.create_index(
        "idx_memory_user_memories_search", "memory_user_memories", ["search_vector"], postgresql_using="gin"
    )
    op.drop_column("memory_user_memories", "language")
    op.execute("DROP FUNCTION public.memory_language()")
