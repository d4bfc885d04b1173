"""Background jobs (tenant_jobs, tenant_job_events) and the budget reset time of API keys.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 12:56:59.483898
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "provider_tokens",
        sa.Column("budget_reset_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_table(
        "tenant_jobs",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="queued", nullable=False),
        sa.Column("progress", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="3", nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), server_default="600", nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column(
            "payload", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("queue_key", sa.String(length=100), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'dead')",
            name=op.f("ck_tenant_jobs_status"),
        ),
        sa.CheckConstraint("attempts >= 0 AND max_attempts >= 1", name=op.f("ck_tenant_jobs_attempts")),
        sa.CheckConstraint("progress BETWEEN 0 AND 100", name=op.f("ck_tenant_jobs_progress")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "created_by"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_tenant_jobs_created_by",
            ondelete="SET NULL (created_by)",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_tenant_jobs_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_jobs")),
        sa.UniqueConstraint("tenant_id", "id", name="uk_tenant_jobs_tenant_id_id"),
        sa.UniqueConstraint("tenant_id", "kind", "idempotency_key", name="uk_tenant_jobs_idempotency"),
    )
    op.create_index("idx_tenant_jobs_status", "tenant_jobs", ["status", "updated_at"], unique=False)
    op.create_index(
        "idx_tenant_jobs_tenant_created",
        "tenant_jobs",
        ["tenant_id", sa.literal_column("created_at DESC")],
        unique=False,
    )
    op.create_table(
        "tenant_job_events",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("event", sa.String(length=30), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column(
            "data", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "job_id"],
            ["tenant_jobs.tenant_id", "tenant_jobs.id"],
            name="fk_tenant_job_events_job",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_tenant_job_events_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_job_events")),
    )
    op.create_index(
        "idx_tenant_job_events_job", "tenant_job_events", ["tenant_id", "job_id", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("idx_tenant_job_events_job", table_name="tenant_job_events")
    op.drop_table("tenant_job_events")
    op.drop_index("idx_tenant_jobs_tenant_created", table_name="tenant_jobs")
    op.drop_index("idx_tenant_jobs_status", table_name="tenant_jobs")
    op.drop_table("tenant_jobs")
    op.drop_column("provider_tokens", "budget_reset_at")
