"""Per-unit prices for the endpoints that are not billed by the token: an image generated, a second of audio
transcribed, a million characters spoken, a request (moderation).

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-30 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNIT_PRICES = ("image_price", "audio_second_price", "speech_price", "request_price")


def upgrade() -> None:
    for column in UNIT_PRICES:
        op.add_column("provider_model_prices", sa.Column(column, sa.BigInteger(), nullable=True))
        op.create_check_constraint(
            op.f(f"ck_provider_model_prices_{column}"), "provider_model_prices", f"{column} IS NULL OR {column} >= 0"
        )


def downgrade() -> None:
    for column in reversed(UNIT_PRICES):
        op.drop_column("provider_model_prices", column)
