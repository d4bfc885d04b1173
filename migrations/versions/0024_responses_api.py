"""Which kinds of provider serve the OpenAI Responses API themselves.

`provider_types.serves_responses`: a channel of such a type is sent a `/v1/responses` call as the client's
own Responses request (`<base_url>/responses`); every other type gets it translated to chat. Only OpenAI
serves it; DeepSeek, Zhipu and the generic OpenAI-compatible type stay chat-only.

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-30 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "provider_types",
        sa.Column("serves_responses", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.execute("UPDATE provider_types SET serves_responses = true WHERE name = 'openai'")


def downgrade() -> None:
    op.drop_column("provider_types", "serves_responses")
