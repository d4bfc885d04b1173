"""Chat attachments: files users attach to conversations, kept in the object store.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 16:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_attachments",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("object_name", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_attachments")),
        sa.UniqueConstraint("tenant_id", "id", name="uk_chat_attachments_tenant_id_id"),
        sa.CheckConstraint("size_bytes >= 0", name=op.f("ck_chat_attachments_size")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            ondelete="CASCADE",
            name=op.f("fk_chat_attachments_tenant_id_tenant_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "conversation_id"],
            ["chat_conversations.tenant_id", "chat_conversations.id"],
            ondelete="CASCADE",
            name="fk_chat_attachments_conversation",
        ),
    )
    op.create_index(
        "idx_chat_attachments_conversation", "chat_attachments", ["tenant_id", "conversation_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("chat_attachments")
