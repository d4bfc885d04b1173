"""Budgets and policies for people and groups (and the default for new users); weekly budget periods.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_budgets",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("group_id", sa.Uuid(), nullable=True),
        sa.Column("quota", sa.BigInteger(), server_default="-1", nullable=False),
        sa.Column("used_quota", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("budget_period", sa.String(length=10), server_default="none", nullable=False),
        sa.Column("budget_reset_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("rpm_limit", sa.Integer(), server_default="0", nullable=False),
        sa.Column("tpm_limit", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "allowed_models",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('user', 'group', 'new_user')", name=op.f("ck_tenant_budgets_kind")),
        sa.CheckConstraint(
            "(kind = 'user') = (user_id IS NOT NULL) AND (kind = 'group') = (group_id IS NOT NULL)",
            name=op.f("ck_tenant_budgets_subject"),
        ),
        sa.CheckConstraint(
            "budget_period IN ('none', 'daily', 'weekly', 'monthly')", name=op.f("ck_tenant_budgets_budget_period")
        ),
        sa.CheckConstraint("quota >= -1 AND used_quota >= 0", name=op.f("ck_tenant_budgets_quota")),
        sa.CheckConstraint("rpm_limit >= 0 AND tpm_limit >= 0", name=op.f("ck_tenant_budgets_limits")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_tenant_budgets_user",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "group_id"],
            ["tenant_user_groups.tenant_id", "tenant_user_groups.id"],
            name="fk_tenant_budgets_group",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_tenant_budgets_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_budgets")),
        sa.UniqueConstraint("tenant_id", "user_id", name="uk_tenant_budgets_user"),
        sa.UniqueConstraint("tenant_id", "group_id", name="uk_tenant_budgets_group"),
    )
    op.create_index(
        "uk_tenant_budgets_new_user",
        "tenant_budgets",
        ["tenant_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'new_user'"),
    )
    op.drop_constraint(op.f("ck_provider_tokens_budget_period"), "provider_tokens", type_="check")
    op.create_check_constraint(
        op.f("ck_provider_tokens_budget_period"),
        "provider_tokens",
        "budget_period IN ('none', 'daily', 'weekly', 'monthly')",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_provider_tokens_budget_period"), "provider_tokens", type_="check")
    op.create_check_constraint(
        op.f("ck_provider_tokens_budget_period"), "provider_tokens", "budget_period IN ('none', 'daily', 'monthly')"
    )
    op.drop_index("uk_tenant_budgets_new_user", table_name="tenant_budgets")
    op.drop_table("tenant_budgets")
