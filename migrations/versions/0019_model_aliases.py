"""Model fallbacks and routing strategies: tenant model aliases, and a routing strategy per model.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-30 11:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tenant_table(name: str, *columns: sa.Column, checks: Sequence[sa.CheckConstraint] = (), unique: str) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        *columns,
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        *checks,
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f(f"fk_{name}_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        sa.UniqueConstraint("tenant_id", unique, name=f"uk_{name}_{unique}"),
    )


def upgrade() -> None:
    _tenant_table(
        "provider_model_aliases",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("models", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        unique="name",
    )
    _tenant_table(
        "provider_model_routing",
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("strategy", sa.String(length=20), nullable=False),
        checks=[
            sa.CheckConstraint(
                "strategy IN ('priority', 'latency', 'least_in_flight')",
                name=op.f("ck_provider_model_routing_strategy"),
            )
        ],
        unique="model",
    )


def downgrade() -> None:
    op.drop_table("provider_model_routing")
    op.drop_table("provider_model_aliases")
