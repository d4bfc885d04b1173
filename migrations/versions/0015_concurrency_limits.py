"""Concurrency limits: calls in flight per channel, requests and streams in flight per key and per user.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("provider_channels", sa.Column("max_in_flight", sa.Integer(), server_default="0", nullable=False))
    op.create_check_constraint(op.f("ck_provider_channels_max_in_flight"), "provider_channels", "max_in_flight >= 0")
    for table in ("provider_tokens", "tenant_budgets"):
        op.add_column(table, sa.Column("max_concurrent", sa.Integer(), server_default="0", nullable=False))
        op.add_column(table, sa.Column("max_streams", sa.Integer(), server_default="0", nullable=False))
        op.create_check_constraint(op.f(f"ck_{table}_concurrency"), table, "max_concurrent >= 0 AND max_streams >= 0")
    # The token lookup returns the key's limits too: a new row type, so the policies make it again.
    op.execute("DROP FUNCTION IF EXISTS public.gateway_token_lookup(text)")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS public.gateway_token_lookup(text)")
    for table in ("provider_tokens", "tenant_budgets"):
        op.drop_column(table, "max_streams")
        op.drop_column(table, "max_concurrent")
    op.drop_column("provider_channels", "max_in_flight")
