"""Memory controls: expiry, agent and run scopes, and which memory superseded a contradicted one.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("memory_user_memories", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("memory_user_memories", sa.Column("agent_id", sa.String(100), nullable=True))
    op.add_column("memory_user_memories", sa.Column("run_id", sa.String(100), nullable=True))
    op.add_column("memory_user_memories", sa.Column("superseded_by", sa.Uuid(), nullable=True))
    # Within the tenant; erasing the newer memory leaves the older one invalidated, without its link.
    op.create_foreign_key(
        "fk_memory_user_memories_superseded_by",
        "memory_user_memories",
        "memory_user_memories",
        ["tenant_id", "superseded_by"],
        ["tenant_id", "id"],
        ondelete="SET NULL (superseded_by)",
    )
    op.create_check_constraint(
        op.f("ck_memory_user_memories_not_self_superseded"), "memory_user_memories", "superseded_by <> id"
    )
    # The prune job's scan: only the few memories that expire at all are in it.
    op.create_index(
        "idx_memory_user_memories_expires",
        "memory_user_memories",
        ["tenant_id", "expires_at"],
        postgresql_where=sa.text("expires_at IS NOT NULL"),
    )
    op.add_column("memory_history", sa.Column("superseded_by", sa.Uuid(), nullable=True))


def downgrade() -> None:
    op.drop_column("memory_history", "superseded_by")
    op.drop_index("idx_memory_user_memories_expires", table_name="memory_user_memories")
    op.drop_constraint(op.f("ck_memory_user_memories_not_self_superseded"), "memory_user_memories", type_="check")
    op.drop_constraint("fk_memory_user_memories_superseded_by", "memory_user_memories", type_="foreignkey")
    for column in ("superseded_by", "run_id", "agent_id", "expires_at"):
        op.drop_column("memory_user_memories", column)
