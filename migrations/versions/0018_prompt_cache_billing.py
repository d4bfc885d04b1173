"""Prompt caching is billed: a price for a prompt token written to the provider's cache, and the usage log
keeps how many prompt tokens were read from the cache and written to it.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-30 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("provider_model_prices", sa.Column("cache_write_price", sa.BigInteger(), nullable=True))
    op.create_check_constraint(
        op.f("ck_provider_model_prices_cache_write_price"),
        "provider_model_prices",
        "cache_write_price IS NULL OR cache_write_price >= 0",
    )
    for column in ("cached_tokens", "cache_write_tokens"):
        op.add_column(
            "provider_usage_logs", sa.Column(column, sa.Integer(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    op.drop_column("provider_usage_logs", "cache_write_tokens")
    op.drop_column("provider_usage_logs", "cached_tokens")
    op.drop_column("provider_model_prices", "cache_write_price")
