"""Plans: the platform-wide catalogue of what a tenant may have (users, channels, keys, features), enforced by the service.

The organization's `max_users` column goes: the plan named by `subscription_plan` holds the limit.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ALL_FEATURES = {"memory": True, "knowledge_bases": True}


def upgrade() -> None:
    plans = op.create_table(
        "platform_plans",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("max_users", sa.Integer(), nullable=False),
        sa.Column("default_monthly_budget", sa.BigInteger(), server_default="-1", nullable=False),
        sa.Column(
            "allowed_provider_types",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("max_channels", sa.Integer(), nullable=False),
        sa.Column("max_api_keys_per_user", sa.Integer(), nullable=False),
        sa.Column(
            "features", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.CheckConstraint("max_users = -1 OR max_users > 0", name=op.f("ck_platform_plans_max_users")),
        sa.CheckConstraint("max_channels >= -1", name=op.f("ck_platform_plans_max_channels")),
        sa.CheckConstraint("max_api_keys_per_user >= -1", name=op.f("ck_platform_plans_max_api_keys_per_user")),
        sa.CheckConstraint("default_monthly_budget >= -1", name=op.f("ck_platform_plans_default_monthly_budget")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_platform_plans")),
    )
    op.bulk_insert(
        plans,
        [
            {
                "name": "basic",
                "display_name": "Basic",
                "max_users": 10,
                "default_monthly_budget": -1,
                "allowed_provider_types": [],
                "max_channels": 5,
                "max_api_keys_per_user": 10,
                "features": ALL_FEATURES,
            },
            {
                "name": "team",
                "display_name": "Team",
                "max_users": 50,
                "default_monthly_budget": -1,
                "allowed_provider_types": [],
                "max_channels": 25,
                "max_api_keys_per_user": 25,
                "features": ALL_FEATURES,
            },
            {
                "name": "enterprise",
                "display_name": "Enterprise",
                "max_users": -1,
                "default_monthly_budget": -1,
                "allowed_provider_types": [],
                "max_channels": -1,
                "max_api_keys_per_user": -1,
                "features": ALL_FEATURES,
            },
        ],
    )
    # Organizations on a plan this catalogue does not know keep working on the default one.
    op.execute(
        "UPDATE tenant_organizations SET subscription_plan = 'basic' "
        "WHERE subscription_plan NOT IN (SELECT name FROM platform_plans)"
    )
    op.create_foreign_key(
        "fk_tenant_organizations_subscription_plan",
        "tenant_organizations",
        "platform_plans",
        ["subscription_plan"],
        ["name"],
        onupdate="CASCADE",
    )
    op.drop_column("tenant_organizations", "max_users")


def downgrade() -> None:
    op.add_column("tenant_organizations", sa.Column("max_users", sa.Integer(), server_default="10", nullable=False))
    op.execute(
        "UPDATE tenant_organizations o SET max_users = p.max_users FROM platform_plans p "
        "WHERE p.name = o.subscription_plan AND p.max_users > 0"
    )
    op.create_check_constraint(op.f("ck_tenant_organizations_max_users"), "tenant_organizations", "max_users > 0")
    op.drop_constraint("fk_tenant_organizations_subscription_plan", "tenant_organizations", type_="foreignkey")
    op.drop_table("platform_plans")
