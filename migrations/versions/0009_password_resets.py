"""One-time password reset links an admin issues for a user.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auth_password_resets",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("issued_by", sa.Uuid(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_auth_password_resets_user",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "issued_by"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_auth_password_resets_issued_by",
            ondelete="SET NULL (issued_by)",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_auth_password_resets_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_password_resets")),
        sa.UniqueConstraint("tenant_id", "token_hash", name="uk_auth_password_resets_token"),
    )
    op.create_index("idx_auth_password_resets_user", "auth_password_resets", ["tenant_id", "user_id"], unique=False)


def downgrade() -> None:
    op.drop_index("idx_auth_password_resets_user", table_name="auth_password_resets")
    op.drop_table("auth_password_resets")
