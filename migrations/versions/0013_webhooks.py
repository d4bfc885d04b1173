"""Tenant webhooks: the endpoints an organization's events are posted to, and the log of every attempt.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_webhook_endpoints",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("encrypted_secret", sa.Text(), nullable=False),
        sa.Column("events", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_tenant_webhook_endpoints_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_webhook_endpoints")),
        sa.UniqueConstraint("tenant_id", "id", name="uk_tenant_webhook_endpoints_tenant_id_id"),
    )
    op.create_index("idx_tenant_webhook_endpoints_tenant", "tenant_webhook_endpoints", ["tenant_id"], unique=False)
    op.create_table(
        "tenant_webhook_deliveries",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_kind", sa.String(length=100), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_excerpt", sa.String(length=500), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("outcome IN ('delivered', 'failed')", name=op.f("ck_tenant_webhook_deliveries_outcome")),
        sa.CheckConstraint("attempt >= 1", name=op.f("ck_tenant_webhook_deliveries_attempt")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "endpoint_id"],
            ["tenant_webhook_endpoints.tenant_id", "tenant_webhook_endpoints.id"],
            name="fk_tenant_webhook_deliveries_endpoint",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_tenant_webhook_deliveries_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_webhook_deliveries")),
    )
    op.create_index(
        "idx_tenant_webhook_deliveries_endpoint",
        "tenant_webhook_deliveries",
        ["tenant_id", "endpoint_id", sa.text("created_at DESC")],
        unique=False,
    )
    op.create_index(
        "uk_tenant_webhook_deliveries_delivered",
        "tenant_webhook_deliveries",
        ["tenant_id", "endpoint_id", "event_id"],
        unique=True,
        postgresql_where=sa.text("outcome = 'delivered'"),
    )


def downgrade() -> None:
    op.drop_index("uk_tenant_webhook_deliveries_delivered", table_name="tenant_webhook_deliveries")
    op.drop_index("idx_tenant_webhook_deliveries_endpoint", table_name="tenant_webhook_deliveries")
    op.drop_table("tenant_webhook_deliveries")
    op.drop_index("idx_tenant_webhook_endpoints_tenant", table_name="tenant_webhook_endpoints")
    op.drop_table("tenant_webhook_endpoints")
