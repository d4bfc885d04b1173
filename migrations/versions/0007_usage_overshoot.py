"""Usage rows record overshoot: credits a provider's reported usage exceeded the call's reservation by.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 01:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "provider_usage_logs",
        sa.Column("overshoot", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.create_check_constraint(op.f("ck_provider_usage_logs_overshoot"), "provider_usage_logs", "overshoot >= 0")


def downgrade() -> None:
    op.drop_column("provider_usage_logs", "overshoot")
