"""Channels say which call tests them: a chat completion, or an embeddings call for embeddings-only channels.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 02:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every existing channel keeps the chat probe it has always had.
    op.add_column(
        "provider_channels",
        sa.Column("test_kind", sa.String(length=20), server_default="chat", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_provider_channels_test_kind"), "provider_channels", "test_kind IN ('chat', 'embeddings')"
    )


def downgrade() -> None:
    op.drop_column("provider_channels", "test_kind")
