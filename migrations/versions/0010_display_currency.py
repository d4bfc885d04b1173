"""Each organization picks the currency its amounts are shown and entered in (credits stay the unit).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 07:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tenant_organizations",
        sa.Column("currency", sa.String(length=3), server_default="USD", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_tenant_organizations_currency"), "tenant_organizations", "currency ~ '^[A-Z]{3}$'"
    )


def downgrade() -> None:
    op.drop_column("tenant_organizations", "currency")
