"""Conversations attach knowledge bases: chat_conversations.knowledge_base_ids.

Revision ID: 0026
Revises: 0025
Create Date: 2026-11-30 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No foreign key: a base deleted later is skipped by the turns, not an error (nor a cascade on conversations).
    op.add_column(
        "chat_conversations",
        sa.Column(
            "knowledge_base_ids", postgresql.ARRAY(sa.Uuid()), server_default=sa.text("'{}'::uuid[]"), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_column("chat_conversations", "knowledge_base_ids")
