"""Prices keep what a prompt token read from the provider's cache costs (stored and shown; not yet billed).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("provider_model_prices", sa.Column("cached_prompt_price", sa.BigInteger(), nullable=True))
    op.create_check_constraint(
        op.f("ck_provider_model_prices_cached_prompt_price"),
        "provider_model_prices",
        "cached_prompt_price IS NULL OR cached_prompt_price >= 0",
    )


def downgrade() -> None:
    op.drop_column("provider_model_prices", "cached_prompt_price")
